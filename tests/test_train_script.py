"""scripts/train_mujoco.py as a user runs it: outputs, SIGKILL + resume, bad input, learning."""

from __future__ import annotations

import csv
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import script_runs
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_awr.buffers import make_replay_buffer
from torchrl_awr.config import load_config

FAST = [
    "optim.actor_steps=20",
    "optim.critic_steps=10",
    "optim.batch_size=64",
    "collector.frames_per_batch=512",
    "env.num_envs=2",
    "eval.episodes=2",
    "optim.compile=false",  # test_defaults_... runs the compiled default
    "logger.backend=csv",
]


SCRIPT, ROOT = script_runs.ONLINE, script_runs.ROOT
run_script = functools.partial(script_runs.run_script, SCRIPT)


def read_eval(path: Path) -> list[dict[str, float]]:
    with (path / "eval.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_short_run_writes_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_script(
        "env.name=Pendulum-v1", "collector.total_frames=2048", "eval.interval=2", f"output_dir={out}", *FAST
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"output dir: {out}" in proc.stdout
    for name in ("config.yaml", "eval.csv", "policy.pt", "summary.json"):
        assert (out / name).is_file(), name
    assert any((out / "checkpoints").iterdir())
    rows = read_eval(out)
    assert [row["frames"] for row in rows] == [1024, 2048]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 2048
    assert summary["final_eval_return_mean"] == pytest.approx(rows[-1]["eval_return_mean"])
    assert summary["wall_time_s"] > 0
    state = torch.load(out / "policy.pt")
    assert any(k.endswith("loc") for k in state)  # the observation normaliser ships with the policy


def test_defaults_wandb_offline_compiled_update_and_discrete_env(tmp_path: Path) -> None:
    out = tmp_path / "cartpole"
    defaults = [arg for arg in FAST if not arg.startswith(("logger.", "optim.compile"))]
    proc = run_script("env.name=CartPole-v1", "collector.total_frames=1024", f"output_dir={out}", *defaults)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((out / "wandb").glob("offline-run-*")), "W&B must run offline by default"
    assert json.loads((out / "summary.json").read_text())["final_eval_return_mean"] > 0
    assert "updating eagerly" not in proc.stderr  # the compiled update ran
    assert "compile: true" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("storage", ["tensor", "memmap"])
def test_sigkill_then_resume_continues_the_run(tmp_path: Path, storage: str) -> None:
    out = tmp_path / "killed"
    args = ["env.name=Pendulum-v1", "collector.total_frames=12288", "checkpoint.interval=1", "eval.interval=1"]
    args.append(f"buffer.storage={storage}")  # memmap: the killed run's buffer files are still in <out>/buffer
    script_runs.sigkill_after_checkpoints(SCRIPT, *args, *FAST, out=out)
    before = read_eval(out)
    assert 0 < before[-1]["frames"] < 12288

    resumed = run_script(f"resume={out}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = read_eval(out)
    frames = [row["frames"] for row in rows]
    assert frames == list(range(512, 12288 + 1, 512)), "eval curve must continue without gaps or repeats"
    walls = [row["wall_time_s"] for row in rows]
    assert walls == sorted(walls)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 12288


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["env.name=NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["loss.beta=0"], "loss.beta=0"),
        (["loss.beta=-1"], "loss.beta=-1"),
        (["optim.actorlr=1e-3"], "unknown override key 'optim.actorlr'"),
        (["resume=/nonexistent/run"], "resume='/nonexistent/run'"),
        (["logger.backend=mlflow"], "logger.backend='mlflow'"),
        (["threads=0"], "threads=0 is invalid; it must be > 0"),
        (["env.name=Blackjack-v1"], "env.name='Blackjack-v1' has a Tuple observation space"),
        (["threads=abc"], "bad override threads: Value 'abc'"),
        (["buffer.size=1000", "collector.frames_per_batch=2048"], "buffer.size=1000 is smaller than"),
        (["output_dir=README.md"], "output_dir='README.md' is a file"),
        (["output_dir=/proc/x"], "output_dir='/proc/x' cannot be written"),
        (["optim.cudagraphs=true"], "optim.cudagraphs=true captures CUDA graphs: it needs device=cuda"),
        pytest.param(["device=cuda"], "no CUDA device is available", marks=NO_GPU),
        pytest.param(["device=auto", "optim.cudagraphs=true"], "optim.cudagraphs=true needs a CUDA device",
                     marks=NO_GPU),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    proc = run_script(*args, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def _old_run(directory: Path) -> Path:
    """A dir that looks like a finished run: a config.yaml and a checkpoint at a frame count no new run reaches."""
    (directory / "checkpoints" / "checkpoint-000000999936").mkdir(parents=True)
    (directory / "config.yaml").write_text("seed: 0\n")
    return directory


def test_output_dir_of_another_run_is_refused(tmp_path: Path) -> None:
    out = _old_run(tmp_path / "old")
    proc = run_script("env.name=Pendulum-v1", f"output_dir={out}", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds a run" in lines[0] and f"resume={out}" in lines[0], proc.stderr
    assert (out / "checkpoints" / "checkpoint-000000999936").is_dir()  # nothing touched


def test_overwrite_empties_the_output_dir_first(tmp_path: Path) -> None:
    out = _old_run(tmp_path / "old")
    proc = run_script("env.name=Pendulum-v1", "collector.total_frames=512", f"output_dir={out}", "overwrite=true",
                      *FAST)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-000000000512"]


def test_resume_of_a_finished_run(tmp_path: Path) -> None:
    """Says it is finished (no batch past the total), refuses changes to the run, records the allowed ones."""
    out = tmp_path / "run"
    assert run_script("env.name=Pendulum-v1", "collector.total_frames=512", f"output_dir={out}", *FAST).returncode == 0
    rows = read_eval(out)
    done = run_script(f"resume={out}", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"train_mujoco.py: the run in {str(out)!r} is finished (512 frames); raise collector.total_frames to "
        "train it further."
    ]
    assert read_eval(out) == rows
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-000000000512"]
    refused = run_script(f"resume={out}", "loss.beta=0.1", timeout=60)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "'loss.beta=0.1'" in refused.stderr
    other_env = run_script(f"resume={out}", "env.name=MountainCarContinuous-v0", timeout=60)
    assert other_env.returncode == 2 and len(other_env.stderr.strip().splitlines()) == 1, other_env.stderr
    assert "'env.name=MountainCarContinuous-v0' would change the run" in other_env.stderr
    more = run_script(f"resume={out}", "collector.total_frames=1024", timeout=120)
    assert more.returncode == 0, more.stderr
    assert load_config([], base=OmegaConf.load(out / "config.yaml")).collector.total_frames == 1024
    assert [row["frames"] for row in read_eval(out)][-1] == 1024


def test_total_frames_rounds_up_to_whole_batches_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_script("env.name=Pendulum-v1", "collector.total_frames=700", f"output_dir={out}", *FAST)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "not a multiple" in line]
    assert warnings == [
        "warning: collector.total_frames=700 is not a multiple of collector.frames_per_batch=512; training 1024 frames."
    ]
    assert json.loads((out / "summary.json").read_text())["frames"] == 1024
    assert load_config([], base=OmegaConf.load(out / "config.yaml")).collector.total_frames == 1024


def test_a_start_that_fails_can_be_run_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for _ in range(2):
        proc = run_script("buffer.size=1000", "collector.frames_per_batch=2048", f"output_dir={out}", timeout=60)
        assert proc.returncode == 2 and "buffer.size=1000" in proc.stderr, proc.stderr


@pytest.mark.parametrize("script", [script_runs.ONLINE, script_runs.OFFLINE], ids=["online", "offline"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_keys_defaults_and_allowed_values(script: Path, flag: str) -> None:
    proc = script_runs.run_script(script, flag, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "loss.beta=" in proc.stdout and "overwrite=False" in proc.stdout
    assert "buffer.storage='tensor'  one of: tensor, memmap" in proc.stdout


def test_unreadable_checkpoint_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_script("env.name=Pendulum-v1", "collector.total_frames=512", f"output_dir={out}", *FAST).returncode == 0
    for payload in (out / "checkpoints").glob("checkpoint-*/components/*/*.json"):
        payload.write_bytes(b"garbage")
    proc = run_script(f"resume={out}", "collector.total_frames=1024", timeout=60)  # more frames: not finished
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "damaged" in proc.stderr and "no whole checkpoint" in proc.stderr


def test_learns_inverted_pendulum(tmp_path: Path) -> None:
    """Fixed-seed learning check on a small task (a few CPU minutes)."""
    out = tmp_path / "invpend"
    proc = run_script(
        "env.name=InvertedPendulum-v5",
        "collector.total_frames=40960",
        "optim.actor_lr=1e-3",
        "optim.actor_steps=200",
        "optim.critic_steps=50",
        "eval.interval=2",
        "seed=0",
        f"output_dir={out}",
        "logger.backend=none",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_eval_return_mean"] >= 900, summary  # the maximum is 1000; random is ~50


def test_memmap_buffer_run(tmp_path: Path) -> None:
    out = tmp_path / "memmap"
    proc = run_script(
        "env.name=Pendulum-v1", "collector.total_frames=1024", "buffer.storage=memmap", f"output_dir={out}", *FAST
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((out / "buffer").rglob("*.memmap"))  # the buffer lives on disk
    assert json.loads((out / "summary.json").read_text())["frames"] == 1024


def test_memmap_buffer_resumes_from_the_checkpoint_not_the_stale_files(tmp_path: Path) -> None:
    cfg = load_config(["buffer.storage=memmap", "buffer.size=8"])
    buffer = make_replay_buffer(cfg, tmp_path, torch.device("cpu"))
    buffer.extend(TensorDict({"x": torch.arange(8.0)}, [8]))
    buffer.dumps(tmp_path / "checkpoint")
    buffer.extend(TensorDict({"x": -torch.ones(8)}, [8]))  # written after the checkpoint, before the run was killed
    restored = make_replay_buffer(cfg, tmp_path, torch.device("cpu"))  # the same scratch dir, files still there
    restored.loads(tmp_path / "checkpoint")
    assert torch.equal(restored[:]["x"], torch.arange(8.0))


def test_tensorboard_backend_without_tensorboard_is_one_line(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed: the backend works instead of failing")
    proc = run_script("env.name=Pendulum-v1", "logger.backend=tensorboard", f"output_dir={tmp_path}", timeout=60)
    assert proc.returncode == 2
    assert "pip install -e '.[tensorboard]'" in proc.stderr.strip().splitlines()[-1]


def test_divergence_is_one_line_and_keeps_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "diverged"
    proc = run_script(
        "env.name=Pendulum-v1",
        "optim.optimizer=sgd",  # SGD at lr 1e3 overflows; Adam's steps are bounded by lr and stay finite longer
        "optim.actor_lr=1e3",
        "optim.critic_lr=1e3",
        "collector.total_frames=4096",
        f"output_dir={out}",
        *FAST,
        timeout=120,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "training diverged" in last and "non-finite" in last and str(out / "checkpoints") in last
    assert "Traceback" not in proc.stderr


def test_sigterm_before_training_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while the run is being built (before training and its own handler): one line, exit 143."""
    monkeypatch.delenv("MAKELEVEL", raising=False)
    out = tmp_path / "building"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "env.name=HalfCheetah-v5", f"output_dir={out}", *FAST],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("output dir:")  # resolved: the run is being built now
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1].startswith("train_mujoco.py: interrupted (SIGTERM)"), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_before_the_first_checkpoint_saves_one_and_resume_works(
    tmp_path: Path, signum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C or SIGTERM in the first iterations, long before ``checkpoint.interval``: one line, a checkpoint."""
    monkeypatch.delenv("MAKELEVEL", raising=False)  # under `make test` the hint would name `make train`
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "env.name=Pendulum-v1",
            "collector.total_frames=100000",
            "checkpoint.interval=1000",
            "eval.interval=1",
            f"output_dir={out}",
            *FAST,
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a child inherits an ignored SIGINT (pytest started as a background job of a
        # non-interactive shell has one), and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "eval.csv").exists():  # training has begun
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"train_mujoco.py: interrupted ({name}), checkpoint saved; continue with: resume={out}"
    )
    assert "Traceback" not in stderr
    (checkpoint,) = (out / "checkpoints").glob("checkpoint-*")
    frames = int(checkpoint.name.split("-")[1])
    resumed = run_script(f"resume={out}", f"collector.total_frames={frames + 512}", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
