"""Train AWR offline from a fixed dataset; the env only evaluates.

    python scripts/train_offline.py env.name=Pendulum-v1 dataset.source=buffer dataset.path=outputs/Pendulum-v1/<run>
    python scripts/train_offline.py env.name=Pendulum-v1 dataset.source=minari dataset.path=<minari root> \\
        dataset.name=pendulum/mixed-v0
    python scripts/train_offline.py env.name=Hopper-v5 dataset.source=hdf5 dataset.path=hopper-medium-v2.hdf5
    python scripts/train_offline.py ... offline.algo=bc          # behaviour cloning on the same data
    python scripts/train_offline.py resume=outputs/offline/<env>/<run>   # continue a killed run

Overrides are the ``key=value`` keys of ``torchrl_awr.config.AWRConfig`` (as for
train_mujoco.py), plus ``dataset.*`` and ``offline.*``; ``offline.steps`` counts
policy gradient steps, ``checkpoint.interval`` rounds of ``optim.actor_steps``.
Bad input or a bad dataset exits with one line on stderr and status 2 (``torchrl_awr.cli``).
"""

from __future__ import annotations

import sys
from functools import partial

from torchrl_awr.cli import run_command
from torchrl_awr.experiment import resolve_run, run


def main(argv: list[str]) -> int:
    return run_command("train_offline.py", argv, partial(resolve_run, offline=True), partial(run, offline=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
