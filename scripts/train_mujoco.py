"""Train AWR online on a gymnasium (MuJoCo) task.

    python scripts/train_mujoco.py                                  # HalfCheetah-v5, 1M frames, W&B offline
    python scripts/train_mujoco.py env.name=Hopper-v5 loss.beta=0.5 seed=1
    python scripts/train_mujoco.py resume=outputs/HalfCheetah-v5/<run>   # continue a killed run

Every key of ``torchrl_awr.config.AWRConfig`` can be overridden as ``key=value``;
per-task presets reproduce the original AWR settings. Bad input exits with one
line on stderr and status 2 (``torchrl_awr.cli``).
"""

from __future__ import annotations

import sys

from torchrl_awr.cli import run_command
from torchrl_awr.experiment import resolve_run, run


def main(argv: list[str]) -> int:
    return run_command("train_mujoco.py", argv, resolve_run, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
