"""Offline AWR: the online iteration without collection, over a fixed dataset.

:class:`OfflineAWRTrainer` runs rounds of the same hooks :class:`~torchrl_awr.AWRTrainer`
uses — relabel → critic phase → relabel → actor phase — over a replay buffer
that never changes (``torchrl_awr.offline`` fills it); the env only evaluates.
Its clock is the number of policy gradient steps, as in TorchRL's offline
sota-implementations (``iql/iql_offline.py``). :func:`run_offline` builds one
from a config, for ``scripts/train_offline.py``.
"""

from __future__ import annotations

import copy
import csv
import inspect
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import ReplayBuffer
from torchrl.objectives import BCLoss
from torchrl.record.loggers import Logger

from torchrl_awr.builders import (
    make_logger,
    make_loss,
    make_optimizers,
    max_episode_steps,
    resolve_device,
    write_json,
)
from torchrl_awr.config import load_config
from torchrl_awr.envs import check_env_id, make_env
from torchrl_awr.hooks import Evaluate, RegressionPhase, RelabelTargets, RunClock, UpdateObservationNorm
from torchrl_awr.loss import AWRLoss, standardize
from torchrl_awr.offline import PATH_HELP, DatasetError, fit_to_env, load_dataset, make_offline_buffer

OFFLINE_EVAL_FIELDS = ("gradient_steps", "wall_time_s", "eval_return_mean", "eval_return_std")


class FixedTargetAdvantages:
    """Advantages ``A = R − V(s)`` against value targets computed once (``offline.relabel=once``).

    The stored ``value_target`` stays as first computed; only ``V(s)`` comes
    from the current critic. Standardised over the whole buffer when
    ``normalize_advantage=True``, like :class:`~torchrl_awr.RelabelTargets`.
    """

    def __init__(self, replay_buffer: ReplayBuffer, loss_module: AWRLoss, normalize_advantage: bool = False) -> None:
        self.replay_buffer = replay_buffer
        self.loss_module = loss_module
        self.normalize_advantage = normalize_advantage

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


