"""The training scripts run as a user runs them: to the end, or killed with SIGKILL once they have checkpointed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ONLINE = ROOT / "scripts" / "train_mujoco.py"
OFFLINE = ROOT / "scripts" / "train_offline.py"


def run_script(script: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


def sigkill_after_checkpoints(
    script: Path,
    *args: str,
    out: Path,
    checkpoints: int = 2,
    timeout: float = 240,
    watch: str = "checkpoints",
    **popen_kwargs: Any,
) -> None:
    """Start ``script`` writing to ``out`` (or resuming the run there, given ``resume=``); SIGKILL it as soon as
    ``out/<watch>`` holds ``checkpoints``."""
    resuming = any(arg.startswith("resume=") for arg in args)
    proc = subprocess.Popen(
        [sys.executable, str(script), *args, *([] if resuming else [f"output_dir={out}"])],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **popen_kwargs,
    )
    deadline = time.time() + timeout
    while time.time() < deadline and len(list((out / watch).glob("checkpoint-*"))) < checkpoints:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
