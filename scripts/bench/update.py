"""Sections ``update`` (one actor and one critic step against plain PyTorch) and ``relabel`` (TD(λ) over a full
buffer), both on synthetic HalfCheetah-shaped data; :func:`synthetic_learner` also feeds the ``learner`` section."""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tensordict import TensorDict
from torchrl.data import ReplayBuffer

from torchrl_awr import AWRLoss, make_env, relabel
from torchrl_awr.buffers import make_replay_buffer
from torchrl_awr.builders import make_loss, make_optimizers
from torchrl_awr.models import observation_norm_of
from torchrl_awr.update import AWRUpdate, CompiledCritic, shuffled_indices

from .common import (
    BUFFER_SIZE,
    Row,
    Section,
    base_config,
    interleaved,
    paired,
    plain_copy,
    profile,
    timed,
)
from .plain import PlainAWR, regress

EPISODE_LEN = 1000


@dataclass
class SyntheticLearner:
    """Our loss and optimizers, their plain copy, and one 50k buffer of random transitions for both."""

    loss: AWRLoss
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    plain: PlainAWR
    buffer: ReplayBuffer  # ours, holding ``full``
    full: TensorDict  # observation, action, advantage, value_target
    critic_keys: list
    actor_keys: list

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """``(observation, action, advantage, value_target)`` as plain tensors."""
        keys = self.loss.tensor_keys
        return tuple(self.full.get(k) for k in ("observation", keys.action, keys.advantage, keys.value_target))


def synthetic_learner(cfg: DictConfig, tmpdir: Path) -> SyntheticLearner:
    """The learner of ``cfg`` with the normaliser fitted to a buffer of random HalfCheetah-sized transitions."""
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
    norm = observation_norm_of(loss.actor_network)
    norm.loc.copy_(obs.mean(0))
    norm.scale.copy_(obs.std(0))
    keys = loss.tensor_keys
    full = TensorDict(
        {
            "observation": obs,
            keys.action: low + (high - low) * torch.rand(n, low.shape[-1], generator=gen),
            keys.advantage: torch.randn(n, 1, generator=gen) * 3,
            keys.value_target: torch.randn(n, 1, generator=gen) * 20 + 50,
        },
        batch_size=[n],
    )
    buffer = make_replay_buffer(cfg, tmpdir, torch.device("cpu"))
    buffer.extend(full)
    return SyntheticLearner(
        loss=loss,
        actor_opt=actor_opt,
        critic_opt=critic_opt,
        plain=plain_copy(loss, cfg, low, high),
        buffer=buffer,
        full=full,
        critic_keys=[*loss.value_network.in_keys, keys.value_target],
        actor_keys=[*loss.actor_network.in_keys, keys.action, keys.advantage],
    )


