"""Advantage-Weighted Regression in plain PyTorch and gymnasium, written the way a CleanRL user would write it.

No TorchRL, no tensordict: ``nn.Sequential`` networks, plain tensors, gymnasium's synchronous vector env, a
time-major FIFO buffer and a loop over time for TD(λ), eager updates with ``torch.optim``. The end-to-end benchmark
runs it as a process of its own, with every setting taken from the project's resolved config
(:func:`bench.common.plain_args`)::

    python -m bench.plain --env-id HalfCheetah-v5 --total-frames 204800 ... --out /tmp/plain   # (from scripts/)

:class:`PlainAWR` (the networks, both losses, the optimizers) is also the baseline of the ``update`` and
``learner`` sections, loaded there with our networks' weights (:func:`bench.common.plain_copy`).

The algorithm, step by step as ``torchrl_awr`` runs it (``AWRTrainer``'s hooks): collect ``frames_per_batch``
frames with the Gaussian policy; fit the state normaliser on the first ``normalizer_samples`` observations; append
to the FIFO buffer; TD(λ) targets over the whole buffer with the current critic; ``critic_steps`` critic
regressions; targets and advantages again with the new critic, advantages standardised over the buffer;
``actor_steps`` advantage-weighted regressions; every ``eval_interval`` iterations a deterministic evaluation and
every ``checkpoint_interval`` a checkpoint. One difference of layout: the buffer holds ``buffer_size // num_envs``
steps of every env (time-major, as CleanRL stores rollouts), so up to ``num_envs - 1`` transitions fewer.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

ADVANTAGE_EPS = 1e-5  # (A - mean) / (std + eps), as torchrl_awr.loss.standardize
MIN_STD = 1e-2  # the state normaliser's std floor, as torchrl_awr's UpdateObservationNorm
OUTPUT_INIT = 0.01  # the actor's output layer: uniform in ±this, bias 0 (the original's init)


@dataclass
class Args:
    """Every setting of a run; the command line takes each as ``--name-with-dashes``."""

    env_id: str
    seed: int
    threads: int
    total_frames: int
    num_envs: int
    frames_per_batch: int
    buffer_size: int
    hidden_sizes: tuple[int, ...]
    activation: str  # relu | elu | tanh, after each hidden layer
    layer_norm: bool  # a LayerNorm after each hidden linear layer, before its activation
    action_std: float  # in units of half the action range
    normalizer_samples: int
    gamma: float
    lmbda: float
    beta: float
    max_weight: float
    normalize_advantage: str  # buffer (standardised over the buffer) | batch (per minibatch) | none
    action_bound_penalty: float
    optimizer: str  # sgd (with momentum) | adam
    actor_lr: float
    critic_lr: float
    momentum: float
    actor_steps: int
    critic_steps: int
    batch_size: int
    eval_interval: int
    eval_episodes: int
    checkpoint_interval: int
    keep_checkpoints: int
    out: str  # checkpoints, policy.pt and summary.json go here


ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}  # as torchrl_awr.models.ACTIVATIONS


def mlp(in_features: int, out_features: int, args: Args) -> nn.Sequential:
    """An MLP of ``args.hidden_sizes`` (Linear, LayerNorm if ``args.layer_norm``, activation) with PyTorch's default
    ``nn.Linear`` init."""
    sizes = (in_features, *args.hidden_sizes)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), *([nn.LayerNorm(b)] if args.layer_norm else []), ACTIVATIONS[args.activation]()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out_features))


class PlainAWR:
    """AWR's networks, losses and optimizers on plain tensors.

    The actor's MLP gives the Gaussian mean in ``[-1, 1]`` units, mapped onto the action bounds; its std is fixed
    at ``action_std`` half ranges. The critic predicts values in units of ``1 / (1 - γ)``. Both read observations
    standardised with ``loc`` / ``scale`` (set by :class:`ObsStats`).
    """

    def __init__(self, args: Args, obs_dim: int, low: Tensor, high: Tensor) -> None:
        self.loc, self.scale = torch.zeros(obs_dim), torch.ones(obs_dim)
        self.actor = mlp(obs_dim, low.shape[-1], args)
        nn.init.uniform_(self.actor[-1].weight, -OUTPUT_INIT, OUTPUT_INIT)
        nn.init.zeros_(self.actor[-1].bias)
        self.critic = mlp(obs_dim, 1, args)
        self.mid, self.half = (high + low) / 2, (high - low) / 2
        self.std = self.half * args.action_std
        self.var, self.log_std = self.std.pow(2), self.std.log()
        self.value_scale = 1.0 / (1.0 - args.gamma) if args.gamma < 1 else 1.0
        self.beta, self.log_clip = args.beta, math.log(args.max_weight)
        self.normalize = args.normalize_advantage == "batch"
        self.penalty = args.action_bound_penalty

        def make(params: Iterator[nn.Parameter], lr: float) -> torch.optim.Optimizer:
            if args.optimizer == "adam":
                return torch.optim.Adam(params, lr=lr)
            return torch.optim.SGD(params, lr=lr, momentum=args.momentum)

        self.actor_opt = make(self.actor.parameters(), args.actor_lr)
        self.critic_opt = make(self.critic.parameters(), args.critic_lr)

    def to(self, device: torch.device) -> PlainAWR:
        """A copy on ``device`` with fresh optimizers."""
        other = copy.copy(self)
        for name in ("loc", "scale", "mid", "half", "std", "var", "log_std"):
            setattr(other, name, getattr(self, name).to(device))
        other.actor, other.critic = copy.deepcopy(self.actor).to(device), copy.deepcopy(self.critic).to(device)
        other.actor_opt = type(self.actor_opt)(other.actor.parameters(), **self.actor_opt.defaults)
        other.critic_opt = type(self.critic_opt)(other.critic.parameters(), **self.critic_opt.defaults)
        return other

    def normalised_mean(self, obs: Tensor) -> Tensor:
        return self.actor((obs - self.loc) / self.scale)

    def mean(self, obs: Tensor) -> Tensor:
        """The policy's mean action (the deterministic policy)."""
        return self.mid + self.half * self.normalised_mean(obs)

    def sample(self, obs: Tensor) -> Tensor:
        mean = self.mean(obs)
        return mean + self.std * torch.randn_like(mean)

    def value(self, obs: Tensor) -> Tensor:
        return self.critic((obs - self.loc) / self.scale) * self.value_scale

    def actor_loss(self, obs: Tensor, action: Tensor, advantage: Tensor) -> Tensor:
        """``−min(exp(A / β), max_weight) · log π(a|s)`` plus the penalty on a mean leaving the action bounds."""
        mean_n = self.normalised_mean(obs)
        mean = self.mid + self.half * mean_n
        log_prob = (-(action - mean).pow(2) / (2 * self.var) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        adv = advantage.squeeze(-1)
        if self.normalize:
            adv = standardize(adv)
        weight = (adv / self.beta).clamp_max(self.log_clip).exp()
        violation = (mean_n - 1).clamp_min(0).pow(2) + (mean_n + 1).clamp_max(0).pow(2)
        return (-weight * log_prob + self.penalty * 0.5 * violation.sum(-1)).mean()

    def value_loss(self, obs: Tensor, target: Tensor) -> Tensor:
        """``½ ((R − V(s)) / value_scale)²``."""
        return (0.5 * ((target - self.value(obs)) / self.value_scale).pow(2)).mean()


def standardize(advantage: Tensor) -> Tensor:
    """``(A − mean) / (std + 1e-5)`` with float64 statistics."""
    wide = advantage.double()
    return ((wide - wide.mean()) / (wide.std(unbiased=False) + ADVANTAGE_EPS)).to(advantage.dtype)


def minibatches(n: int, batch_size: int, steps: int, device: torch.device | None = None) -> Iterator[Tensor]:
    """``steps`` index tensors of ``batch_size``, from shuffled passes over ``range(n)`` (remainders skipped)."""
    per_pass = n // batch_size
    perm = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if step % per_pass == 0:
            perm = torch.randperm(n, device=device)
        start = (step % per_pass) * batch_size
        yield perm[start : start + batch_size]


def regress(
    loss_fn: Callable[..., Tensor],
    tensors: tuple[Tensor, ...],
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch_size: int,
) -> Tensor:
    """``steps`` minibatch updates of ``loss_fn(*minibatch)``; returns the summed loss (a tensor: no sync per step)."""
    total = torch.zeros(())
    for idx in minibatches(tensors[0].shape[0], batch_size, steps, tensors[0].device):
        loss = loss_fn(*(t[idx] for t in tensors))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total = total + loss.detach()
    return total


class ObsStats:
    """Mean and std of the observations over the first ``max_samples`` samples (std floored), then frozen."""

    def __init__(self, obs_dim: int, max_samples: int) -> None:
        self.max_samples = max_samples
        self.count = 0
        self.total = torch.zeros(obs_dim, dtype=torch.float64)
        self.total_sq = torch.zeros(obs_dim, dtype=torch.float64)

    def update(self, agent: PlainAWR, obs: Tensor) -> None:
        if self.count >= self.max_samples:
            return
        obs = obs.reshape(-1, obs.shape[-1]).double()
        self.count += obs.shape[0]
        self.total += obs.sum(0)
        self.total_sq += obs.pow(2).sum(0)
        mean = self.total / self.count
        std = (self.total_sq / self.count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(MIN_STD)
        agent.loc, agent.scale = mean.float(), std.float()


class Buffer:
    """FIFO buffer of ``capacity`` steps of ``num_envs`` envs, time-major: ``[capacity, num_envs, ...]``."""

    KEYS = ("obs", "action", "reward", "next_obs", "terminated", "done")

    def __init__(self, capacity: int, num_envs: int, obs_dim: int, act_dim: int) -> None:
        shapes = {"obs": (obs_dim,), "action": (act_dim,), "reward": (), "next_obs": (obs_dim,)}
        self.data = {k: torch.zeros(capacity, num_envs, *s) for k, s in shapes.items()}
        for key in ("terminated", "done"):
            self.data[key] = torch.zeros(capacity, num_envs, dtype=torch.bool)
        self.capacity, self.cursor, self.size = capacity, 0, 0

    def add(self, batch: dict[str, Tensor]) -> None:
        steps = batch["obs"].shape[0]
        idx = (self.cursor + torch.arange(steps)) % self.capacity
        for key in self.KEYS:
            self.data[key][idx] = batch[key]
        self.cursor = (self.cursor + steps) % self.capacity
        self.size = min(self.size + steps, self.capacity)

    def chronological(self) -> dict[str, Tensor]:
        """The content, oldest step first."""
        start = self.cursor if self.size == self.capacity else 0
        idx = (start + torch.arange(self.size)) % self.capacity
        return {key: value[idx] for key, value in self.data.items()}


@torch.no_grad()
def td_lambda(agent: PlainAWR, data: dict[str, Tensor], gamma: float, lmbda: float) -> tuple[Tensor, Tensor]:
    """TD(λ) returns and advantages ``[T, num_envs]`` over time-ordered data; the newest step bootstraps V(s')."""
    value = agent.value(data["obs"]).squeeze(-1)
    next_value = agent.value(data["next_obs"]).squeeze(-1) * ~data["terminated"]
    returns = torch.empty_like(value)
    g = next_value[-1]  # beyond the newest step: V(s'), as at a truncation
    for t in reversed(range(value.shape[0])):
        g = torch.where(data["done"][t], next_value[t], g)
        g = returns[t] = data["reward"][t] + gamma * ((1 - lmbda) * next_value[t] + lmbda * g)
    return returns, returns - value


@torch.no_grad()
def evaluate(agent: PlainAWR, envs: gym.vector.VectorEnv, max_steps: int) -> Tensor:
    """Return of each eval env's first episode under the mean action."""
    obs, _ = envs.reset()
    returns = np.zeros(envs.num_envs)
    finished = np.zeros(envs.num_envs, dtype=bool)
    for _ in range(max_steps):
        action = agent.mean(torch.as_tensor(obs, dtype=torch.float32)).numpy()
        obs, reward, terminated, truncated, _ = envs.step(action)
        returns += reward * ~finished
        finished |= terminated | truncated
        if finished.all():
            break
    return torch.as_tensor(returns)


def make_envs(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    return gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )


def collect(envs: gym.vector.VectorEnv, agent: PlainAWR, obs: np.ndarray, steps: int) -> tuple[dict, np.ndarray]:
    """``steps`` steps of every env with the Gaussian policy: the batch ``[steps, num_envs, ...]`` and the last obs."""
    batch: dict[str, list[Tensor]] = {key: [] for key in Buffer.KEYS}
    for _ in range(steps):
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        with torch.no_grad():
            action = agent.sample(obs_t)
        next_obs, reward, terminated, truncated, info = envs.step(action.numpy())
        done = terminated | truncated
        real_next = next_obs.copy()
        if done.any():  # same-step autoreset: next_obs is the reset observation, the last one is in info
            real_next[done] = np.stack(info["final_obs"][done])
        for key, value in (
            ("obs", obs_t),
            ("action", action),
            ("reward", torch.as_tensor(reward, dtype=torch.float32)),
            ("next_obs", torch.as_tensor(real_next, dtype=torch.float32)),
            ("terminated", torch.as_tensor(terminated)),
            ("done", torch.as_tensor(done)),
        ):
            batch[key].append(value)
        obs = next_obs
    return {key: torch.stack(values) for key, values in batch.items()}, obs


def update(agent: PlainAWR, buffer: Buffer, args: Args) -> None:
    """Targets, critic phase, targets and advantages with the new critic, actor phase."""
    data = buffer.chronological()
    obs, action = data["obs"].flatten(0, 1), data["action"].flatten(0, 1)
    target, _ = td_lambda(agent, data, args.gamma, args.lmbda)
    critic_loss = regress(
        agent.value_loss, (obs, target.reshape(-1, 1)), agent.critic_opt, args.critic_steps, args.batch_size
    )
    _, advantage = td_lambda(agent, data, args.gamma, args.lmbda)
    advantage = advantage.reshape(-1, 1)
    if args.normalize_advantage == "buffer":
        advantage = standardize(advantage)
    actor_loss = regress(agent.actor_loss, (obs, action, advantage), agent.actor_opt, args.actor_steps, args.batch_size)
    if not (math.isfinite(critic_loss.item()) and math.isfinite(actor_loss.item())):
        raise FloatingPointError("the loss became non-finite")


def save_checkpoint(path: Path, agent: PlainAWR, stats: ObsStats, buffer: Buffer, frames: int) -> None:
    """Everything a resumed run would need: networks, optimizers, normaliser, buffer, RNG."""
    torch.save(
        {
            "frames": frames,
            "actor": agent.actor.state_dict(),
            "critic": agent.critic.state_dict(),
            "actor_opt": agent.actor_opt.state_dict(),
            "critic_opt": agent.critic_opt.state_dict(),
            "obs_stats": {"count": stats.count, "total": stats.total, "total_sq": stats.total_sq},
            "buffer": {**buffer.data, "cursor": buffer.cursor, "size": buffer.size},
            "rng": torch.get_rng_state(),
        },
        path,
    )


def train(args: Args) -> dict:
    """One AWR run; returns its summary (also in ``<out>/summary.json``; the evaluations are in ``eval.csv``)."""
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    envs, eval_envs = make_envs(args.env_id, args.num_envs), make_envs(args.env_id, args.eval_episodes)
    space = envs.single_action_space
    obs_dim = envs.single_observation_space.shape[0]
    agent = PlainAWR(args, obs_dim, torch.as_tensor(space.low).float(), torch.as_tensor(space.high).float())
    stats = ObsStats(obs_dim, args.normalizer_samples)
    buffer = Buffer(args.buffer_size // args.num_envs, args.num_envs, obs_dim, space.shape[0])
    max_steps = gym.spec(args.env_id).max_episode_steps or 1000
    obs, _ = envs.reset(seed=args.seed)
    eval_envs.reset(seed=args.seed + 10_000)
    iterations = math.ceil(args.total_frames / args.frames_per_batch)
    history: list[dict[str, float]] = []
    checkpoints: list[Path] = []
    frames = 0

    def evaluate_now() -> None:
        returns = evaluate(agent, eval_envs, max_steps)
        history.append(
            {
                "frames": frames,
                "wall_time_s": time.perf_counter() - start,
                "eval_return_mean": returns.mean().item(),
                "eval_return_std": returns.std(unbiased=False).item(),
            }
        )

    for iteration in range(1, iterations + 1):
        batch, obs = collect(envs, agent, obs, args.frames_per_batch // args.num_envs)
        frames += args.frames_per_batch
        stats.update(agent, batch["obs"])
        buffer.add(batch)
        update(agent, buffer, args)
        if iteration % args.eval_interval == 0:
            evaluate_now()
        if iteration % args.checkpoint_interval == 0 or iteration == iterations:
            checkpoints.append(out / f"checkpoint-{frames}.pt")
            save_checkpoint(checkpoints[-1], agent, stats, buffer, frames)
            while len(checkpoints) > args.keep_checkpoints:
                checkpoints.pop(0).unlink()
    if not history or history[-1]["frames"] != frames:
        evaluate_now()
    torch.save({"actor": agent.actor.state_dict(), "loc": agent.loc, "scale": agent.scale}, out / "policy.pt")
    envs.close()
    eval_envs.close()
    with (out / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    summary = {
        "frames": frames,
        "final_eval_return_mean": history[-1]["eval_return_mean"],
        "final_eval_return_std": history[-1]["eval_return_std"],
        "wall_time_s": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def to_argv(args: Args) -> list[str]:
    """The command line that :func:`parse_args` reads back into ``args``."""
    argv = []
    for f in dataclasses.fields(Args):
        value = getattr(args, f.name)
        argv += [f"--{f.name.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else [value])]
    return argv


BOOLEAN = {"True": True, "False": False}  # as to_argv writes them


def parse_args(argv: list[str]) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        tuple_of = f.type.startswith("tuple[")
        kind = int if tuple_of else {"str": str, "int": int, "float": float, "bool": BOOLEAN.__getitem__}[f.type]
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, required=True, nargs="+" if tuple_of else None)
    values = vars(parser.parse_args(argv))
    return Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


if __name__ == "__main__":
    train(parse_args(sys.argv[1:]))
