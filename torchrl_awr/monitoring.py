"""Watching a run: the clock, the training episodes' return and the deterministic evaluation into ``eval.csv``.

Each is a :class:`~torchrl.trainers.TrainerHookBase` registered with its ``register(trainer)`` at its stage,
with its state carried into checkpoints.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.trainers import Trainer, TrainerHookBase

EVAL_CSV_FIELDS = ("wall_time_s", "eval_return_mean", "eval_return_std")  # after the clock's unit


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
    (a CPU copy acting in the CPU env) before each evaluation. With ``at_start`` it also evaluates before
    training (at setup, at 0 frames): a run from a pre-trained policy starts its curve there.

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
        at_start: bool = False,
    ) -> None:
        self.env = env
        self.policy = policy
        self.source = source
        self.clock = clock
        self.interval = interval
        self.max_steps = max_steps
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.return_key = return_key
        self.at_start = at_start
        self.last_frames = -1
        self.history: list[dict[str, float]] = []
        self._trainer: Trainer | None = None

    @torch.no_grad()
    def episode_returns(self) -> Tensor:
        """Return of the first episode of each eval env under the deterministic policy.

        The envs step together (:meth:`~torchrl.envs.EnvBase.step_and_maybe_reset`) until every one has ended its
        first episode, or for ``max_steps``: an episode still running then counts as it stands.
        """
        if self.source is not None:
            TensorDict.from_module(self.policy).data.update_(TensorDict.from_module(self.source).data)
        shape = (self.env.batch_size.numel(),)
        returns = torch.zeros(shape)
        ended = torch.zeros(shape, dtype=torch.bool)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            state = self.env.reset()
            for _ in range(self.max_steps):
                step, state = self.env.step_and_maybe_reset(self.policy(state))
                done = step.get(("next", "done")).reshape(shape)
                episode_return = step.get(self.return_key).reshape(shape).cpu()
                returns = torch.where(ended, returns, episode_return)
                ended |= done.cpu()
                if ended.all():
                    break
        return returns

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

    def start(self) -> None:
        """With ``at_start``, evaluate the policy a run starts from (a pre-trained one) as the row at 0."""
        if self.at_start and not self.history and self._trainer.collected_frames == 0:
            self._log_now(self.evaluate())

    def final(self) -> None:
        if self._trainer is not None and self.last_frames != self._trainer.collected_frames:
            self._log_now(self.evaluate())  # after the training loop

    def _log_now(self, row: dict[str, float]) -> None:
        """An evaluation outside the training loop's logging stages: straight to the logger, at its frame count."""
        if self._trainer.logger is not None:
            for key in ("return_mean", "return_std"):
                self._trainer.logger.log_scalar(f"eval/{key}", row[f"eval_{key}"], step=row[self.clock.unit])

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
        trainer.register_op("setup", self.start)
        trainer.register_op("post_steps_log", self)
        trainer.register_op("shutdown", self.final)
        trainer.register_module(name, self)