class OfflineAWRTrainer:
    """AWR (or behaviour cloning) on a fixed replay buffer, counted in policy gradient steps.

    Each round runs the hooks registered at stage ``"round"`` in order; for AWR
    with ``relabel="refresh"`` (default) they are the online iteration's
    ``relabel_critic`` → ``critic_phase`` → ``relabel_actor`` → ``actor_phase``
    (TD(λ) targets recomputed over the whole dataset with the current critic
    before each phase). ``relabel="once"`` computes the targets once before
    training (with the initial critic: use ``λ = 1`` for Monte-Carlo returns)
    and only refreshes the advantages ``R − V(s)`` before each actor phase.
    ``bc_loss`` (TorchRL's :class:`~torchrl.objectives.BCLoss` on the same
    actor) replaces all of it by one unweighted phase: behaviour cloning.
    Hooks at stage ``"post_round"`` (evaluation) run after each round;
    :meth:`register_op` adds or replaces either.

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
        phase_kwargs: extra keyword arguments for every :class:`~torchrl_awr.RegressionPhase` (device, compile...).
        logger: a :mod:`torchrl.record.loggers` logger (step: gradient steps).

    Examples:
        >>> import torch
        >>> from torchrl.data import Bounded
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
        ...     total_steps=30, actor_steps=20, critic_steps=5, batch_size=64)
        >>> trainer.train()
        >>> trainer.gradient_steps, trainer.round
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
        phase_kwargs: dict[str, Any] | None = None,
        logger: Logger | None = None,
    ) -> None:
        if relabel not in ("refresh", "once"):
            raise ValueError(f"relabel={relabel!r} is not allowed; choose refresh or once.")
        if actor_steps <= 0:
            raise ValueError(f"actor_steps={actor_steps!r}; offline training needs actor steps > 0.")
        self.loss_module = loss_module
        self.replay_buffer = replay_buffer
        self.total_steps = total_steps
        self.logger = logger
        self.gradient_steps = 0
        self.round = 0
        self.clock = RunClock()
        self._ops: dict[str, list[Callable[[], Any]]] = {"round": [], "post_round": []}
        self._modules: dict[str, Any] = {}
        self._metrics: dict[str, float] = {}
        keys = loss_module.tensor_keys
        actor, value = loss_module.actor_network, loss_module.value_network
        phase_kwargs = phase_kwargs or {}
        if bc_loss is not None:
            self.actor_phase = RegressionPhase(
                "actor_phase",
                _bc_loss_fn(bc_loss),
                [*actor.in_keys, keys.action],
                replay_buffer,
                actor_optimizer,
                actor_steps,
                batch_size,
                **phase_kwargs,
            )
            self.actor_phase.register(self)
            return
        critic_phase = RegressionPhase(
            "critic_phase",
            loss_module.value_loss,
            [*value.in_keys, keys.value_target],
            replay_buffer,
            critic_optimizer,
            critic_steps,
            batch_size,
            **phase_kwargs,
        )
        self.actor_phase = RegressionPhase(
            "actor_phase",
            loss_module.actor_loss,
            [*actor.in_keys, keys.action, keys.advantage],
            replay_buffer,
            actor_optimizer,
            actor_steps,
            batch_size,
            **phase_kwargs,
        )
        if relabel == "refresh":
            RelabelTargets(replay_buffer, loss_module).register(self, "relabel_critic")
            critic_phase.register(self)
            RelabelTargets(replay_buffer, loss_module, normalize_advantage=normalize_advantage_over_buffer).register(
                self, "relabel_actor"
            )
        else:
            self._once = RelabelTargets(replay_buffer, loss_module, log_prefix="relabel_once")
            critic_phase.register(self)
            advantages = FixedTargetAdvantages(replay_buffer, loss_module, normalize_advantage_over_buffer)
            self.register_op("round", advantages)
        self.actor_phase.register(self)

    # The parts of torchrl.trainers.Trainer's interface the hooks use.
    def register_op(self, dest: str, op: Callable, **kwargs: Any) -> None:
        """Append ``op`` to a stage: ``"round"`` (``pre_optim_steps`` is an alias) or ``"post_round"``."""
        dest = "round" if dest == "pre_optim_steps" else dest
        if dest not in self._ops:
            raise ValueError(f"unknown stage {dest!r}; OfflineAWRTrainer has: round, post_round.")
        self._ops[dest].append(op)

    def register_module(self, name: str, module: Any) -> None:
        self._modules[name] = module

    def _log(self, log_pbar: bool = False, **metrics: float) -> None:
        self._metrics.update(metrics)

    @property
    def collected_frames(self) -> int:
        """Gradient steps: the offline run's clock, for hooks written for the online trainer."""
        return self.gradient_steps

    def train(self) -> None:
        """Run rounds until ``total_steps`` policy gradient steps are done, then the ``post_round`` hooks once more."""
        self.clock._trainer = self
        if getattr(self, "_once", None) is not None and self.gradient_steps == 0:
            self._once()
        per_round = self.actor_phase.steps
        while self.gradient_steps < self.total_steps:
            self.actor_phase.steps = min(per_round, self.total_steps - self.gradient_steps)
            self._metrics = {}
            for op in self._ops["round"]:
                op()
            self.gradient_steps += self.actor_phase.steps
            self.round += 1
            self.clock.iteration = self.round
            self._metrics.update({"gradient_steps": self.gradient_steps, "wall_time_s": self.clock.wall_time})
            for op in self._ops["post_round"]:
                out = op()
                if out:
                    self._metrics.update(out)
            if self.logger is not None:
                for key, value in self._metrics.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.logger.log_scalar(key, value, step=self.gradient_steps)
        self.actor_phase.steps = per_round


