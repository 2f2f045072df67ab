"""Section ``collection``: frames/s of our collector against raw gymnasium loops (random actions, or a plain-torch
policy with our actor's mean network)."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig

from torchrl_awr import make_env
from torchrl_awr.builders import make_collector, make_loss

from .common import Row, Section, base_config, interleaved, paired, plain_copy, profile
from .plain import make_envs


class OurCollector:
    """``make_collector`` over ``make_env`` with the real actor, as ``build_trainer`` wires them."""

    def __init__(self, cfg: DictConfig) -> None:
        self.env = make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=0)
        self.loss = make_loss(cfg, self.env)
        self.collector = make_collector(cfg, self.env, self.loss.actor_network)
        self.iterator = iter(self.collector)
        next(self.iterator)  # warm-up

    def run(self, frames: int) -> float:
        start = time.perf_counter()
        got = 0
        while got < frames:
            got += next(self.iterator).numel()
        return got / (time.perf_counter() - start)

    def close(self) -> None:
        self.collector.shutdown()


class RawSingle:
    """One gymnasium env, random actions."""

    def __init__(self, name: str) -> None:
        self.env = gym.make(name)
        self.env.reset(seed=0)
        self.env.action_space.seed(0)

    def run(self, frames: int) -> float:
        env = self.env
        start = time.perf_counter()
        for _ in range(frames):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        return frames / (time.perf_counter() - start)

    def close(self) -> None:
        self.env.close()


class RawVector:
    """gymnasium's sync vector env as make_env builds it; random actions, or a plain-torch policy."""

    def __init__(
        self,
        name: str,
        num_envs: int,
        policy: Callable[[torch.Tensor], torch.Tensor] | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        self.env = make_envs(name, num_envs)
        self.obs, _ = self.env.reset(seed=0)
        self.env.action_space.seed(0)
        self.num_envs, self.policy, self.std = num_envs, policy, std

    def run(self, frames: int) -> float:
        env = self.env
        steps = math.ceil(frames / self.num_envs)
        start = time.perf_counter()
        obs = self.obs
        for _ in range(steps):
            if self.policy is None:
                action = env.action_space.sample()
            else:
                with torch.no_grad():
                    mean = self.policy(torch.as_tensor(obs, dtype=torch.float32))
                    action = (mean + self.std * torch.randn_like(mean)).numpy().astype(np.float64)
            obs, _, _, _, _ = env.step(action)
        self.obs = obs
        return steps * self.num_envs / (time.perf_counter() - start)

    def close(self) -> None:
        self.env.close()


def bench_collection(args: argparse.Namespace, tmpdir: Path) -> dict:
    cfg = base_config()
    frames = args.collect_batches * cfg.collector.frames_per_batch
    ours = OurCollector(cfg)
    space = ours.env.action_spec_unbatched.space
    plain = plain_copy(ours.loss, cfg, space.low.float(), space.high.float())
    runners = {
        "ours": ours,
        "ours_1env": OurCollector(base_config("env.num_envs=1")),
        "raw_single": RawSingle(cfg.env.name),
        "raw_vector": RawVector(cfg.env.name, cfg.env.num_envs),
        "raw_vector_policy": RawVector(cfg.env.name, cfg.env.num_envs, plain.mean, plain.std),
    }
    for name, runner in runners.items():
        if name.startswith("raw"):
            runner.run(min(frames, 1024))  # warm-up
    fps = interleaved({name: lambda r=runner: r.run(frames) for name, runner in runners.items()}, args.repeats)
    result = {
        "num_envs": cfg.env.num_envs,
        "frames_per_batch": cfg.collector.frames_per_batch,
        "frames_per_repeat": frames,
        **{f"{name}_fps": statistics.median(values) for name, values in fps.items()},
        "ratio_vs_raw_vector": paired(fps["ours"], fps["raw_vector"]),
        "ratio_vs_raw_single": paired(fps["ours"], fps["raw_single"]),
        "ratio_1env_vs_raw_single": paired(fps["ours_1env"], fps["raw_single"]),
        "ratio_vs_raw_vector_policy": paired(fps["ours"], fps["raw_vector_policy"]),
        "fps_all": fps,
    }
    if args.profile:
        result["profile"] = profile(lambda: ours.run(2 * cfg.collector.frames_per_batch), args.profile)
    for runner in runners.values():
        runner.close()
    return result


def collection_rows(c: dict) -> list[Row]:
    ne = c["num_envs"]
    pairs = (
        ("ours", "raw_vector", "ratio_vs_raw_vector", f"our collector ({ne} envs) vs gymnasium sync vector ({ne})"),
        ("ours", "raw_single", "ratio_vs_raw_single", f"our collector ({ne} envs) vs gymnasium single env"),
        ("ours_1env", "raw_single", "ratio_1env_vs_raw_single", "our collector (1 env) vs gymnasium single env"),
        ("ours", "raw_vector_policy", "ratio_vs_raw_vector_policy", f"our collector ({ne} envs) vs sync vector"),
    )
    rows: list[Row] = []
    for ours, base, ratio, label in pairs:
        how = " + plain-torch policy" if base.endswith("policy") else ", random actions"
        rows.append(("collection", label + how, c[f"{ours}_fps"], c[f"{base}_fps"], c[ratio], "frames/s"))
    return rows


COLLECTION = Section("collection", bench_collection, collection_rows)
