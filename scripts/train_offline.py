"""Train AWR offline from a fixed dataset; the env only evaluates.

    python scripts/train_offline.py env.name=Pendulum-v1 dataset.source=buffer dataset.path=outputs/Pendulum-v1/<run>
    python scripts/train_offline.py env.name=Pendulum-v1 dataset.source=minari dataset.path=<minari root> \\
        dataset.name=pendulum/mixed-v0
    python scripts/train_offline.py env.name=Hopper-v5 dataset.source=hdf5 dataset.path=hopper-medium-v2.hdf5
    python scripts/train_offline.py ... offline.algo=bc          # behaviour cloning on the same data

Overrides are the ``key=value`` keys of ``torchrl_awr.config.AWRConfig`` (as for
train_mujoco.py), plus ``dataset.*`` and ``offline.*``; ``offline.steps`` counts
policy gradient steps. Bad input or a bad dataset exits with one line on stderr and status 2.
"""

from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf

from torchrl_awr.offline_trainer import resolve_offline_run, run_offline


def main(argv: list[str]) -> int:
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    try:
        cfg, output_dir = resolve_offline_run(argv)
    except ValueError as err:
        print(f"train_offline.py: error: {err}", file=sys.stderr)
        return 2
    print(f"output dir: {output_dir}", flush=True)
    print(OmegaConf.to_yaml(cfg), flush=True)
    try:
        summary = run_offline(cfg, output_dir, tags=[arg for arg in argv if not arg.startswith("output_dir=")])
    except ValueError as err:
        print(f"train_offline.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ntrain_offline.py: interrupted", file=sys.stderr)
        return 130
    except FloatingPointError as err:
        print(
            f"train_offline.py: error: training diverged ({str(err).rstrip('.')}); lower optim.*_lr.", file=sys.stderr
        )
        return 1
    print(
        f"final eval return {summary['final_eval_return_mean']:.1f} ± {summary['final_eval_return_std']:.1f} "
        f"after {summary['gradient_steps']} gradient steps on {summary['transitions']} transitions "
        f"in {summary['wall_time_s'] / 60:.1f} min; output dir: {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
