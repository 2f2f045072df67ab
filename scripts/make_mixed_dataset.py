"""Write a mixed-quality Pendulum-v1 dataset: good-controller and random-policy episodes, shuffled.

    python scripts/make_mixed_dataset.py data/pendulum_mixed.hdf5 --good 10 --random 40 --seed 0
    python scripts/make_mixed_dataset.py data/minari --format minari --name pendulum/mixed-v0 --good 2 --random 8

``--format hdf5`` writes a D4RL-style file (observations, actions, rewards,
terminals, timeouts, next_observations); ``--format minari`` writes a Minari
dataset under the given root with minari's own ``DataCollector`` (needs the
``offline`` extra). The good policy is an energy-based swing-up with a linear
balance controller plus Gaussian action noise (return ≈ -130; random ≈ -1200).
Used by tests/test_offline.py and the "Offline: AWR vs behaviour cloning" benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from unittest.mock import patch

import gymnasium as gym
import numpy as np

ENV = "Pendulum-v1"


def good_action(obs: np.ndarray, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """Swing up by pumping energy, balance with a linear controller near the top; clipped to [-2, 2]."""
    cos, sin, speed = obs
    angle = np.arctan2(sin, cos)
    if cos > 0.85:
        torque = -(10.0 * angle + 2.0 * speed)
    else:
        energy = 0.5 * speed**2 + 15.0 * cos  # 15 at rest upright (θ'' = 15 sin θ + 3u)
        torque = 2.0 * np.sign(speed if abs(speed) > 1e-3 else 1.0) * (1.0 if energy < 15.0 else -1.0)
    return np.clip(np.array([torque + noise * rng.normal()], dtype=np.float32), -2.0, 2.0)


def episode_kinds(good: int, random: int, seed: int) -> list[str]:
    kinds = ["good"] * good + ["random"] * random
    np.random.default_rng(seed).shuffle(kinds)
    return kinds


def run_episodes(env: gym.Env, kinds: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    for i, kind in enumerate(kinds):
        obs, _ = env.reset(seed=seed * 10_000 + i)
        done = False
        while not done:
            action = good_action(obs, rng) if kind == "good" else env.action_space.sample()
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated


class _Recorder(gym.Wrapper):
    """Keeps every transition in D4RL's column layout."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.columns: dict[str, list] = {
            k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
        }
        self._obs = None

    def reset(self, **kwargs):
        self._obs, info = self.env.reset(**kwargs)
        return self._obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        for key, value in zip(self.columns, (self._obs, action, reward, terminated, truncated, obs), strict=True):
            self.columns[key].append(value)
        self._obs = obs
        return obs, reward, terminated, truncated, info


def write_hdf5(path: str | Path, good: int, random: int, seed: int = 0) -> Path:
    """A D4RL-style HDF5 file of ``good + random`` shuffled episodes."""
    import h5py

    env = _Recorder(gym.make(ENV))
    run_episodes(env, episode_kinds(good, random, seed), seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, values in env.columns.items():
            dtype = bool if key in ("terminals", "timeouts") else np.float32
            f[key] = np.asarray(values, dtype=dtype)
    return path


def write_minari(root: str | Path, name: str, good: int, random: int, seed: int = 0) -> Path:
    """A Minari dataset ``name`` under the Minari root ``root``, written by minari's ``DataCollector``."""
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    with patch.dict(os.environ, {"MINARI_DATASETS_PATH": str(root)}):
        from minari import DataCollector

        env = DataCollector(gym.make(ENV), record_infos=False)
        run_episodes(env, episode_kinds(good, random, seed), seed)
        env.create_dataset(
            dataset_id=name,
            algorithm_name=f"{good} swing-up controller + {random} random episodes",
            author="torchrl-awr",
            author_email="dev@torchrl-awr",
            description=f"Mixed-quality {ENV} data: {good} good-controller and {random} random-policy episodes.",
            eval_env=ENV,
        )
        env.close()
    return root / name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="the .hdf5 file, or the Minari datasets root with --format minari")
    parser.add_argument("--format", choices=("hdf5", "minari"), default="hdf5")
    parser.add_argument("--name", default="pendulum/mixed-v0", help="Minari dataset id")
    parser.add_argument("--good", type=int, default=10)
    parser.add_argument("--random", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.format == "hdf5":
        out = write_hdf5(args.path, args.good, args.random, args.seed)
    else:
        out = write_minari(args.path, args.name, args.good, args.random, args.seed)
    print(f"wrote {args.good} good + {args.random} random {ENV} episodes to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
