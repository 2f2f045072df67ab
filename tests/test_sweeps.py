"""sweeps/*.yaml are valid W&B sweep configs, and the command a `wandb agent` runs works with our script."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchrl_awr.config import all_keys, load_config
from torchrl_awr.sweeps import agent_command, grid_points

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
LOGGED_METRICS = {"eval/return_mean", "eval/return_std", "train/return"}  # keys the script logs
DISTRIBUTIONS = {"uniform", "log_uniform_values", "q_uniform", "int_uniform", "normal", "categorical"}
# Keep the agent's command short for CI; everything else comes from the sampled parameter set.
SHORT_RUN = [
    "collector.total_frames=1024",
    "collector.frames_per_batch=512",
    "env.num_envs=2",
    "optim.actor_steps=5",
    "optim.critic_steps=2",
    "optim.batch_size=64",
    "eval.interval=1",
    "eval.episodes=2",
    "logger.mode=offline",
    "optim.compile=false",
]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def sample(spec: dict, rng: random.Random) -> object:
    """One value of a parameter, as W&B's random/grid/bayes search would propose."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    low, high = spec["min"], spec["max"]
    if spec["distribution"] == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if spec["distribution"] == "int_uniform":
        return rng.randint(low, high)
    return rng.uniform(low, high)


def test_there_are_sweeps() -> None:
    names = {path.name for path in SWEEPS}
    assert {"bayes_halfcheetah.yaml", "grid_beta_seed.yaml"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_config_is_valid(path: Path) -> None:
    config = load(path)
    assert config["method"] in {"grid", "random", "bayes"}
    assert config["metric"]["goal"] in {"maximize", "minimize"}
    assert config["metric"]["name"] in LOGGED_METRICS
    assert (ROOT / config["program"]).is_file()
    assert "${args_no_hyphens}" in config["command"] and "${program}" in config["command"]
    keys = set(all_keys())
    for name, spec in config["parameters"].items():
        assert name in keys, f"{name} is not a key of train_mujoco.py"
        kinds = {"value", "values", "distribution"} & set(spec)
        assert len(kinds) == 1, f"{name}: exactly one of value/values/distribution"
        if "distribution" in spec:
            assert spec["distribution"] in DISTRIBUTIONS
            assert spec["min"] < spec["max"]
        if config["method"] == "grid":
            assert "distribution" not in spec, "grid search needs discrete values"
    if "early_terminate" in config:
        assert config["early_terminate"]["type"] == "hyperband"
        assert "min_iter" in config["early_terminate"] or "max_iter" in config["early_terminate"]
    # every value the sweep can propose is accepted by the script's config
    rng = random.Random(0)
    for _ in range(5):
        load_config([f"{k}={sample(v, rng)}" for k, v in config["parameters"].items()])


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_agent_command_runs_and_records_the_swept_values(path: Path, tmp_path: Path) -> None:
    config = load(path)
    params = {k: sample(v, random.Random(1)) for k, v in config["parameters"].items()}
    command = agent_command(config, params)
    assert command[-len(params) :] == [f"{k}={v}" for k, v in params.items()]
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*command, *SHORT_RUN, f"output_dir={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    recorded = summary["wandb"]
    printed = yaml.safe_load(proc.stdout.split("\n", 1)[1].split("final eval return")[0])
    assert printed["output_dir"] == str(out)  # the resolved dir, as on the line above it
    overridden = {arg.split("=", 1)[0] for arg in SHORT_RUN}
    for key, value in params.items():
        if key in overridden:
            continue
        assert recorded["config"][key] == pytest.approx(value), key  # wandb.config holds the swept value
        section, name = key.split(".", 1) if "." in key else (None, key)
        shown = printed[section][name] if section else printed[name]
        assert shown == pytest.approx(value), key  # ... and so does the printed resolved config
        assert f"{key}={value}" in recorded["tags"]
    assert config["metric"]["name"] in recorded["summary"]
    assert recorded["summary"][config["metric"]["name"]] == pytest.approx(summary["final_eval_return_mean"])


def test_grid_expansion_matches_the_sweep_size() -> None:
    config = load(ROOT / "sweeps" / "grid_beta_seed.yaml")
    points = grid_points(config)
    sizes = [len(spec.get("values", [0])) for spec in config["parameters"].values()]
    assert len(points) == math.prod(sizes) == 30
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)
    with pytest.raises(ValueError, match="only grid"):
        grid_points(load(ROOT / "sweeps" / "bayes_halfcheetah.yaml"))


def test_sweep_local_says_which_points_it_skips(tmp_path: Path) -> None:
    study = tmp_path / "beta_study"
    shutil.copytree(ROOT / "docs" / "beta_study", study)  # the committed results: every point is done
    proc = subprocess.run(
        [sys.executable, "scripts/sweep_local.py", "sweeps/grid_beta_seed.yaml", "--out", str(study)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        f"30 of 30 points already done in {study / 'runs'} (they have a summary.json): skipped; to run them again, "
        "pass a fresh --out."
    )
