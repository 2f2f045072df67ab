"""What a run logs and prints: logger histories that hold each frame once across SIGKILL and resume (csv, W&B
offline), one-line errors for a logger that cannot start, the printed config, no MuJoCo deprecation noise; and the
kill-and-resume soak (``scripts/soak.py``, slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import mujoco
import pytest
import script_runs

from torchrl_awr.config import load_config
from torchrl_awr.envs import mujoco_deprecations_silenced
from torchrl_awr.loggers import (
    TENSORBOARD_HELP,
    WandbLogger,
    logged_scalars,
    make_logger,
    wandb_history,
    wandb_segments,
)

sys.path.insert(0, str(script_runs.ROOT / "scripts"))
import soak  # noqa: E402

ROOT = script_runs.ROOT
BATCH = soak.BATCH
CHECKPOINT_EVERY = 3  # iterations: the kill comes 2 evaluations after a checkpoint, before the next one
TOTAL = 10 * BATCH
RUN = [
    *(arg for arg in soak.RUN if not arg.startswith("checkpoint.interval=")),
    f"checkpoint.interval={CHECKPOINT_EVERY}",
    f"collector.total_frames={TOTAL}",
]


def past_checkpoint(run: Path, evaluations: int) -> bool:
    """``run`` has a whole checkpoint and ``eval.csv`` holds ``evaluations`` rows after it."""
    saved = soak.checkpoint_frames(run)
    return saved > 0 and soak.eval_frames(run)[-1:] >= [saved + evaluations * BATCH]


def kill_past_checkpoint(tmp_path: Path, backend: str) -> Path:
    """A run of ``backend`` SIGKILLed two evaluations past its first checkpoint (its logger holds rows the resumed run
    redoes); returns its output dir."""
    run = tmp_path / "run"
    proc = soak.start([*RUN, f"logger.backend={backend}", f"output_dir={run}"], tmp_path / "killed.log")
    assert soak.kill_when(proc, lambda: past_checkpoint(run, 2), timeout=300), "the run ended before the kill"
    return run


def resume(run: Path) -> None:
    proc = script_runs.run_script(script_runs.ONLINE, f"resume={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]


def assert_each_frame_once(history: dict[str, list[tuple[int, float]]]) -> None:
    assert [step for step, _ in history["frames"]] == list(range(BATCH, TOTAL + 1, BATCH))
    assert all(step == value for step, value in history["frames"])
    for key, rows in history.items():
        steps = [step for step, _ in rows]
        assert steps == sorted(set(steps)), f"{key}: steps repeat or go back: {steps}"


def test_csv_history_after_kill_and_resume_holds_each_frame_once(tmp_path: Path) -> None:
    run = kill_past_checkpoint(tmp_path, "csv")
    killed = [step for step, _ in logged_scalars(run)["frames"]]
    assert killed[-1] > soak.checkpoint_frames(run), "the killed run must have logged past its checkpoint"
    resume(run)
    assert_each_frame_once(logged_scalars(run))


def test_wandb_offline_history_after_kill_and_resume_holds_each_frame_once(tmp_path: Path) -> None:
    run = kill_past_checkpoint(tmp_path, "wandb")
    resume(run)
    segments = wandb_segments(run, (run / "wandb_id").read_text().strip())
    assert len(segments) == 2, segments  # the killed run and the resumed one, under the same id
    history = logged_scalars(run)
    assert_each_frame_once(history)
    assert {"eval/return_mean", "train/return", "actor_phase/loss"} <= set(history)
    rows = [row for segment in segments for row in wandb_history(segment)]
    assert [row["_step"] for row in rows] == list(range(BATCH, TOTAL + 1, BATCH))  # one row per iteration
    assert json.loads((run / "summary.json").read_text())["frames"] == TOTAL


@pytest.mark.parametrize(
    ("on_disk", "resumed_rows"),
    [(10, [20, 30, 40]), (30, [40])],
    ids=["a-kill-lost-rows-before-the-checkpoint", "the-killed-run-wrote-past-the-checkpoint"],
)
def test_resumed_wandb_logger_logs_each_step_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: int, resumed_rows: list[int]
) -> None:
    """A segment checkpointed after step 20 and killed after 30 (of which W&B wrote up to ``on_disk``): the resumed
    segment writes the checkpoint's rows W&B lost, then only steps past what earlier segments hold."""
    monkeypatch.delenv("WANDB_MODE", raising=False)  # torchrl's offline WandbLogger sets it for the whole process
    monkeypatch.setenv("WANDB_SILENT", "true")
    history = tmp_path / "wandb_history.jsonl"
    kwargs = {"offline": True, "save_dir": str(tmp_path), "id": "seg", "mode": "offline", "history": history}
    first = WandbLogger("run", **kwargs)
    first.log_scalar("x", 1.0, step=10)
    first.log_scalar("x", 2.0, step=20)
    checkpoint = first.state_dict()
    first.log_scalar("x", 3.0, step=30)
    first.experiment.finish()
    resumed = WandbLogger("run", after_step=on_disk, **kwargs)
    resumed.load_state_dict(checkpoint)
    resumed.log_scalar("x", 3.5, step=30)  # the resumed run redoes step 30
    resumed.log_scalar("x", 4.0, step=40)
    resumed.experiment.finish()
    segments = wandb_segments(tmp_path, "seg")
    assert [row["_step"] for row in wandb_history(segments[0])] == [10, 20, 30]
    assert [row["_step"] for row in wandb_history(segments[1])] == resumed_rows
    assert [(row["step"], row["value"]) for row in map(json.loads, history.read_text().splitlines())] == [
        (10, 1.0), (20, 2.0), (30, 3.5), (40, 4.0)
    ]


def test_online_without_api_key_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    proc = script_runs.run_script(script_runs.ONLINE, *RUN, "logger.mode=online", f"output_dir={tmp_path / 'run'}",
                                  timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "logger.mode=online" in lines[0] and "`wandb login`" in lines[0] and "logger.mode=offline" in lines[0]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as refused:
        make_logger(load_config(["logger.backend=tensorboard"]), tmp_path)
    assert str(refused.value) == f"logger.backend=tensorboard needs the tensorboard package: {TENSORBOARD_HELP}."
    assert TENSORBOARD_HELP.startswith("make install EXTRAS=tensorboard ")
    dry_run = subprocess.run(["make", "-n", "install", "EXTRAS=tensorboard", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    assert '-m pip install -q -e ".[tensorboard]"' in dry_run.stdout  # what `make install EXTRAS=tensorboard` does


def test_halfcheetah_prints_no_mujoco_deprecation(tmp_path: Path) -> None:
    """37 copies of MuJoCo's settotalmass deprecation used to surround the printed config (and fill MUJOCO_LOG.TXT)."""
    code = "from torchrl_awr.envs import make_env; make_env('HalfCheetah-v5', num_envs=3).rollout(2)"
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, check=True)
    assert "settotalmass" not in proc.stdout + proc.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_only_the_listed_mujoco_deprecations_are_silenced() -> None:
    with mujoco_deprecations_silenced(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = mujoco.get_mju_user_warning()
        handler("compiler attribute 'settotalmass' is deprecated and will be removed")
        handler("Nan, Inf or huge value in QACC at DOF 0")
    assert [str(w.message) for w in caught] == ["MuJoCo: Nan, Inf or huge value in QACC at DOF 0"]
    assert mujoco.get_mju_user_warning() is None  # MuJoCo's own handler again


@pytest.mark.slow
def test_soak_three_kills(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "soak.py"), "--kills", "3", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("soak: PASS")
