"""Train AWR online on a gymnasium (MuJoCo) task.

    python scripts/train_mujoco.py                                  # HalfCheetah-v5, 1M frames, W&B offline
    python scripts/train_mujoco.py env.name=Hopper-v5 loss.beta=0.5 seed=1
    python scripts/train_mujoco.py resume=outputs/HalfCheetah-v5/<run>   # continue a killed run

Every key of ``torchrl_awr.config.AWRConfig`` can be overridden as ``key=value``;
per-task presets reproduce the original AWR settings. Bad input exits with one
line on stderr and status 2.
"""

from __future__ import annotations

import logging
import sys

from omegaconf import OmegaConf

from torchrl_awr.experiment import resolve_run, run


def main(argv: list[str]) -> int:
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # its INFO lines (spec checks) drown the progress bar
    try:
        cfg, output_dir = resolve_run(argv)
    except ValueError as err:
        print(f"train_mujoco.py: error: {err}", file=sys.stderr)
        return 2
    print(f"output dir: {output_dir}", flush=True)
    print(OmegaConf.to_yaml(cfg), flush=True)
    try:
        summary = run(cfg, output_dir, tags=[arg for arg in argv if not arg.startswith(("resume=", "output_dir="))])
    except ValueError as err:
        print(f"train_mujoco.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ntrain_mujoco.py: interrupted; continue with: resume={output_dir}", file=sys.stderr)
        return 130
    except FloatingPointError as err:
        print(
            f"train_mujoco.py: error: training diverged ({str(err).rstrip('.')}); checkpoints from before it are in "
            f"{output_dir / 'checkpoints'}: resume=<dir> with smaller learning rates (optim.actor_lr=...).",
            file=sys.stderr,
        )
        return 1
    print(
        f"final eval return {summary['final_eval_return_mean']:.1f} ± {summary['final_eval_return_std']:.1f} "
        f"after {summary['frames']} frames in {summary['wall_time_s'] / 60:.1f} min; output dir: {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