def _bc_loss_fn(bc_loss: BCLoss) -> Callable[[TensorDictBase], tuple[Tensor, dict[str, Tensor]]]:
    def loss_fn(batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        return bc_loss(batch).get("loss_bc"), {}

    return loss_fn


class OfflineEvaluate:
    """Deterministic evaluation every ``interval`` rounds and after the last, appended to ``eval.csv``.

    Reuses :meth:`torchrl_awr.Evaluate.episode_returns`; rows are keyed by gradient steps.
    """

    def __init__(self, evaluate: Evaluate, trainer: OfflineAWRTrainer, interval: int, csv_path: Path | None) -> None:
        self.evaluate = evaluate
        self.trainer = trainer
        self.interval = interval
        self.csv_path = csv_path
        self.history: list[dict[str, float]] = []

    def __call__(self) -> dict[str, float] | None:
        last = self.trainer.gradient_steps >= self.trainer.total_steps
        if self.trainer.round % self.interval and not last:
            return None
        returns = self.evaluate.episode_returns()
        row = {
            "gradient_steps": self.trainer.gradient_steps,
            "wall_time_s": self.trainer.clock.wall_time,
            "eval_return_mean": returns.mean().item(),
            "eval_return_std": returns.std(unbiased=False).item(),
        }
        self.history.append(row)
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with self.csv_path.open("a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=OFFLINE_EVAL_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
        return {"eval/return_mean": row["eval_return_mean"], "eval/return_std": row["eval_return_std"]}


def _phase_kwargs(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Keyword arguments of :class:`RegressionPhase` that the config sets (device, compile, cudagraphs)."""
    accepted = inspect.signature(RegressionPhase).parameters
    kwargs: dict[str, Any] = {}
    if "device" in accepted:
        kwargs["device"] = device
    for name in ("compile", "cudagraphs"):
        if name in accepted and OmegaConf.select(cfg, f"optim.{name}") is not None:
            kwargs[name] = bool(OmegaConf.select(cfg, f"optim.{name}"))
    return kwargs


def resolve_offline_run(overrides: list[str]) -> tuple[DictConfig, Path]:
    """Config and output dir of an offline run (``outputs/offline/<env>/<stamp>-s<seed>-<pid>`` by default).

    Raises:
        ValueError: bad overrides, an unknown env id or no ``dataset.path``.
    """
    cfg = load_config(overrides)
    check_env_id(cfg.env.name)
    if not cfg.dataset.path:
        raise ValueError(
            f"dataset.path is required: with dataset.source={cfg.dataset.source}, pass "
            f"dataset.path=<{PATH_HELP[cfg.dataset.source]}>."
        )
    if cfg.output_dir:
        return cfg, Path(cfg.output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return cfg, Path("outputs") / "offline" / cfg.env.name.replace("/", "_") / f"{stamp}-s{cfg.seed}-{os.getpid()}"


def build_offline_trainer(
    cfg: DictConfig, output_dir: Path, tags: list[str] | None = None
) -> tuple[OfflineAWRTrainer, OfflineEvaluate, int]:
    """Dataset → buffer, networks (normaliser fitted on the dataset), loss, optimizers, trainer, evaluation.

    Returns ``(trainer, evaluator, number of transitions)``.

    Raises:
        DatasetError: the dataset is missing, malformed or does not fit the env.
    """
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset.source, cfg.dataset.path, cfg.dataset.name)  # bad data fails before the env
    eval_env = make_env(cfg.env.name, num_envs=cfg.eval.episodes, seed=cfg.seed + 10_000)
    data = fit_to_env(data, eval_env, f"dataset {cfg.dataset.path!r}")
    if data.shape[0] < cfg.optim.batch_size:
        raise DatasetError(
            f"the dataset holds {data.shape[0]} transitions, fewer than optim.batch_size={cfg.optim.batch_size}."
        )
    loss = make_loss(cfg, eval_env)
    norm = loss.actor_network.module[0][0]
    UpdateObservationNorm(norm, max_samples=data.shape[0])(data)  # state statistics of the whole dataset, frozen
    # Envs step on the CPU: a learner on a GPU evaluates through a CPU copy of its policy (as experiment.py does).
    acting_policy = copy.deepcopy(loss.actor_network) if device.type != "cpu" else loss.actor_network
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
        phase_kwargs=_phase_kwargs(cfg, device),
        logger=make_logger(cfg, output_dir, tags),
    )
    max_steps = max_episode_steps(cfg.env.name)
    source = {"source": loss.actor_network} if acting_policy is not loss.actor_network else {}
    evaluate = Evaluate(eval_env, acting_policy, trainer.clock, interval=1, max_steps=max_steps, **source)
    evaluator = OfflineEvaluate(evaluate, trainer, cfg.eval.interval, output_dir / "eval.csv")
    trainer.register_op("post_round", evaluator)
    return trainer, evaluator, data.shape[0]


def run_offline(cfg: DictConfig, output_dir: Path, tags: list[str] | None = None) -> dict:
    """Train one offline run and write ``config.yaml``, ``eval.csv``, ``policy.pt``, ``summary.json``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml")
    (output_dir / "eval.csv").unlink(missing_ok=True)
    trainer, evaluator, transitions = build_offline_trainer(cfg, output_dir, tags)
    trainer.train()
    torch.save(trainer.loss_module.actor_network.state_dict(), output_dir / "policy.pt")
    final = evaluator.history[-1]
    summary = {
        "env": cfg.env.name,
        "seed": cfg.seed,
        "algo": cfg.offline.algo,
        "dataset": {"source": cfg.dataset.source, "path": cfg.dataset.path, "name": cfg.dataset.name},
        "transitions": transitions,
        "gradient_steps": trainer.gradient_steps,
        "final_eval_return_mean": final["eval_return_mean"],
        "final_eval_return_std": final["eval_return_std"],
        "wall_time_s": trainer.clock.wall_time,
        "output_dir": str(output_dir),
    }
    if not math.isfinite(summary["final_eval_return_mean"]):
        raise FloatingPointError("the final evaluation return is not finite")
    if trainer.logger is not None and cfg.logger.backend == "wandb":
        trainer.logger.experiment.summary.update(summary)
        trainer.logger.experiment.finish()
    write_json(output_dir / "summary.json", summary)
    return summary