def ours_phase(loss_fn: Callable, data: TensorDict, optimizer: torch.optim.Optimizer, steps: int, bs: int) -> None:
    """RegressionPhase's eager inner loop: TensorDict minibatch, loss method, update, running metric sums."""
    totals: dict = {}
    for idx in shuffled_indices(data.shape[0], bs, steps, data.device):
        loss, metadata = loss_fn(data[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for key, value in (("loss", loss.detach()), *metadata.items()):
            totals[key] = totals.get(key, 0.0) + value


def update_config() -> DictConfig:
    """The defaults with advantages standardised per minibatch inside the loss (the step then does it all)."""
    return base_config("loss.normalize_advantage=batch")


def bench_update(args: argparse.Namespace, tmpdir: Path) -> dict:
    cfg = update_config()
    bs, steps = cfg.optim.batch_size, args.steps
    s = synthetic_learner(cfg, tmpdir)
    loss, plain = s.loss, s.plain
    obs, action, advantage, value_target = s.tensors()
    critic_data, actor_data = s.full.select(*s.critic_keys), s.full.select(*s.actor_keys)

    update = AWRUpdate(loss, s.buffer, s.actor_opt, s.critic_opt, actor_steps=steps, critic_steps=steps, batch_size=bs)
    variants: dict[str, dict[str, Callable[[], object]]] = {
        "ours": {
            "critic": lambda: ours_phase(loss.value_loss, critic_data, s.critic_opt, steps, bs),
            "actor": lambda: ours_phase(loss.actor_loss, actor_data, s.actor_opt, steps, bs),
        },
        "plain": {
            "critic": lambda: regress(plain.value_loss, (obs, value_target), plain.critic_opt, steps, bs),
            "actor": lambda: regress(plain.actor_loss, (obs, action, advantage), plain.actor_opt, steps, bs),
        },
        "hook": {
            "critic": update.critic_phase,
            "actor": update.actor_phase,
        },
    }
    for fns in variants.values():  # warm-up
        for fn in fns.values():
            fn()
    ms = interleaved(
        {
            f"{variant} {phase}": lambda fn=fn: timed(fn) * 1e3 / steps
            for variant, fns in variants.items()
            for phase, fn in fns.items()
        },
        args.repeats,
    )
    for variant in variants:
        ms[f"{variant} step"] = [c + a for c, a in zip(ms[f"{variant} critic"], ms[f"{variant} actor"], strict=True)]
    result: dict = {
        "batch_size": bs,
        "hidden_sizes": list(cfg.model.hidden_sizes),
        "steps_per_block": steps,
        "buffer_size": BUFFER_SIZE,
        "advantage_standardised_per_minibatch": loss.normalize_advantage,
    }
    for phase in ("actor", "critic", "step"):
        ours, base, hooked = ms[f"ours {phase}"], ms[f"plain {phase}"], ms[f"hook {phase}"]
        result[phase] = {
            "ours_ms": statistics.median(ours),
            "plain_ms": statistics.median(base),
            "hook_ms": statistics.median(hooked),
            "ratio": paired(ours, base),
            "hook_ratio": paired(hooked, base),
            "ours_ms_all": ours,
            "plain_ms_all": base,
            "hook_ms_all": hooked,
        }
    if args.profile:

        def ours_steps() -> None:
            ours_phase(loss.value_loss, critic_data, s.critic_opt, max(steps, 300), bs)
            ours_phase(loss.actor_loss, actor_data, s.actor_opt, max(steps, 300), bs)

        result["profile"] = profile(ours_steps, args.profile)
    return result


def update_rows(u: dict) -> list[Row]:
    rows: list[Row] = []
    for phase, label in (("actor", "actor step"), ("critic", "critic step"), ("step", "actor + critic step")):
        r = u[phase]
        rows.append(("update", f"{label} vs plain PyTorch", r["ours_ms"], r["plain_ms"], r["ratio"], "ms/step"))
    r = u["step"]
    what = "actor + critic via RegressionPhase hooks vs plain"
    rows.append(("update", what, r["hook_ms"], r["plain_ms"], r["hook_ratio"], "ms/step"))
    return rows


# ----------------------------------------------------------------------------- relabel
def synthetic_batch(
    template: TensorDict, index: int, num_envs: int, steps: int, gen: torch.Generator, previous: TensorDict | None
) -> TensorDict:
    """``num_envs`` × ``steps`` HalfCheetah-shaped transitions (env-major, as a flattened collector batch).

    Episodes last ``EPISODE_LEN`` steps and end by truncation; trajectory ids are unique per episode. As in a
    collector's output, a step's ``("next", "observation")`` is the next step's ``"observation"`` within an
    episode, across batches too (``previous``: the batch before).
    """
    n = num_envs * steps
    t = (index * steps + torch.arange(steps)).repeat(num_envs)  # global time of each env
    env_id = torch.arange(num_envs).repeat_interleave(steps)
    td = TensorDict(batch_size=[n])
    for key, leaf in template.items(True, True):
        shape = (n, *leaf.shape[template.ndim :])
        if leaf.dtype.is_floating_point:
            td.set(key, torch.randn(shape, generator=gen, dtype=leaf.dtype))
        else:
            td.set(key, torch.zeros(shape, dtype=leaf.dtype))
    last = (t % EPISODE_LEN == EPISODE_LEN - 1).unsqueeze(-1)
    grid = (num_envs, steps, -1)
    ended = last.view(num_envs, steps)
    chained = ~ended.roll(1, dims=1)  # the step after an episode's end starts from a fresh state
    chained[:, 0] = previous is not None
    observation = td.get("observation").view(grid)
    follow = td.get(("next", "observation")).view(grid).roll(1, dims=1)
    if previous is not None:
        follow[:, 0] = previous.get(("next", "observation")).view(grid)[:, -1]
    observation[chained] = follow[chained]
    for prefix in ((), ("next",)):
        if (*prefix, "step_count") in td.keys(True):
            td.set((*prefix, "step_count"), (t % EPISODE_LEN + len(prefix)).unsqueeze(-1))
    td.set(("next", "done"), last)
    td.set(("next", "truncated"), last.clone())
    td.set(("next", "terminated"), torch.zeros_like(last))
    td.set(("collector", "traj_ids"), env_id + num_envs * (t // EPISODE_LEN))
    return td


def filled_buffer(cfg: DictConfig, tmpdir: Path) -> tuple[ReplayBuffer, AWRLoss]:
    """Our replay buffer after 26 batches of 2048: full (50k) with the write cursor wrapped."""
    env = make_env(cfg.env.name, num_envs=cfg.env.num_envs)
    template = env.fake_tensordict()
    loss = make_loss(cfg, env)
    env.close()
    buffer = make_replay_buffer(cfg, tmpdir, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    steps = cfg.collector.frames_per_batch // cfg.env.num_envs
    batches = math.ceil(cfg.buffer.size / cfg.collector.frames_per_batch) + 1
    batch = None
    for index in range(batches):
        batch = synthetic_batch(template, index, cfg.env.num_envs, steps, gen, batch)
        buffer.extend(batch)
    return buffer, loss


def bench_relabel(args: argparse.Namespace, tmpdir: Path) -> dict:
    cfg = base_config(f"buffer.size={BUFFER_SIZE}")
    buffer, loss = filled_buffer(cfg, tmpdir)
    runs = {"eager": lambda: relabel(buffer, loss)}
    if not args.no_compile:  # what AWRUpdate relabels with under optim.compile (the default)
        critic = CompiledCritic(loss)
        runs["compiled"] = lambda: relabel(buffer, loss, critic=critic)
    for run in runs.values():  # warm-up (compiles); the first call also allocates value_target/advantage
        run()
    ms = interleaved({name: lambda run=run: timed(run) * 1e3 for name, run in runs.items()}, args.repeats)
    result = {
        "buffer_size": len(buffer),
        "write_count": int(buffer.write_count),
        "leaves_per_transition": len(list(buffer.storage.get(torch.arange(1)).keys(True, True))),
        "ms": statistics.median(ms["eager"]),
        "ms_all": ms["eager"],
    }
    if "compiled" in ms:
        result.update(compiled_ms=statistics.median(ms["compiled"]), compiled_ms_all=ms["compiled"],
                      compiled_ratio=paired(ms["compiled"], ms["eager"]))
    if args.profile:
        result["profile"] = profile(lambda: [relabel(buffer, loss) for _ in range(5)], args.profile)
    return result


def relabel_rows(r: dict) -> list[Row]:
    n = f"{r['buffer_size']:,}"
    rows: list[Row] = [("relabel", f"relabel over {n} transitions, eager critic", r["ms"], None, None, "ms")]
    if "compiled_ms" in r:
        rows.append(("relabel", f"relabel over {n} transitions, compiled critic (optim.compile) vs eager",
                     r["compiled_ms"], r["ms"], r["compiled_ratio"], "ms"))
    return rows


UPDATE = Section("update", bench_update, update_rows)
RELABEL = Section("relabel", bench_relabel, relabel_rows)
