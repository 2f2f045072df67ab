"""Offline AWR: the online iteration without collection, over a fixed dataset.

:class:`OfflineAWRTrainer` runs rounds of the same hooks :class:`~torchrl_awr.AWRTrainer`
uses — relabel → critic phase → relabel → actor phase — over a replay buffer
that never changes (``torchrl_awr.offline`` fills it); the env only evaluates.
Its clock is the number of policy gradient steps, as in TorchRL's offline
sota-implementations (``iql/iql_offline.py``). :func:`run_offline` builds one
from a config, for ``scripts/train_offline.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn
from torchrl.data import ReplayBuffer
from torchrl.objectives import BCLoss
from torchrl.record.loggers import Logger

from torchrl_awr.builders import (
    acting_policy,
    learner_device,
    make_eval_env,
    make_evaluate,
    make_logger,
    make_loss,
    make_optimizers,
)
from torchrl_awr.experiment import resolve_run, run
from torchrl_awr.hooks import Evaluate, UpdateObservationNorm
from torchrl_awr.loss import AWRLoss
from torchrl_awr.offline import PATH_HELP, DatasetError, fit_to_env, load_dataset, make_offline_buffer
from torchrl_awr.trainer import ResumableTrainer, register_awr_update
from torchrl_awr.update import RegressionPhase


class GradientSteps:
    """The collector of an offline run: one empty batch per round, as long as the round's actor steps.

    :class:`~torchrl.trainers.Trainer` counts a batch's elements as frames, so
    an offline run's frame count is its number of policy gradient steps; the
    last round is cut to ``total_steps``. Its count is checkpointed with the
    trainer (as a collector's state is).
    """

    init_random_frames = 0

    def __init__(self, steps_per_round: int, total_steps: int) -> None:
        self.frames_per_batch = steps_per_round
        self.total_steps = total_steps
        self.done = 0

    def __iter__(self) -> Iterator[TensorDictBase]:
        while self.done < self.total_steps:
            steps = min(self.frames_per_batch, self.total_steps - self.done)
            self.done += steps
            yield TensorDict(batch_size=[steps])

    def set_seed(self, seed: int, static_seed: bool = False) -> int:
        return seed

    def shutdown(self) -> None:
        return

    def update_policy_weights_(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to refresh: an offline run does not act (evaluation copies its weights itself)."""

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = int(state_dict["done"])


class OfflineAWRTrainer(ResumableTrainer):
    """AWR (or behaviour cloning) on a fixed replay buffer, counted in policy gradient steps.

    A :class:`~torchrl.trainers.Trainer` whose collector is a
    :class:`GradientSteps` clock: each round (one "batch") runs the hooks at
    ``pre_optim_steps``; for AWR with ``relabel="refresh"`` (default) they are
    the online iteration's ``relabel_critic`` → ``critic_phase`` →
    ``relabel_actor`` → ``actor_phase`` (TD(λ) targets recomputed over the whole
    dataset with the current critic before each phase); ``relabel="once"``
    uses :class:`~torchrl_awr.hooks.FixedTargets` instead. ``bc_loss`` (TorchRL's
    :class:`~torchrl.objectives.BCLoss` on the same actor) replaces all of it by
    one unweighted phase: behaviour cloning. ``collected_frames`` counts
    gradient steps, and so do the logger's steps, checkpoint intervals and
    :class:`~torchrl_awr.Evaluate`'s rows. Add hooks with :meth:`register_op`;
    :meth:`resume` continues a checkpointed run.

    Args:
        loss_module: the :class:`~torchrl_awr.AWRLoss`.
        replay_buffer: the dataset (:func:`torchrl_awr.offline.make_offline_buffer`).
        actor_optimizer / critic_optimizer: one per phase.
        total_steps: policy gradient steps to run.

    Keyword Args:
        actor_steps, critic_steps, batch_size: per round (1000, 200, 256); the last round is cut to ``total_steps``.
        normalize_advantage_over_buffer: standardise advantages over the dataset before each actor phase.
        relabel: ``"refresh"`` or ``"once"``.
        bc_loss: train by behaviour cloning with this loss instead of AWR.
        checkpoint_dir, checkpoint_interval, keep_checkpoints: as for :class:`~torchrl_awr.AWRTrainer`
            (the interval counts rounds; the dataset is not saved, the targets of ``relabel="once"`` are).
        logger: a :mod:`torchrl.record.loggers` logger.
        progress_bar: show a tqdm bar over gradient steps.
        seed: seed for torch and numpy.
        device, compile, cudagraphs: for every :class:`~torchrl_awr.RegressionPhase`.

    Examples:
        >>> import torch
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value, make_env
        >>> from torchrl_awr.offline import make_offline_buffer
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> loss = AWRLoss(make_awr_actor(3, env.action_spec), make_awr_value(3))
        >>> data = env.rollout(400, break_when_any_done=False)  # a random-policy dataset, two episodes
        >>> data["collector", "traj_ids"] = torch.arange(400) // 200
        >>> trainer = OfflineAWRTrainer(
        ...     loss_module=loss, replay_buffer=make_offline_buffer(data),
        ...     actor_optimizer=torch.optim.Adam(loss.actor_network.parameters(), 1e-3),
        ...     critic_optimizer=torch.optim.Adam(loss.value_network.parameters(), 1e-3),
        ...     total_steps=30, actor_steps=20, critic_steps=5, batch_size=64, progress_bar=False)
        >>> trainer.train()
        >>> trainer.collected_frames, trainer.clock.iteration
        (30, 2)
    """

    def __init__(
        self,
        *,
        loss_module: AWRLoss,
        replay_buffer: ReplayBuffer,
        actor_optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        total_steps: int,
        actor_steps: int = 1000,
        critic_steps: int = 200,
        batch_size: int = 256,
        normalize_advantage_over_buffer: bool = False,
        relabel: str = "refresh",
        bc_loss: BCLoss | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_interval: int = 10,
        keep_checkpoints: int = 2,
        logger: Logger | None = None,
        progress_bar: bool = True,
        seed: int | None = None,
        device: torch.device | str | None = None,
        compile: bool = False,
        cudagraphs: bool = False,
    ) -> None:
        if actor_steps <= 0:
            raise ValueError(f"actor_steps={actor_steps!r}; offline training needs actor steps > 0.")
        super().__init__(
            collector=GradientSteps(actor_steps, total_steps),
            loss_module=loss_module,
            total_frames=total_steps,
            frames_per_batch=actor_steps,
            checkpoint_dir=checkpoint_dir,
            checkpoint_interval=checkpoint_interval,
            keep_checkpoints=keep_checkpoints,
            logger=logger,
            progress_bar=progress_bar,
            seed=seed,
            unit="gradient_steps",
        )
        self.replay_buffer = replay_buffer
        self.register_op("batch_process", self._set_round_steps)
        phase_kwargs = {"device": device, "compile": compile, "cudagraphs": cudagraphs}
        if bc_loss is None:
            self.actor_phase = register_awr_update(
                self,
                loss_module,
                replay_buffer,
                actor_optimizer,
                critic_optimizer,
                actor_steps=actor_steps,
                critic_steps=critic_steps,
                batch_size=batch_size,
                normalize_advantage_over_buffer=normalize_advantage_over_buffer,
                relabel=relabel,
                **phase_kwargs,
            )
        else:
            self.actor_phase = RegressionPhase(
                "actor_phase",
                BCObjective(bc_loss),
                [*loss_module.actor_network.in_keys, loss_module.tensor_keys.action],
                replay_buffer,
                actor_optimizer,
                actor_steps,
                batch_size,
                **phase_kwargs,
            )
            self.actor_phase.register(self)
        self.clock.register(self)

    def _set_round_steps(self, batch: TensorDictBase) -> None:
        """The round's actor steps: the clock's batch size (the last round may be cut)."""
        self.actor_phase.steps = batch.numel()


class BCObjective(nn.Module):
    """TorchRL's :class:`~torchrl.objectives.BCLoss` as a phase's ``(loss, metadata)`` function."""

    def __init__(self, bc_loss: BCLoss) -> None:
        super().__init__()
        self.bc_loss = bc_loss

    def forward(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        return self.bc_loss(batch).get("loss_bc"), {}


def resolve_offline_run(overrides: list[str]) -> tuple[DictConfig, Path]:
    """Config and output dir of an offline run (``outputs/offline/<env>/...`` by default); ``resume=<dir>`` as online.

    Raises:
        ValueError: bad overrides, an unknown env id, no ``dataset.path`` or a bad resume dir.
    """
    cfg, output_dir = resolve_run(overrides, root=Path("outputs") / "offline")
    if not cfg.dataset.path:
        raise ValueError(
            f"dataset.path is required: with dataset.source={cfg.dataset.source}, pass "
            f"dataset.path=<{PATH_HELP[cfg.dataset.source]}>."
        )
    return cfg, output_dir


def build_offline_trainer(
    cfg: DictConfig, output_dir: Path, progress_bar: bool = True, tags: list[str] | None = None
) -> tuple[OfflineAWRTrainer, Evaluate, dict[str, Any]]:
    """Dataset → buffer, networks (normaliser fitted on the dataset), loss, optimizers, trainer, evaluation.

    Returns the trainer, its evaluation hook and what the run summary adds (algo, dataset, transitions).

    Raises:
        DatasetError: the dataset is missing, malformed or does not fit the env.
    """
    torch.manual_seed(cfg.seed)
    device = learner_device(cfg)
    data = load_dataset(cfg.dataset.source, cfg.dataset.path, cfg.dataset.name)  # bad data fails before the env
    eval_env = make_eval_env(cfg)
    data = fit_to_env(data, eval_env, f"dataset {cfg.dataset.path!r}")
    if data.shape[0] < cfg.optim.batch_size:
        raise DatasetError(
            f"the dataset holds {data.shape[0]} transitions, fewer than optim.batch_size={cfg.optim.batch_size}."
        )
    loss = make_loss(cfg, eval_env)
    norm = loss.actor_network.module[0][0]
    UpdateObservationNorm(norm, max_samples=data.shape[0])(data)  # state statistics of the whole dataset, frozen
    policy = acting_policy(loss.actor_network, device)
    loss = loss.to(device)
    actor_optim, critic_optim = make_optimizers(cfg, loss)
    bc = None
    if cfg.offline.algo == "bc":
        with warnings.catch_warnings():  # torchrl 0.14.1's BCLoss warns about its own target_actor_network_params
            warnings.simplefilter("ignore", UserWarning)
            bc = BCLoss(loss.actor_network)
    trainer = OfflineAWRTrainer(
        loss_module=loss,
        replay_buffer=make_offline_buffer(data, device),
        actor_optimizer=actor_optim,
        critic_optimizer=critic_optim,
        total_steps=cfg.offline.steps,
        actor_steps=cfg.optim.actor_steps,
        critic_steps=cfg.optim.critic_steps,
        batch_size=cfg.optim.batch_size,
        normalize_advantage_over_buffer=cfg.loss.normalize_advantage and cfg.loss.advantage_stats == "buffer",
        relabel=cfg.offline.relabel,
        bc_loss=bc,
        checkpoint_dir=output_dir / "checkpoints",
        checkpoint_interval=cfg.checkpoint.interval,
        keep_checkpoints=cfg.checkpoint.keep_last,
        logger=make_logger(cfg, output_dir, tags),
        progress_bar=progress_bar,
        seed=cfg.seed,
        device=device,
        compile=cfg.optim.compile,
        cudagraphs=cfg.optim.cudagraphs,
    )
    evaluator = make_evaluate(cfg, eval_env, policy, loss.actor_network, trainer, output_dir)
    dataset = {"source": cfg.dataset.source, "path": cfg.dataset.path, "name": cfg.dataset.name}
    return trainer, evaluator, {"algo": cfg.offline.algo, "dataset": dataset, "transitions": data.shape[0]}


def run_offline(cfg: DictConfig, output_dir: Path, progress_bar: bool = True, tags: list[str] | None = None) -> dict:
    """Train (or resume) one offline run: the outputs of :func:`torchrl_awr.experiment.run`, counted in gradient
    steps."""
    return run(cfg, output_dir, progress_bar, tags, build=build_offline_trainer)
