"""collector.backend=ray on a local Ray instance (2 CPUs): fresh weights, frames counted once, SIGKILL + resume.

Also the backend keys' bad input (no Ray needed): one line on stderr, exit status 2, within seconds.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import time
from pathlib import Path

import pytest
import script_runs
import torch
from collector_checks import assert_workers_act_with_the_learners_weights
from tensordict import TensorDict

from torchrl_awr.builders import make_loss
from torchrl_awr.collectors import DistinctTrajIds, make_collector
from torchrl_awr.config import load_config
from torchrl_awr.envs import make_env
from torchrl_awr.experiment import build_trainer

SCRIPT = script_runs.ONLINE
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install -e '.[ray]')")
RAY = [
    "env.name=Pendulum-v1",
    "collector.backend=ray",
    "collector.num_workers=2",
    "env.num_envs=2",
    "collector.frames_per_batch=400",
    "optim.compile=false",
    "logger.backend=none",
]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the in-process tests (the collector joins it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2)
    yield
    ray.shutdown()


run_script = functools.partial(script_runs.run_script, SCRIPT, timeout=120)


def read_frames(out: Path) -> list[int]:
    with (out / "eval.csv").open() as f:
        return [int(float(row["frames"])) for row in csv.DictReader(f)]


@needs_ray
def test_ray_workers_collect_with_the_learners_current_weights(local_ray) -> None:
    assert_workers_act_with_the_learners_weights(RAY)


@needs_ray
def test_ray_backend_counts_each_frame_once(local_ray, tmp_path: Path) -> None:
    cfg = load_config([*RAY, "collector.total_frames=1200", "optim.actor_steps=2", "optim.critic_steps=2"])
    cfg.optim.batch_size = 64
    cfg.checkpoint.interval = 1  # the workers' collector states go into the checkpoint
    trainer, _, _ = build_trainer(cfg, tmp_path, progress_bar=False)
    mismatches = []

    def workers_hold_the_learners_weights() -> None:  # runs after the trainer's UpdateWeights hook
        learner = trainer.loss_module.actor_network.state_dict()
        for worker in trainer.collector.state_dict():
            held = worker["policy_state_dict"]
            mismatches.extend(k for k, v in learner.items() if not torch.equal(held[k], v.cpu()))

    trainer.register_op("post_steps", workers_hold_the_learners_weights)
    trainer.train()
    assert not mismatches
    assert trainer.collected_frames == 1200
    assert trainer.replay_buffer.write_count == 1200
    stored = trainer.replay_buffer.storage[:1200]
    pairs = set(zip(stored["collector", "traj_ids"].tolist(), stored["step_count"].squeeze(-1).tolist(), strict=True))
    assert len(pairs) == 1200  # every (trajectory, step) once: no worker's data twice, no two workers' ids shared
    assert list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_distinct_traj_ids_keep_a_trajectory_across_batches() -> None:
    ids = torch.tensor([[[3, 3], [4, 4]], [[3, 3], [5, 5]]])  # [workers, envs, time]: both workers have id 3
    first = DistinctTrajIds(2)(TensorDict({("collector", "traj_ids"): ids.clone()}, batch_size=ids.shape))
    second = DistinctTrajIds(2)(TensorDict({("collector", "traj_ids"): ids.clone()}, batch_size=ids.shape))
    out = first["collector", "traj_ids"]
    assert out[0, 0, 0] != out[1, 0, 0]
    assert torch.equal(out, second["collector", "traj_ids"])


@needs_ray
def test_ray_run_killed_with_sigkill_resumes_like_single(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = [
        *RAY[:-1],
        "collector.total_frames=4000",
        "checkpoint.interval=1",
        "eval.interval=1",
        "eval.episodes=2",
        "optim.actor_steps=10",
        "optim.critic_steps=5",
        "optim.batch_size=64",
        "logger.backend=csv",
    ]
    # the driver only is killed: Ray's own processes must go with it
    script_runs.sigkill_after_checkpoints(SCRIPT, *args, out=out, timeout=90, start_new_session=True)
    before = read_frames(out)
    assert 0 < before[-1] < 4000

    resumed = run_script(f"resume={out}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_frames(out) == list(range(400, 4001, 400)), "eval curve must continue without gaps or repeats"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4000
    assert (out / "policy.pt").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["collector.backend=nonsense"], "collector.backend='nonsense' is not allowed; choose one of single, multi"),
        (["collector.backend=ray", "collector.num_workers=0"], "collector.num_workers=0 is invalid"),
        (["collector.backend=multi", "collector.num_workers=-1"], "collector.num_workers=-1 is invalid"),
        pytest.param(
            ["collector.backend=ray", "collector.ray_address=127.0.0.1:1"],
            "nothing answers at 127.0.0.1:1",
            marks=needs_ray,
        ),
        pytest.param(
            ["collector.backend=ray", "collector.ray_address=ray://127.0.0.1:1"],
            "nothing answers at 127.0.0.1:1",
            marks=needs_ray,
        ),
        pytest.param(
            ["collector.backend=ray", "collector.ray_address=somewhere"], "is not an address", marks=needs_ray
        ),
    ],
)
def test_bad_backend_input_is_one_line_exit_2_within_seconds(args: list[str], needle: str, tmp_path: Path) -> None:
    start = time.time()
    proc = run_script("env.name=Pendulum-v1", "logger.backend=none", f"output_dir={tmp_path}", *args, timeout=60)
    assert time.time() - start < 30
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]


def test_ray_backend_without_ray_is_one_line(monkeypatch) -> None:
    import importlib.util as util

    from torchrl_awr import collectors

    find_spec = util.find_spec
    monkeypatch.setattr(collectors.importlib.util, "find_spec", lambda name: None if name == "ray" else find_spec(name))
    cfg = load_config(RAY)
    env = make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=0)
    with pytest.raises(ValueError, match=r"^collector.backend=ray needs the ray package: pip install -e '.\[ray\]'.$"):
        make_collector(cfg, env, make_loss(cfg, env).actor_network)


def test_ray_workers_must_divide_the_batch() -> None:
    with pytest.raises(ValueError, match=r"env.num_envs=8 x collector.num_workers=3"):
        load_config(["collector.backend=ray", "collector.num_workers=3", "env.num_envs=8"])
    assert load_config(["collector.backend=ray", "collector.num_workers=2"]).collector.ray_address == ""
