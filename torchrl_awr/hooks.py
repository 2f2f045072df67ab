"""Trainer hooks, one per step of an AWR iteration, named after the paper's steps.

Each hook is a :class:`~torchrl.trainers.TrainerHookBase`: it registers itself
at its default stage with :meth:`register`, can be put elsewhere with
:meth:`~torchrl.trainers.Trainer.register_op`, and carries its state into
checkpoints through ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import ReplayBuffer
from torchrl.envs import EnvBase, ObservationNorm
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.trainers import Trainer, TrainerHookBase

from torchrl_awr.loss import AWRLoss, standardize
from torchrl_awr.targets import relabel

EVAL_CSV_FIELDS = ("wall_time_s", "eval_return_mean", "eval_return_std")  # after the clock's unit


def _valid(batch: TensorDictBase) -> TensorDictBase:
    """A collector batch flattened to its valid transitions."""
    mask = batch.get(("collector", "mask"), None)
    return batch[mask] if mask is not None else batch.reshape(-1)


class UpdateObservationNorm(TrainerHookBase):
    """Running mean/std of observations over the first ``max_samples`` samples, then frozen.

    Writes the statistics into a shared :class:`~torchrl.envs.ObservationNorm`
    (``loc``/``scale``) that sits inside the actor and critic, as the original
    implementation does (std floored at ``min_std``). Stage: ``batch_process``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_awr import make_observation_norm
        >>> norm = make_observation_norm(2)
        >>> hook = UpdateObservationNorm(norm, max_samples=100)
        >>> hook(TensorDict(observation=torch.tensor([[1.0, 0.0], [3.0, 0.0]]), batch_size=[2]))
        >>> norm.loc, norm.scale
        (tensor([2., 0.]), tensor([1.0000, 0.0100]))
    """

    def __init__(self, norm: ObservationNorm, max_samples: int, min_std: float = 1e-2) -> None:
        self.norm = norm
        self.max_samples = max_samples
        self.min_std = min_std
        self.key = norm.in_keys[0]
        size = norm.loc.shape
        self.count = 0
        self.total = torch.zeros(size, dtype=torch.float64)
        self.total_sq = torch.zeros(size, dtype=torch.float64)

    def __call__(self, batch: TensorDictBase) -> None:
        if self.count >= self.max_samples:
            return
        obs = _valid(batch).get(self.key).reshape(-1, *self.norm.loc.shape).double().cpu()
        self.count += obs.shape[0]
        self.total += obs.sum(0)
        self.total_sq += obs.pow(2).sum(0)
        mean = self.total / self.count
        std = (self.total_sq / self.count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(self.min_std)
        self.norm.loc.copy_(mean.to(self.norm.loc))
        self.norm.scale.copy_(std.to(self.norm.scale))

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "total": self.total, "total_sq": self.total_sq}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = int(state_dict["count"])
        self.total = state_dict["total"].clone()
        self.total_sq = state_dict["total_sq"].clone()

    def register(self, trainer: Trainer, name: str = "update_observation_norm") -> None:
        trainer.register_op("batch_process", self)
        trainer.register_module(name, self)


class ExtendBuffer(TrainerHookBase):
    """Append the collected batch (valid transitions only) to the FIFO replay buffer. Stage: ``batch_process``.

    ``target_keys`` (the loss's ``advantage`` and ``value_target``) are stored as zeros with every transition,
    so that storages whose keys are fixed at their first write (memory-mapped ones) have slots for
    :func:`torchrl_awr.relabel` to fill.
    """

    def __init__(
        self,
        replay_buffer: ReplayBuffer,
        target_keys: tuple = ("advantage", "value_target"),
        exclude: tuple = ("loc", "scale", "logits", "observation_norm"),
    ) -> None:
        self.replay_buffer = replay_buffer
        self.target_keys = target_keys
        self.exclude = exclude

    def __call__(self, batch: TensorDictBase) -> None:
        batch = _valid(batch).exclude(*self.exclude)
        for key in self.target_keys:
            if key not in batch.keys(True):
                batch.set(key, torch.zeros(*batch.batch_size, 1, device=batch.device))
        self.replay_buffer.extend(batch)

    def state_dict(self) -> dict[str, Any]:
        return self.replay_buffer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.replay_buffer.load_state_dict(state_dict)

    def register(self, trainer: Trainer, name: str = "replay_buffer") -> None:
        trainer.register_op("batch_process", self)
        trainer.register_module(name, self)


class RelabelTargets(TrainerHookBase):
    """Recompute TD(λ) targets and advantages over the whole buffer with the current critic.

    AWR runs it twice per iteration: before the critic phase and before the
    actor phase (there, with ``normalize_advantage=True``, advantages are
    standardised over the whole buffer as in the original). Stage: ``pre_optim_steps``.

    Examples:
        >>> import torch
        >>> from torchrl.collectors import Collector
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value, make_env
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> actor = make_awr_actor(3, env.action_spec)
        >>> loss = AWRLoss(actor, make_awr_value(3))
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(1000))
        >>> _ = rb.extend(next(iter(Collector(env, actor, frames_per_batch=200, total_frames=200))))
        >>> RelabelTargets(rb, loss, normalize_advantage=True)()
        >>> round(rb.storage[:200]["advantage"].std(unbiased=False).item(), 3)
        1.0
    """

    def __init__(
        self,
        replay_buffer: ReplayBuffer,
        loss_module: AWRLoss,
        log_prefix: str = "relabel",
        normalize_advantage: bool = False,
    ) -> None:
        self.replay_buffer = replay_buffer
        self.loss_module = loss_module
        self.log_prefix = log_prefix
        self.normalize_advantage = normalize_advantage
        self._trainer: Trainer | None = None

    def __call__(self) -> None:
        stats = relabel(self.replay_buffer, self.loss_module, normalize_advantage=self.normalize_advantage)
        if self._trainer is not None:
            self._trainer._log(**{f"{self.log_prefix}/{k}": v for k, v in stats.items()})

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return

    def register(self, trainer: Trainer, name: str = "relabel_targets") -> None:
        self._trainer = trainer
        trainer.register_op("pre_optim_steps", self)


class FixedTargets(TrainerHookBase):
    """``offline.relabel=once``: TD(λ) targets computed once, then only the advantages ``A = R − V(s)`` refreshed.

    At ``setup`` the targets are computed over the whole buffer with the
    initial critic (use ``λ = 1`` for Monte-Carlo returns); before each actor
    phase (``pre_optim_steps``) the advantages are recomputed against them with
    the current critic, standardised over the buffer when ``normalize_advantage=True``
    as :class:`RelabelTargets` does. The targets are part of the
    state, so a resumed run keeps the ones it started with.
    """

    def __init__(self, replay_buffer: ReplayBuffer, loss_module: AWRLoss, normalize_advantage: bool = False) -> None:
        self.replay_buffer = replay_buffer
        self.loss_module = loss_module
        self.normalize_advantage = normalize_advantage
        self.relabel = RelabelTargets(replay_buffer, loss_module, log_prefix="relabel_once")
        self.ready = False

    def setup(self) -> None:
        if not self.ready:
            self.relabel()
            self.ready = True

    @torch.no_grad()
    def __call__(self) -> None:
        keys = self.loss_module.tensor_keys
        storage = self.replay_buffer.storage
        n = len(self.replay_buffer)
        data = storage[:n].select(*self.loss_module.value_network.in_keys, keys.value_target)
        value = self.loss_module.value_network(data).get(keys.value)
        advantage = data.get(keys.value_target) - value
        advantage = standardize(advantage) if self.normalize_advantage else advantage
        storage[torch.arange(n)] = TensorDict({keys.advantage: advantage}, batch_size=[n])

    def state_dict(self) -> dict[str, Any]:
        targets = self.replay_buffer.storage[: len(self.replay_buffer)].get(self.loss_module.tensor_keys.value_target)
        return {"ready": self.ready, "value_target": targets.cpu().clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ready = bool(state_dict["ready"])
        if self.ready:
            targets = state_dict["value_target"]
            n = targets.shape[0]
            key = self.loss_module.tensor_keys.value_target
            self.replay_buffer.storage[torch.arange(n)] = TensorDict({key: targets}, batch_size=[n])

    def register(self, trainer: Trainer, name: str = "fixed_targets") -> None:
        self.relabel._trainer = trainer
        trainer.register_op("setup", self.setup)
        trainer.register_op("pre_optim_steps", self)
        trainer.register_module(name, self)


class LogEpisodeReturn(TrainerHookBase):
    """Mean return of the training episodes that ended in the batch. Stage: ``pre_steps_log``."""

    def __init__(self, key: tuple = ("next", "episode_reward"), done_key: tuple = ("next", "done")) -> None:
        self.key = key
        self.done_key = done_key

    def __call__(self, batch: TensorDictBase) -> dict[str, float] | None:
        done = batch.get(self.done_key).squeeze(-1)
        if not done.any():
            return None
        returns = batch.get(self.key).squeeze(-1)[done]
        return {"train/return": returns.mean().item(), "log_pbar": True}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return

    def register(self, trainer: Trainer, name: str = "log_episode_return") -> None:
        trainer.register_op("pre_steps_log", self)


class RunClock(TrainerHookBase):
    """Wall time across resumes, progress per second and the iteration count. Stage: ``post_steps_log``.

    Progress is the trainer's ``collected_frames``, logged under ``unit``:
    environment frames online, policy gradient steps offline (``unit="gradient_steps"``).
    """

    def __init__(self, unit: str = "frames") -> None:
        self.unit = unit
        self.elapsed = 0.0
        self.iteration = 0
        self._start = time.perf_counter()
        self._last = (self._start, 0)
        self._trainer: Trainer | None = None

    @property
    def wall_time(self) -> float:
        return self.elapsed + time.perf_counter() - self._start

    def __call__(self, batch: TensorDictBase) -> dict[str, float]:
        self.iteration += 1
        now, frames = time.perf_counter(), self._trainer.collected_frames
        last_time, last_frames = self._last
        self._last = (now, frames)
        return {
            self.unit: frames,
            "iteration": self.iteration,
            "wall_time_s": self.wall_time,
            f"{self.unit}_per_s": (frames - last_frames) / max(now - last_time, 1e-9),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.wall_time, "iteration": self.iteration}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed = float(state_dict["elapsed"])
        self.iteration = int(state_dict["iteration"])
        self._start = time.perf_counter()

    def start(self) -> None:
        """Start timing frames/s from the current frame count (also after a resume)."""
        self._last = (time.perf_counter(), self._trainer.collected_frames)

    def register(self, trainer: Trainer, name: str = "clock") -> None:
        self._trainer = trainer
        trainer.register_op("setup", self.start)
        trainer.register_op("post_steps_log", self)
        trainer.register_module(name, self)


class Evaluate(TrainerHookBase):
    """Deterministic-policy evaluation every ``interval`` iterations, appended to ``eval.csv``.

    Rows are keyed by the clock's unit (frames online, gradient steps offline).
    Runs ``episodes`` episodes at once on a batched eval env (one per env) and
    scores each by its first episode's return. Stage: ``post_steps_log``; also
    runs once at shutdown so the final policy is always evaluated. With
    ``source`` (a learner on a GPU), its weights are copied into ``policy``
    (a CPU copy acting in the CPU env) before each evaluation.

    Examples:
        >>> from torchrl_awr import make_awr_actor, make_env
        >>> env = make_env("CartPole-v1", num_envs=3, seed=0)
        >>> evaluate = Evaluate(env, make_awr_actor(4, env.action_spec_unbatched), RunClock(),
        ...                     interval=1, max_steps=500)
        >>> returns = evaluate.episode_returns()
        >>> returns.shape, bool((returns >= 1).all())
        (torch.Size([3]), True)
    """

    def __init__(
        self,
        env: EnvBase,
        policy: torch.nn.Module,
        clock: RunClock,
        *,
        interval: int,
        max_steps: int,
        csv_path: str | Path | None = None,
        return_key: tuple = ("next", "episode_reward"),
        source: torch.nn.Module | None = None,
    ) -> None:
        self.env = env
        self.policy = policy
        self.source = source
        self.clock = clock
        self.interval = interval
        self.max_steps = max_steps
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.return_key = return_key
        self.last_frames = -1
        self.history: list[dict[str, float]] = []
        self._trainer: Trainer | None = None

    @torch.no_grad()
    def episode_returns(self) -> Tensor:
        """Return of the first episode of each eval env under the deterministic policy."""
        if self.source is not None:
            TensorDict.from_module(self.policy).data.update_(TensorDict.from_module(self.source).data)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            rollout = self.env.rollout(self.max_steps, self.policy, break_when_any_done=False, break_when_all_done=True)
        rollout = rollout.reshape(*self.env.batch_size, -1)  # [envs, T]
        done = rollout.get(("next", "done")).squeeze(-1).clone()
        done[..., -1] = True  # an episode still running at max_steps counts as it stands
        first = done.float().argmax(-1, keepdim=True)
        return rollout.get(self.return_key).squeeze(-1).gather(-1, first).squeeze(-1)

    def _csv_writer(self, f: Any) -> csv.DictWriter:
        return csv.DictWriter(f, fieldnames=(self.clock.unit, *EVAL_CSV_FIELDS))

    def evaluate(self) -> dict[str, float]:
        returns = self.episode_returns()
        row = {
            self.clock.unit: self._trainer.collected_frames if self._trainer else 0,
            "wall_time_s": self.clock.wall_time,
            "eval_return_mean": returns.mean().item(),
            "eval_return_std": returns.std(unbiased=False).item(),
        }
        self.history.append(row)
        self.last_frames = row[self.clock.unit]
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with self.csv_path.open("a", newline="") as f:
                writer = self._csv_writer(f)
                if new:
                    writer.writeheader()
                writer.writerow(row)
        return row

    def __call__(self, batch: TensorDictBase) -> dict[str, float] | None:
        if self.clock.iteration % self.interval:
            return None
        row = self.evaluate()
        return {
            "eval/return_mean": row["eval_return_mean"],
            "eval/return_std": row["eval_return_std"],
            "log_pbar": True,
        }

    def final(self) -> None:
        if self._trainer is not None and self.last_frames != self._trainer.collected_frames:
            row = self.evaluate()
            self._trainer._log(
                **{"eval/return_mean": row["eval_return_mean"], "eval/return_std": row["eval_return_std"]}
            )

    def state_dict(self) -> dict[str, Any]:
        return {"last_frames": self.last_frames, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_frames = int(state_dict["last_frames"])
        self.history = [dict(row) for row in state_dict["history"]]
        if self.csv_path is not None:  # drop rows written after the checkpoint: the resumed run redoes them
            with self.csv_path.open("w", newline="") as f:
                writer = self._csv_writer(f)
                writer.writeheader()
                writer.writerows(self.history)

    def register(self, trainer: Trainer, name: str = "evaluate") -> None:
        self._trainer = trainer
        trainer.register_op("post_steps_log", self)
        trainer.register_op("shutdown", self.final)
        trainer.register_module(name, self)
