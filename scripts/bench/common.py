"""What every section shares: the config, timing and pairing, the plain baseline's setup, machine facts, the table."""

from __future__ import annotations

import cProfile
import io
import math
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import tensordict
import torch
import torchrl
from omegaconf import DictConfig
from torch import nn

from torchrl_awr.config import load_config
from torchrl_awr.models import observation_norm_of

from .plain import Args, PlainAWR

ENV_NAME = "HalfCheetah-v5"
BUFFER_SIZE = 50_000  # the synthetic buffers of the update, learner, relabel and iteration sections
CONFIG_OVERRIDES: list[str] = []  # key=value from the command line, applied to every section
QUICK_STEPS = ("optim.actor_steps=100", "optim.critic_steps=20")  # --quick: shorter phases

# one table row: section, measurement, ours, baseline, ratio ours/baseline, unit
Row = tuple[str, str, float | None, float | None, float | None, str]


@dataclass(frozen=True)
class Section:
    """A benchmark section: ``run(args, tmpdir)`` measures and returns its JSON part, ``rows`` turns that into rows."""

    name: str
    run: Callable[..., dict]
    rows: Callable[[dict], list[Row]]


def log(msg: str) -> None:
    print(f"[benchmark] {msg}", file=sys.stderr, flush=True)


def base_config(*overrides: str) -> DictConfig:
    """The defaults on ``ENV_NAME`` without a logger, then the command line's overrides, then ``overrides``."""
    return load_config([f"env.name={ENV_NAME}", "logger.backend=none", *CONFIG_OVERRIDES, *overrides])


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(ours: list[float], base: list[float]) -> float:
    """Median of per-repeat ratios ours/base."""
    return statistics.median(o / b for o, b in zip(ours, base, strict=True))


def interleaved(measure: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """``repeats`` figures of each measurement, all of them back to back in every repeat, in reversed order on odd
    repeats, so that a neighbouring job's load drifting over the run weighs on every measurement alike."""
    figures: dict[str, list[float]] = {name: [] for name in measure}
    order = list(measure)
    for rep in range(repeats):
        for name in order if rep % 2 == 0 else order[::-1]:
            figures[name].append(measure[name]())
    return figures


def profile(fn: Callable[[], object], top: int) -> str:
    """cProfile of ``fn()``: the ``top`` functions by own time, then by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def plain_args(cfg: DictConfig, out: str = "") -> Args:
    """The plain-PyTorch loop's settings, every one taken from our resolved config.

    Raises:
        ValueError: the config uses something the plain loop does not have.
    """
    if cfg.model.learn_std or cfg.model.tanh or cfg.loss.entropy_coeff:
        raise ValueError("the plain-PyTorch baseline has a Gaussian policy with a fixed std and no entropy bonus")
    return Args(
        env_id=cfg.env.name,
        seed=cfg.seed,
        threads=cfg.threads,
        total_frames=cfg.collector.total_frames,
        num_envs=cfg.env.num_envs,
        frames_per_batch=cfg.collector.frames_per_batch,
        buffer_size=cfg.buffer.size,
        hidden_sizes=tuple(cfg.model.hidden_sizes),
        activation=cfg.model.activation,
        layer_norm=cfg.model.layer_norm,
        action_std=cfg.model.action_std,
        normalizer_samples=cfg.model.normalizer_samples,
        gamma=cfg.loss.gamma,
        lmbda=cfg.loss.lmbda,
        beta=cfg.loss.beta,
        max_weight=cfg.loss.max_weight,
        normalize_advantage=cfg.loss.normalize_advantage,
        action_bound_penalty=cfg.loss.action_bound_penalty,
        optimizer=cfg.optim.optimizer,
        actor_lr=cfg.optim.actor_lr,
        critic_lr=cfg.optim.critic_lr,
        momentum=cfg.optim.momentum,
        actor_steps=cfg.optim.actor_steps,
        critic_steps=cfg.optim.critic_steps,
        batch_size=cfg.optim.batch_size,
        eval_interval=cfg.eval.interval,
        eval_episodes=cfg.eval.episodes,
        checkpoint_interval=cfg.checkpoint.interval,
        keep_checkpoints=cfg.checkpoint.keep_last,
        out=out,
    )


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def layers_with_weights(module: nn.Module) -> list[nn.Linear | nn.LayerNorm]:
    """The linear and LayerNorm layers, in order: what a network's weights are."""
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))]


def plain_copy(loss: nn.Module, cfg: DictConfig, low: torch.Tensor, high: torch.Tensor) -> PlainAWR:
    """A :class:`~bench.plain.PlainAWR` holding our loss's weights and normaliser statistics."""
    norm = observation_norm_of(loss.actor_network)
    plain = PlainAWR(plain_args(cfg), norm.loc.shape[-1], low, high)
    plain.loc, plain.scale = norm.loc.detach().clone(), norm.scale.detach().clone()
    for ours, theirs in ((loss.actor_network, plain.actor), (loss.value_network, plain.critic)):
        for src, dst in zip(layers_with_weights(ours), layers_with_weights(theirs), strict=True):
            dst.load_state_dict(src.state_dict())
    return plain


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


def fmt(x: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, thousands separated from 100 on; ``–`` for no figure."""
    if x is None:
        return "–"
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{max(digits - 1 - int(math.floor(math.log10(abs(x)))), 0)}f}"


def table(rows: list[Row]) -> str:
    """The Markdown table of ``rows``."""
    lines = [
        "| section | measurement | ours | baseline | ratio ours/baseline | unit |",
        "|---|---|---:|---:|---:|---|",
    ]
    for section, what, ours, base, ratio, unit in rows:
        ratio_s = f"{ratio:.2f}×" if ratio is not None else "–"
        lines.append(f"| {section} | {what} | {fmt(ours)} | {fmt(base)} | {ratio_s} | {unit} |")
    return "\n".join(lines)
