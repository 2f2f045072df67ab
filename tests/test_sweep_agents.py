"""Several `wandb agent`s on one sweep: each run gets its own output dir and W&B run, nothing writes a shared path.

Two agents (own HOME and W&B run id each, as on two machines) run the exact command line a `wandb agent` runs for
the same parameter set, at the same time, from one working directory (a file system the machines share).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import yaml

from torchrl_awr.sweeps import agent_command, grid_points

ROOT = Path(__file__).resolve().parents[1]
SHORT_RUN = [
    "env.name=Pendulum-v1",
    "collector.total_frames=512",
    "collector.frames_per_batch=512",
    "env.num_envs=2",
    "optim.actor_steps=2",
    "optim.critic_steps=2",
    "optim.batch_size=64",
    "eval.interval=1",
    "eval.episodes=2",
    "logger.mode=offline",
    "optim.compile=false",
]


def files_under(path: Path) -> set[Path]:
    return {p.relative_to(path) for p in path.rglob("*") if p.is_file() or p.is_symlink()}


def test_agents_started_together_with_the_same_parameters_get_distinct_runs(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "sweeps" / "grid_beta_seed.yaml").read_text())
    params = grid_points(config)[3]  # one grid point, every parameter as the agent passes it
    command = [*agent_command(config, params), *SHORT_RUN]  # shortened; no output_dir: the default one
    shared = tmp_path / "shared"  # the working dir both agents run in, as on a shared file system
    shared.mkdir()
    (shared / "scripts").symlink_to(ROOT / "scripts")
    before = files_under(shared)
    procs = []
    for agent in ("a", "b"):
        home = tmp_path / f"home-{agent}"
        home.mkdir()
        env = {
            **os.environ,
            "HOME": str(home),
            "WANDB_RUN_ID": f"run-{agent}",  # what `wandb agent` sets for each run it starts
            "WANDB_SWEEP_ID": "sweep-1",
            "WANDB_SILENT": "true",
            "OMP_NUM_THREADS": "1",
        }
        procs.append(subprocess.Popen(command, cwd=shared, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        outs.append(shared / stdout.decode().split("output dir: ", 1)[1].splitlines()[0])
    assert outs[0] != outs[1]
    assert all(socket.gethostname().split(".")[0] in out.name for out in outs)  # distinct across machines, too
    summaries = [json.loads((out / "summary.json").read_text()) for out in outs]
    assert [s["wandb"]["run_id"] for s in summaries] == ["run-a", "run-b"]
    assert all(s["wandb"]["sweep_id"] == "sweep-1" for s in summaries)
    assert all(s["wandb"]["config"]["loss.beta"] == params["loss.beta"] for s in summaries)
    # everything the runs wrote in the shared dir is inside their own output dirs
    runs = [out.relative_to(shared) for out in outs]
    new = files_under(shared) - before
    assert new and all(any(path.is_relative_to(run) for run in runs) for path in new), sorted(map(str, new))
