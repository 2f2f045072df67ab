"""The training scripts' command line: ``key=value`` overrides in; an output dir, a summary line, or one error line out.

Exit statuses: 0 done, 2 bad input (overrides, env id, dataset, checkpoint:
one line on stderr, no traceback), 1 training diverged, 130 / 143 stopped by
SIGINT / SIGTERM after a checkpoint (the line says how to resume).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from omegaconf import DictConfig, OmegaConf

from torchrl_awr.config import help_text
from torchrl_awr.experiment import PRETRAIN_DIR, Finished
from torchrl_awr.integrity import has_checkpoint
from torchrl_awr.trainer import Interrupted


def resume_command(output_dir: Path) -> str:
    """How to continue the run in ``output_dir``: ``make train ARGS="resume=..."`` when started from make."""
    if "MAKELEVEL" in os.environ:
        return f'make train ARGS="resume={output_dir}"'
    return f"resume={output_dir}"


def run_command(
    prog: str,
    argv: list[str],
    resolve: Callable[[list[str]], tuple[DictConfig, Path]],
    run: Callable[..., dict],
) -> int:
    """Resolve ``argv`` into a config and an output dir with ``resolve``, train with ``run``; returns the exit status.

    The overrides, less ``resume=`` and ``output_dir=``, tag the W&B run.
    """
    if {"-h", "--help"} & set(argv):
        print(help_text(prog))
        return 0
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # its INFO lines (spec checks) drown the progress bar
    try:
        cfg, output_dir = resolve(argv)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    stopped_by = signal.SIGINT

    def stop_outside_training(signum: int, frame: FrameType | None) -> None:
        """SIGTERM while building or finishing (training has its own handler): the same one line as Ctrl-C."""
        nonlocal stopped_by
        stopped_by = signal.Signals(signum)
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()  # only there can handlers be set
    previous = signal.signal(signal.SIGTERM, stop_outside_training) if main_thread else None
    try:
        print(f"output dir: {output_dir}", flush=True)
        shown = cfg.copy()
        shown.output_dir = str(output_dir)  # the resolved one, not the '' that stands for "a new dir under outputs/"
        print(OmegaConf.to_yaml(shown), flush=True)
        summary = run(cfg, output_dir, tags=[arg for arg in argv if not arg.startswith(("resume=", "output_dir="))])
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except Finished as done:
        print(f"{prog}: {done}", file=sys.stderr)
        return 0
    except Interrupted as stop:
        print(f"\n{prog}: interrupted ({stop}), checkpoint saved; continue with: {resume_command(output_dir)}",
              file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:  # outside training: before it began, or after its last checkpoint
        saved = has_checkpoint(output_dir / "checkpoints") or has_checkpoint(output_dir / PRETRAIN_DIR / "checkpoints")
        then = f"continue with: {resume_command(output_dir)}" if saved else "nothing saved yet; start it again"
        print(f"\n{prog}: interrupted ({stopped_by.name}); {then}", file=sys.stderr)
        return 128 + stopped_by
    except FloatingPointError as err:
        print(
            f"{prog}: error: training diverged ({str(err).rstrip('.')}); checkpoints from before it are in "
            f"{output_dir / 'checkpoints'}: resume=<dir> with smaller learning rates (optim.actor_lr=...).",
            file=sys.stderr,
        )
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    unit = "gradient_steps" if "gradient_steps" in summary else "frames"
    print(
        f"final eval return {summary['final_eval_return_mean']:.1f} ± {summary['final_eval_return_std']:.1f} "
        f"after {summary[unit]} {unit.replace('_', ' ')} in {summary['wall_time_s'] / 60:.1f} min; "
        f"output dir: {output_dir}"
    )
    return 0
