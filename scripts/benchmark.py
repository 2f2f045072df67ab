"""Benchmark the AWR building blocks against plain PyTorch / raw gymnasium, measured in one run.

    python scripts/benchmark.py                                  # every section, a few minutes
    python scripts/benchmark.py --quick --json /tmp/bench.json   # CI smoke test, < 60 s
    python scripts/benchmark.py --sections update --profile 25   # + cProfile of our update step

Sections (``--sections``, comma-separated):

* ``update``: one AWR actor step and one critic step (batch 256, HalfCheetah-v5 sizes) through
  ``AWRLoss.actor_loss``/``value_loss`` + SGD, minibatches indexed out of a 50k TensorDict snapshot
  as ``RegressionPhase`` does, against the same math in plain PyTorch on plain tensors (same
  weights: the plain nets are loaded from ours, and the two losses are checked to agree).
* ``learner``: a whole learner phase (200 critic + 1000 actor steps, 50k buffer) through the
  ``RegressionPhase`` hooks, with SGD + momentum and with Adam, eager and compiled (one graph per update
  step, the default) and, with ``device=cuda``, CUDA-graphed, against plain-PyTorch phases on the same device.
* ``relabel``: ``torchrl_awr.relabel`` over a full (wrapped) 50k-transition buffer.
* ``collection``: frames/s of our collector against raw gymnasium loops with random actions.
* ``iteration``: a full AWR iteration through ``build_trainer`` with a full 50k buffer, its split,
  and the projected wall time for 1M frames.

Every figure is a median over ``--repeats``; each ratio is the median of per-repeat ratios of two
measurements taken back to back, so a neighbouring job slows both sides alike. The Markdown table
goes to stdout, the JSON to ``--json``.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import logging
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import tensordict
import torch
import torchrl
from tensordict import TensorDict
from torch import nn
from torchrl.envs import ObservationNorm

from torchrl_awr import relabel
from torchrl_awr.builders import make_collector, make_loss, make_optimizers, make_replay_buffer, resolve_device
from torchrl_awr.config import load_config
from torchrl_awr.envs import make_env
from torchrl_awr.experiment import build_trainer
from torchrl_awr.update import RegressionPhase, shuffled_indices

SECTIONS = ("update", "learner", "relabel", "collection", "iteration")
ENV_NAME = "HalfCheetah-v5"
BUFFER_SIZE = 50_000
EPISODE_LEN = 1000
REFERENCE_MINUTES_1M = 30.0  # original AWR, HalfCheetah, its own hardware (the paper's training logs, docs/reference)


# ----------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


def paired(ours: list[float], base: list[float]) -> float:
    """Median of per-repeat ratios ours/base."""
    return statistics.median(o / b for o, b in zip(ours, base, strict=True))


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import mujoco

        mujoco_version = mujoco.__version__
    except ImportError:
        mujoco_version = "n/a"
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "tensordict": tensordict.__version__,
        "gymnasium": gym.__version__,
        "mujoco": mujoco_version,
        "torch_threads": threads,
        "loadavg_start": list(os.getloadavg()),
    }


CONFIG_OVERRIDES: list[str] = []  # key=value from the command line, applied to every section


def base_config(*overrides: str):
    return load_config([f"env.name={ENV_NAME}", "logger.backend=none", *CONFIG_OVERRIDES, *overrides])


def find_observation_norm(module: nn.Module) -> ObservationNorm:
    for sub in module.modules():
        if isinstance(sub, ObservationNorm):
            return sub
    raise RuntimeError("no ObservationNorm inside the network")


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


# ----------------------------------------------------------------------------- update step
class PlainAWR:
    """The AWR update in plain PyTorch: nn.Sequential nets, plain tensors, no TensorDict."""

    def __init__(self, loss, cfg, low: torch.Tensor, high: torch.Tensor) -> None:
        norm = find_observation_norm(loss.actor_network)
        self.loc, self.scale = norm.loc.detach().clone(), norm.scale.detach().clone()
        self.actor = self._copy(linears(loss.actor_network))
        self.critic = self._copy(linears(loss.value_network))
        self.mid, self.half = (high + low) / 2, (high - low) / 2
        std = self.half * cfg.model.action_std
        self.var, self.log_std = std.pow(2), std.log()
        self.value_scale = 1.0 / (1.0 - cfg.loss.gamma)
        self.beta, self.log_clip = cfg.loss.beta, math.log(cfg.loss.max_weight)
        self.normalize = bool(getattr(loss, "normalize_advantage", True))  # follow ours: same math either way
        self.penalty = cfg.loss.action_bound_penalty

        def make(params, lr: float) -> torch.optim.Optimizer:  # the optimizer of ours, in torch.optim's defaults
            if cfg.optim.optimizer == "adam":
                return torch.optim.Adam(params, lr=lr)
            return torch.optim.SGD(params, lr=lr, momentum=cfg.optim.momentum)

        self.actor_opt = make(self.actor.parameters(), cfg.optim.actor_lr)
        self.critic_opt = make(self.critic.parameters(), cfg.optim.critic_lr)

    def to(self, device: torch.device) -> PlainAWR:
        """A copy on ``device`` with fresh optimizers."""
        other = copy.copy(self)
        for name in ("loc", "scale", "mid", "half", "var", "log_std"):
            setattr(other, name, getattr(self, name).to(device))
        other.actor, other.critic = copy.deepcopy(self.actor).to(device), copy.deepcopy(self.critic).to(device)
        other.actor_opt = type(self.actor_opt)(other.actor.parameters(), **self.actor_opt.defaults)
        other.critic_opt = type(self.critic_opt)(other.critic.parameters(), **self.critic_opt.defaults)
        return other

    @staticmethod
    def _copy(layers: list[nn.Linear]) -> nn.Sequential:
        mods: list[nn.Module] = []
        for i, layer in enumerate(layers):
            new = nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                new.weight.copy_(layer.weight)
                new.bias.copy_(layer.bias)
            mods += [new] if i == len(layers) - 1 else [new, nn.ReLU()]
        return nn.Sequential(*mods)

    def actor_loss(self, obs: torch.Tensor, action: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
        mean_n = self.actor((obs - self.loc) / self.scale)  # normalised action units
        mean = self.mid + self.half * mean_n
        log_prob = (-(action - mean).pow(2) / (2 * self.var) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        adv = advantage.squeeze(-1)
        if self.normalize:
            adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-5)
        weight = (adv / self.beta).clamp_max(self.log_clip).exp()
        violation = (mean_n - 1).clamp_min(0).pow(2) + (mean_n + 1).clamp_max(0).pow(2)
        return (-weight * log_prob + self.penalty * 0.5 * violation.sum(-1)).mean()

    def value_loss(self, obs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = self.critic((obs - self.loc) / self.scale) * self.value_scale
        return (0.5 * ((target - value) / self.value_scale).pow(2)).mean()


def ours_phase(loss_fn, data: TensorDict, optimizer, steps: int, batch_size: int) -> None:
    """RegressionPhase's inner loop: TensorDict minibatch, loss method, SGD, running metric sums."""
    totals: dict = {}
    for idx in shuffled_indices(data.shape[0], batch_size, steps, data.device):
        loss, metadata = loss_fn(data[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in (("loss", loss.detach()), *metadata.items()):
            totals[key] = totals.get(key, 0.0) + value


def plain_phase(loss_fn, tensors: tuple, optimizer, steps: int, batch_size: int) -> None:
    total = 0.0
    for idx in shuffled_indices(tensors[0].shape[0], batch_size, steps, tensors[0].device):
        loss = loss_fn(*(t[idx] for t in tensors))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total = total + loss.detach()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def setup_update(cfg, tmpdir: Path) -> dict:
    env = make_env(cfg.env.name)
    loss = make_loss(cfg, env)
    actor_opt, critic_opt = make_optimizers(cfg, loss)
    space = env.action_spec_unbatched.space
    low, high = space.low.float(), space.high.float()
    obs_dim = env.observation_spec_unbatched["observation"].shape[-1]
    env.close()
    gen = torch.Generator().manual_seed(0)
    n = BUFFER_SIZE
    obs = torch.randn(n, obs_dim, generator=gen) * 2 + 0.5
    action = low + (high - low) * torch.rand(n, low.shape[-1], generator=gen)
    advantage = torch.randn(n, 1, generator=gen) * 3
    value_target = torch.randn(n, 1, generator=gen) * 20 + 50
    norm = find_observation_norm(loss.actor_network)
    norm.loc.copy_(obs.mean(0))
    norm.scale.copy_(obs.std(0))
    plain = PlainAWR(loss, cfg, low, high)
    keys = loss.tensor_keys
    critic_keys = [*loss.value_network.in_keys, keys.value_target]
    actor_keys = [*loss.actor_network.in_keys, keys.action, keys.advantage]
    full = TensorDict(
        {"observation": obs, keys.action: action, keys.advantage: advantage, keys.value_target: value_target},
        batch_size=[n],
    )
    buffer = make_replay_buffer(cfg, tmpdir, torch.device("cpu"))
    buffer.extend(full)
    # Same math? Both losses on one minibatch, before any step.
    idx = torch.randperm(n)[: cfg.optim.batch_size]
    with torch.no_grad():
        ours_a = loss.actor_loss(full[idx].select(*actor_keys))[0].item()
        ours_c = loss.value_loss(full[idx].select(*critic_keys))[0].item()
        plain_a = plain.actor_loss(obs[idx], action[idx], advantage[idx]).item()
        plain_c = plain.value_loss(obs[idx], value_target[idx]).item()
    check = {
        "actor_loss_ours": ours_a,
        "actor_loss_plain": plain_a,
        "value_loss_ours": ours_c,
        "value_loss_plain": plain_c,
        "max_rel_diff": max(abs(ours_a - plain_a) / max(abs(plain_a), 1e-8), abs(ours_c - plain_c) / abs(plain_c)),
    }
    if check["max_rel_diff"] > 1e-4:
        log(f"WARNING: ours and plain losses differ ({check}); the comparison is not like for like")
    return {
        "loss": loss,
        "actor_opt": actor_opt,
        "critic_opt": critic_opt,
        "plain": plain,
        "critic_data": full.select(*critic_keys),
        "actor_data": full.select(*actor_keys),
        "critic_keys": critic_keys,
        "actor_keys": actor_keys,
        "buffer": buffer,
        "tensors": (obs, action, advantage, value_target),
        "check": check,
    }


def update_config():
    """Default config, with advantages standardised per minibatch inside the loss where the config can say so."""
    try:
        return base_config("loss.advantage_stats=batch")
    except ValueError:  # a version without the key: the loss's own normalize_advantage decides
        return base_config()


def bench_update(args, tmpdir: Path) -> dict:
    cfg = update_config()
    bs, steps = cfg.optim.batch_size, args.steps
    s = setup_update(cfg, tmpdir)
    loss, plain = s["loss"], s["plain"]
    obs, action, advantage, value_target = s["tensors"]

    def hook(name, fn, keys, opt):
        return RegressionPhase(
            name=name, loss_fn=fn, keys=keys, replay_buffer=s["buffer"], optimizer=opt, steps=steps, batch_size=bs
        )

    hook_critic = hook("critic_phase", loss.value_loss, s["critic_keys"], s["critic_opt"])
    hook_actor = hook("actor_phase", loss.actor_loss, s["actor_keys"], s["actor_opt"])
    variants: dict[str, dict[str, Callable[[], object]]] = {
        "ours": {
            "critic": lambda: ours_phase(loss.value_loss, s["critic_data"], s["critic_opt"], steps, bs),
            "actor": lambda: ours_phase(loss.actor_loss, s["actor_data"], s["actor_opt"], steps, bs),
        },
        "plain": {
            "critic": lambda: plain_phase(plain.value_loss, (obs, value_target), plain.critic_opt, steps, bs),
            "actor": lambda: plain_phase(plain.actor_loss, (obs, action, advantage), plain.actor_opt, steps, bs),
        },
        "hook": {"critic": hook_critic, "actor": hook_actor},
    }
    for fns in variants.values():  # warm-up
        for fn in fns.values():
            fn()
    ms: dict[str, dict[str, list[float]]] = {v: {"critic": [], "actor": []} for v in variants}
    order = list(variants)
    for rep in range(args.repeats):
        for variant in order if rep % 2 == 0 else order[::-1]:
            for phase, fn in variants[variant].items():
                ms[variant][phase].append(timed(fn) * 1e3 / steps)
    for variant in ms:
        ms[variant]["step"] = [c + a for c, a in zip(ms[variant]["critic"], ms[variant]["actor"], strict=True)]
    result: dict = {
        "batch_size": bs,
        "hidden_sizes": list(cfg.model.hidden_sizes),
        "steps_per_block": steps,
        "buffer_size": BUFFER_SIZE,
        "advantage_standardised_per_minibatch": bool(getattr(loss, "normalize_advantage", True)),
        "check": s["check"],
    }
    for phase in ("actor", "critic", "step"):
        result[phase] = {
            "ours_ms": statistics.median(ms["ours"][phase]),
            "plain_ms": statistics.median(ms["plain"][phase]),
            "hook_ms": statistics.median(ms["hook"][phase]),
            "ratio": paired(ms["ours"][phase], ms["plain"][phase]),
            "hook_ratio": paired(ms["hook"][phase], ms["plain"][phase]),
            "ours_ms_all": ms["ours"][phase],
            "plain_ms_all": ms["plain"][phase],
            "hook_ms_all": ms["hook"][phase],
        }
    if args.profile:
        result["profile"] = profile_update(s, max(steps, 300), bs, args.profile)
    return result


def profile_update(s: dict, steps: int, bs: int, top: int) -> str:
    """cProfile of ``steps`` of our critic and actor steps; the top functions by own time."""
    loss = s["loss"]
    prof = cProfile.Profile()
    prof.enable()
    ours_phase(loss.value_loss, s["critic_data"], s["critic_opt"], steps, bs)
    ours_phase(loss.actor_loss, s["actor_data"], s["actor_opt"], steps, bs)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# ----------------------------------------------------------------------------- relabel
def synthetic_batch(template: TensorDict, index: int, num_envs: int, steps: int, gen: torch.Generator) -> TensorDict:
    """``num_envs`` × ``steps`` HalfCheetah-shaped transitions (env-major, as a flattened collector batch).

    Episodes last ``EPISODE_LEN`` steps and end by truncation; trajectory ids are unique per episode.
    """
    n = num_envs * steps
    t = (index * steps + torch.arange(steps)).repeat(num_envs)  # global time of each env
    env_id = torch.arange(num_envs).repeat_interleave(steps)
    data = {}
    for key, leaf in template.items(True, True):
        shape = (n, *leaf.shape[template.ndim :])
        if leaf.dtype.is_floating_point:
            data[key] = torch.randn(shape, generator=gen, dtype=leaf.dtype)
        else:
            data[key] = torch.zeros(shape, dtype=leaf.dtype)
    td = TensorDict(batch_size=[n])
    for key, value in data.items():
        td.set(key, value)
    last = (t % EPISODE_LEN == EPISODE_LEN - 1).unsqueeze(-1)
    for prefix in ((), ("next",)):
        offset = 1 if prefix else 0
        if (*prefix, "step_count") in data:
            td.set((*prefix, "step_count"), (t % EPISODE_LEN + offset).unsqueeze(-1))
    td.set(("next", "done"), last)
    td.set(("next", "truncated"), last.clone())
    td.set(("next", "terminated"), torch.zeros_like(last))
    td.set(("collector", "traj_ids"), env_id + num_envs * (t // EPISODE_LEN))
    return td


def filled_buffer(cfg, tmpdir: Path):
    """Our replay buffer after 26 batches of 2048: full (50k) with the write cursor wrapped."""
    env = make_env(cfg.env.name, num_envs=cfg.env.num_envs)
    template = env.fake_tensordict()
    loss = make_loss(cfg, env)
    env.close()
    buffer = make_replay_buffer(cfg, tmpdir, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    steps = cfg.collector.frames_per_batch // cfg.env.num_envs
    batches = math.ceil(cfg.buffer.size / cfg.collector.frames_per_batch) + 1
    for index in range(batches):
        buffer.extend(synthetic_batch(template, index, cfg.env.num_envs, steps, gen))
    return buffer, loss


def bench_relabel(args, tmpdir: Path) -> dict:
    cfg = base_config(f"buffer.size={BUFFER_SIZE}")
    buffer, loss = filled_buffer(cfg, tmpdir)
    relabel(buffer, loss)  # warm-up; the first call also allocates value_target/advantage in the storage
    ms = [timed(lambda: relabel(buffer, loss)) * 1e3 for _ in range(args.repeats)]
    result = {
        "buffer_size": len(buffer),
        "write_count": int(buffer.write_count),
        "leaves_per_transition": len(list(buffer.storage.get(torch.arange(1)).keys(True, True))),
        "ms": statistics.median(ms),
        "ms_all": ms,
    }
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            relabel(buffer, loss)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.profile)
        result["profile"] = out.getvalue()
    return result


# ----------------------------------------------------------------------------- collection
class OurCollector:
    def __init__(self, cfg) -> None:
        self.env = make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=0)
        self.loss = make_loss(cfg, self.env)
        self.collector = make_collector(cfg, self.env, self.loss.actor_network)
        self.iterator = iter(self.collector)
        self.frames_per_batch = cfg.collector.frames_per_batch
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

    def __init__(self, name: str, num_envs: int, policy: nn.Module | None = None, std: torch.Tensor | None = None):
        self.env = gym.make_vec(
            name,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        )
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


def bench_collection(args, tmpdir: Path) -> dict:
    cfg = base_config()
    cfg1 = base_config("env.num_envs=1")
    frames = args.collect_batches * cfg.collector.frames_per_batch
    ours = OurCollector(cfg)
    # plain-torch policy with our actor's mean network (no observation norm: it is the identity here)
    space = ours.env.action_spec_unbatched.space
    plain = PlainAWR(ours.loss, cfg, space.low.float(), space.high.float())

    def plain_policy(obs: torch.Tensor) -> torch.Tensor:
        return plain.mid + plain.half * plain.actor((obs - plain.loc) / plain.scale)

    runners = {
        "ours": ours,
        "ours_1env": OurCollector(cfg1),
        "raw_single": RawSingle(cfg.env.name),
        "raw_vector": RawVector(cfg.env.name, cfg.env.num_envs),
        "raw_vector_policy": RawVector(cfg.env.name, cfg.env.num_envs, plain_policy, plain.var.sqrt()),
    }
    for name, runner in runners.items():
        if name.startswith("raw"):
            runner.run(min(frames, 1024))  # warm-up
    fps: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for rep in range(args.repeats):
        for name in order if rep % 2 == 0 else order[::-1]:
            fps[name].append(runners[name].run(frames))
    profile = None
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        ours.run(2 * cfg.collector.frames_per_batch)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.profile)
        profile = out.getvalue()
    for runner in runners.values():
        runner.close()
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
    if profile is not None:
        result["profile"] = profile
    return result


# ----------------------------------------------------------------------------- iteration
def fill_to_capacity(buffer) -> None:
    """Extend ``buffer`` with copies of its content (fresh trajectory ids) until it is full and its cursor has wrapped.

    The steady state of a long run: relabel and both phases then work over the buffer's whole capacity.
    """
    first = buffer.storage.get(torch.arange(len(buffer)))
    ids = first.get(("collector", "traj_ids"))
    span = int(ids.max()) + 1
    for k in range(1, math.ceil(buffer.storage.max_size / len(first)) + 1):
        chunk = first.clone()
        chunk.set(("collector", "traj_ids"), ids + k * span)
        buffer.extend(chunk)


def bench_iteration(args, tmpdir: Path) -> dict:
    """Full AWR iterations through build_trainer, timed with marks registered at the trainer's stages.

    The first iteration is a warm-up: after the buffer takes its first batch, copies of it (with
    fresh trajectory ids) fill the buffer to capacity with the write cursor wrapped, so the timed
    iterations run at the steady state of a long run (relabel and snapshot over 50k transitions).
    """
    iterations = args.iterations
    extra = ["optim.actor_steps=100", "optim.critic_steps=20"] if args.quick else []
    defaults = base_config()
    cfg = base_config(
        f"eval.interval={10**9}",
        f"checkpoint.interval={10**9}",
        f"collector.total_frames={(iterations + 1) * defaults.collector.frames_per_batch}",
        *extra,
    )
    trainer, evaluator, _ = build_trainer(cfg, tmpdir / "run", progress_bar=False)
    buffer = trainer.replay_buffer
    marks: dict[str, list[float]] = {"batch": [], "optim_start": [], "optim_end": [], "iter_end": []}

    def mark(name: str) -> None:
        marks[name].append(time.perf_counter())

    def on_batch(batch) -> None:
        if not marks["batch"]:
            fill_to_capacity(buffer)
        mark("batch")

    trainer.register_op("batch_process", on_batch)
    trainer.register_op("pre_steps_log", lambda batch: mark("optim_start"))
    trainer.register_op("pre_optim_steps", lambda: mark("optim_end"))
    ckpt: dict[str, float] = {}

    def on_iter_end(batch) -> None:
        mark("iter_end")
        if len(marks["iter_end"]) == iterations + 1:  # last one: time a checkpoint while the collector is up
            try:
                ckpt["s"] = timed(lambda: trainer.save_trainer(force_save=True))
            except Exception as err:  # noqa: BLE001 - an optional figure; report why it is missing
                log(f"checkpoint timing skipped: {type(err).__name__}: {err}")

    trainer.register_op("post_steps_log", on_iter_end)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    n = len(marks["iter_end"])
    it = [marks["iter_end"][i] - marks["iter_end"][i - 1] for i in range(1, n)]
    collect = [marks["batch"][i] - marks["iter_end"][i - 1] for i in range(1, n)]
    optim = [marks["optim_end"][i] - marks["optim_start"][i] for i in range(1, n)]
    other = [t - c - o for t, c, o in zip(it, collect, optim, strict=True)]
    s_iter = statistics.median(it)

    # The optimisation stage split into its hooks, by separate calls on the trainer's own full buffer.
    loss = trainer.loss_module
    keys = loss.tensor_keys
    actor_opt, critic_opt = make_optimizers(cfg, loss)
    relabel_s = statistics.median(timed(lambda: relabel(buffer, loss)) for _ in range(args.repeats))
    phases = {}
    for name, fn, phase_keys, opt, steps in (
        (
            "critic_phase",
            loss.value_loss,
            [*loss.value_network.in_keys, keys.value_target],
            critic_opt,
            cfg.optim.critic_steps,
        ),
        (
            "actor_phase",
            loss.actor_loss,
            [*loss.actor_network.in_keys, keys.action, keys.advantage],
            actor_opt,
            cfg.optim.actor_steps,
        ),
    ):
        hook = RegressionPhase(
            name=name,
            loss_fn=fn,
            keys=phase_keys,
            replay_buffer=buffer,
            optimizer=opt,
            steps=steps,
            batch_size=cfg.optim.batch_size,
        )
        repeats = args.repeats if name == "critic_phase" else min(args.repeats, 3)  # the actor phase takes ~2 s
        phases[name] = statistics.median(timed(hook) for _ in range(repeats))
    eval_s = timed(evaluator.evaluate)
    ckpt_s = ckpt.get("s")
    iters_1m = 1e6 / cfg.collector.frames_per_batch
    with_extras = s_iter * iters_1m + eval_s * iters_1m / defaults.eval.interval
    if ckpt_s is not None:
        with_extras += ckpt_s * iters_1m / defaults.checkpoint.interval
    return {
        "quick_reduced_steps": bool(args.quick),
        "frames_per_batch": cfg.collector.frames_per_batch,
        "critic_steps": cfg.optim.critic_steps,
        "actor_steps": cfg.optim.actor_steps,
        "buffer_size": len(buffer),
        "iterations_timed": len(it),
        "s_per_iteration": s_iter,
        "s_per_iteration_all": it,
        "split_s": {
            "collect_and_extend": statistics.median(collect),
            "optim_stage": statistics.median(optim),
            "other": statistics.median(other),
            "relabel_each": relabel_s,
            "critic_phase": phases["critic_phase"],
            "actor_phase": phases["actor_phase"],
        },
        "eval_s": eval_s,
        "checkpoint_s": ckpt_s,
        "train_call_s": total,
        "projected_minutes_1M": s_iter * iters_1m / 60,
        "projected_minutes_1M_with_eval_ckpt": with_extras / 60,
        "reference_minutes_1M": REFERENCE_MINUTES_1M,
    }


LEARNER_RECIPES = {"sgd": "recipe=original", "adam": "recipe=tuned"}  # HalfCheetah: SGD + momentum, or Adam


def bench_learner(args, tmpdir: Path) -> dict:
    """One AWR learner phase (critic_steps + actor_steps over a full 50k buffer) per optimizer and update variant.

    For each optimizer (SGD with momentum, ``recipe=original``; Adam, ``recipe=tuned``, the default) the
    ``RegressionPhase`` hooks run eager and compiled (``optim.compile``, the default: one graph per step), and on a
    GPU also CUDA-graphed; the baseline is the same phases in plain eager PyTorch on the same device. Every
    repeat times the baseline and then each variant back to back, so the ratio is a median of paired ratios.
    ``--no-compile`` leaves the compiled variants out (their first call compiles, ~10 s on a CPU).
    """
    quick = ["optim.actor_steps=100", "optim.critic_steps=20"] if args.quick else []
    results: dict = {"variants": {}}
    for optimizer, recipe in LEARNER_RECIPES.items():
        cfg = base_config(recipe, *quick)
        results.update(critic_steps=cfg.optim.critic_steps, actor_steps=cfg.optim.actor_steps)
        device = resolve_device(cfg.device)
        (tmpdir / optimizer).mkdir(exist_ok=True)
        s = setup_update(cfg, tmpdir / optimizer)
        variants: list[tuple[str, dict]] = [("eager", {})]
        if not args.no_compile:
            variants.append(("compiled", {"compile": True}))
        if device.type == "cuda":
            variants.append(("cudagraphs", {"cudagraphs": True}))
            if not args.no_compile:
                variants.append(("compiled+cudagraphs", {"compile": True, "cudagraphs": True}))
        plain = s["plain"].to(device)
        tensors = tuple(t.to(device) for t in s["tensors"])

        def plain_learner(plain=plain, t=tensors, cfg=cfg) -> None:
            plain_phase(plain.value_loss, (t[0], t[3]), plain.critic_opt, cfg.optim.critic_steps, cfg.optim.batch_size)
            plain_phase(plain.actor_loss, t[:3], plain.actor_opt, cfg.optim.actor_steps, cfg.optim.batch_size)

        runs: dict[str, Callable[[], object]] = {"plain": plain_learner}
        for name, kwargs in variants:
            loss = copy.deepcopy(s["loss"]).to(device)
            vcfg = base_config(recipe, f"optim.cudagraphs={bool(kwargs.get('cudagraphs'))}", f"device={device.type}")
            actor_opt, critic_opt = make_optimizers(vcfg, loss)
            buffer = make_replay_buffer(cfg, tmpdir / optimizer, device)
            buffer.extend(s["buffer"].storage.get(torch.arange(len(s["buffer"]))))
            phases = [
                RegressionPhase(phase, fn, keys, buffer, opt, steps, cfg.optim.batch_size, **kwargs)
                for phase, fn, keys, opt, steps in (
                    ("critic_phase", loss.value_loss, s["critic_keys"], critic_opt, cfg.optim.critic_steps),
                    ("actor_phase", loss.actor_loss, s["actor_keys"], actor_opt, cfg.optim.actor_steps),
                )
            ]
            runs[name] = lambda phases=phases: [phase() for phase in phases]
        for name, run in runs.items():
            log(f"learner: {optimizer}, {name} on {device}: warm-up{' (compiles)' if 'compiled' in name else ''} ...")
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                run()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[name].append(time.perf_counter() - start)
        for name in runs:
            if name != "plain":
                results["variants"][f"{optimizer} {name} ({device.type})"] = {
                    "s": statistics.median(times[name]),
                    "plain_s": statistics.median(times["plain"]),
                    "ratio": paired(times[name], times["plain"]),
                    "s_all": times[name],
                    "plain_s_all": times["plain"],
                }
    return results


# ----------------------------------------------------------------------------- report
def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{max(digits - 1 - int(math.floor(math.log10(abs(x)))), 0)}f}"


def table(results: dict) -> str:
    rows = [
        "| section | measurement | ours | baseline | ratio ours/baseline | unit |",
        "|---|---|---:|---:|---:|---|",
    ]

    def row(section, what, ours, base=None, ratio=None, unit=""):
        ratio_s = f"{ratio:.2f}×" if ratio is not None else "–"
        rows.append(f"| {section} | {what} | {fmt(ours)} | {fmt(base)} | {ratio_s} | {unit} |")

    if "update" in results:
        u = results["update"]
        for phase, label in (("actor", "actor step"), ("critic", "critic step"), ("step", "actor + critic step")):
            r = u[phase]
            row("update", f"{label} vs plain PyTorch", r["ours_ms"], r["plain_ms"], r["ratio"], "ms/step")
        r = u["step"]
        row(
            "update",
            "actor + critic via RegressionPhase hooks vs plain",
            r["hook_ms"],
            r["plain_ms"],
            r["hook_ratio"],
            "ms/step",
        )
    if "learner" in results:
        r = results["learner"]
        steps = f"{r['critic_steps']} critic + {r['actor_steps']} actor steps"
        for name, v in r["variants"].items():
            row("learner", f"learner phase ({steps}), {name} vs plain PyTorch eager", v["s"], v["plain_s"],
                v["ratio"], "s")
    if "relabel" in results:
        r = results["relabel"]
        row("relabel", f"relabel over {r['buffer_size']:,} transitions", r["ms"], unit="ms")
    if "collection" in results:
        c = results["collection"]
        ne = c["num_envs"]
        pairs = (
            ("ours", "raw_vector", "ratio_vs_raw_vector", f"our collector ({ne} envs) vs gymnasium sync vector ({ne})"),
            ("ours", "raw_single", "ratio_vs_raw_single", f"our collector ({ne} envs) vs gymnasium single env"),
            ("ours_1env", "raw_single", "ratio_1env_vs_raw_single", "our collector (1 env) vs gymnasium single env"),
            ("ours", "raw_vector_policy", "ratio_vs_raw_vector_policy", f"our collector ({ne} envs) vs sync vector"),
        )
        for ours, base, ratio, label in pairs:
            how = " + plain-torch policy" if base.endswith("policy") else ", random actions"
            row("collection", label + how, c[f"{ours}_fps"], c[f"{base}_fps"], c[ratio], "frames/s")
    if "iteration" in results:
        r = results["iteration"]
        sp = r["split_s"]
        note = " (quick: reduced steps)" if r["quick_reduced_steps"] else ""
        steps = f"{r['frames_per_batch']} frames + {r['critic_steps']} critic + {r['actor_steps']} actor steps"
        what = f"one iteration ({steps}, 50k buffer; median of {r['iterations_timed']}){note}"
        row("iteration", what, r["s_per_iteration"], unit="s")
        row("iteration", "↳ collect + state normaliser + extend buffer", sp["collect_and_extend"], unit="s")
        row("iteration", "↳ optimisation stage (2 relabels + both phases)", sp["optim_stage"], unit="s")
        row("iteration", "↳ of which: relabel, each of 2 (separate call)", sp["relabel_each"], unit="s")
        row("iteration", "↳ of which: critic phase (separate call)", sp["critic_phase"], unit="s")
        row("iteration", "↳ of which: actor phase (separate call)", sp["actor_phase"], unit="s")
        row("iteration", "↳ other (weight update, logging)", sp["other"], unit="s")
        row("iteration", "evaluation (eval.episodes, deterministic)", r["eval_s"], unit="s")
        row("iteration", "checkpoint save (50k buffer)", r["checkpoint_s"], unit="s")
        row(
            "iteration",
            "projected 1M frames, training only vs original AWR (its hardware)",
            r["projected_minutes_1M"],
            r["reference_minutes_1M"],
            r["projected_minutes_1M"] / r["reference_minutes_1M"],
            "min",
        )
        row(
            "iteration",
            "projected 1M frames incl. default eval + checkpoint intervals",
            r["projected_minutes_1M_with_eval_ckpt"],
            unit="min",
        )
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmark.json"), help="where the JSON goes")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 5, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="update steps per timed block (default 200)")
    parser.add_argument("--collect-batches", type=int, default=None, help="2048-frame batches per collection repeat")
    parser.add_argument("--iterations", type=int, default=None, help="timed AWR iterations after the warm-up one")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="few repeats and steps: a smoke run under 60 s")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile our update step, relabel and collector; print the top N functions",
    )
    parser.add_argument("--no-compile", action="store_true", help="learner: leave out the compiled variants")
    parser.add_argument("overrides", nargs="*", help="config overrides for every section, e.g. env.num_envs=16")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"repeats": (2, 5), "steps": (20, 200), "collect_batches": (1, 2), "iterations": (1, 3)}
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown or not args.sections:
        parser.error(f"unknown --sections {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    CONFIG_OVERRIDES[:] = args.overrides
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # keep its INFO lines out of the printed table
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = machine_info(args.threads)
    header = (
        f"CPU: {info['cpu']} ({info['cpu_count']} cores) | torch {info['torch']} ({args.threads} thread(s)) | "
        f"torchrl {info['torchrl']} | tensordict {info['tensordict']} | gymnasium {info['gymnasium']} | "
        f"mujoco {info['mujoco']} | load avg at start {info['loadavg_start'][0]:.2f}"
    )
    print(header, flush=True)
    benches = {
        "update": bench_update,
        "learner": bench_learner,
        "relabel": bench_relabel,
        "collection": bench_collection,
        "iteration": bench_iteration,
    }
    results: dict = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="awr-bench-") as tmp:
        for name in SECTIONS:
            if name not in args.sections:
                continue
            log(f"{name} ...")
            start = time.perf_counter()
            section_dir = Path(tmp) / name
            section_dir.mkdir()
            results[name] = benches[name](args, section_dir)
            timings[name] = time.perf_counter() - start
            log(f"{name} done in {timings[name]:.1f} s")
    info["loadavg_end"] = list(os.getloadavg())
    report = {
        "machine": info,
        "settings": {
            "quick": args.quick,
            "repeats": args.repeats,
            "steps_per_block": args.steps,
            "collect_batches": args.collect_batches,
            "iterations": args.iterations,
            "threads": args.threads,
            "sections": args.sections,
        },
        "section_wall_s": timings,
        **results,
    }
    print()
    print(f"AWR benchmark ({ENV_NAME}; medians over {args.repeats} repeats; ratios are medians of per-repeat ratios)")
    print()
    print(table(results))
    if "update" in results:
        u = results["update"]
        print(
            f"\nupdate: batch {u['batch_size']}, nets {tuple(u['hidden_sizes'])}, {u['steps_per_block']} steps per "
            f"block; advantages standardised per minibatch: {u['advantage_standardised_per_minibatch']}; "
            f"ours vs plain loss values: max rel. diff {u['check']['max_rel_diff']:.1e}"
        )
    print(
        f"\nload avg at end {info['loadavg_end'][0]:.2f}; wall time per section (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
    for name in ("update", "relabel", "collection"):
        if "profile" in results.get(name, {}):
            print(f"\ncProfile of {name}:\n{results[name]['profile']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
