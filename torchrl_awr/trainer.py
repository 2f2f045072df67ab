"""AWRTrainer: the AWR iteration as a readable list of TorchRL trainer hooks."""

from __future__ import annotations

import pathlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import torch
from tensordict import TensorDict
from torchrl.checkpoint import Checkpoint, CheckpointRotation, GlobalRNGState
from torchrl.collectors import BaseCollector
from torchrl.data import ReplayBuffer
from torchrl.envs import ObservationNorm
from torchrl.record.loggers import Logger
from torchrl.trainers import Trainer, UpdateWeights

from torchrl_awr.hooks import (
    ExtendBuffer,
    FixedTargets,
    LogEpisodeReturn,
    RelabelTargets,
    RunClock,
    UpdateObservationNorm,
)
from torchrl_awr.integrity import SealedRotation, damage, remove_stale
from torchrl_awr.loss import AWRLoss
from torchrl_awr.update import RegressionPhase

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Training stopped on ``signum`` (SIGINT or SIGTERM) after saving a checkpoint; exit with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ResumableTrainer(Trainer):
    """A :class:`~torchrl.trainers.Trainer` run by hooks alone, checkpointed atomically and resumable.

    The generic per-step optimisation loop is off (``optim_steps_per_batch=0``):
    the subclasses' hooks do the updates. With ``checkpoint_dir`` the whole
    state (networks, optimizers, hook states, counters and RNG) is saved
    through :mod:`torchrl.checkpoint` every ``checkpoint_interval`` iterations
    of ``frames_per_batch`` frames; :meth:`resume` restores the newest.
    Its :class:`~torchrl_awr.hooks.RunClock` (``clock``) counts ``collected_frames`` in ``unit``;
    subclasses register it after their own hooks.

    Each checkpoint is sealed (:class:`torchrl_awr.integrity.SealedRotation`) once published and checked before it is
    loaded; the temporary directories of a killed save are removed when the trainer is built. During
    :meth:`train`, SIGINT and SIGTERM stop the run at the end of the iteration under way: it saves a
    checkpoint and raises :class:`Interrupted`.
    """

    def __init__(
        self,
        *,
        collector: BaseCollector,
        loss_module: AWRLoss,
        total_frames: int,
        frames_per_batch: int,
        checkpoint_dir: str | pathlib.Path | None,
        checkpoint_interval: int,
        keep_checkpoints: int,
        logger: Logger | None,
        progress_bar: bool,
        seed: int | None,
        unit: str = "frames",
    ) -> None:
        checkpoint = rotation = None
        if checkpoint_dir is not None:
            checkpoint = Checkpoint(rng=GlobalRNGState())
            rotation = SealedRotation(checkpoint_dir, keep_last=keep_checkpoints)
        super().__init__(
            collector=collector,
            total_frames=total_frames,
            frame_skip=1,
            optim_steps_per_batch=0,
            loss_module=loss_module,
            logger=logger,
            progress_bar=progress_bar,
            seed=seed,
            log_interval=0,
            save_trainer_interval=checkpoint_interval * frames_per_batch - 1,
            checkpoint=checkpoint,
            checkpoint_rotation=rotation,
            auto_log_optim_steps=False,
        )
        self.clock = RunClock(unit)
        self._signal: int | None = None
        if rotation is not None:
            remove_stale(rotation.directory)

    @contextmanager
    def _signals_stop(self) -> Iterator[None]:
        """SIGINT / SIGTERM only ask the run to stop (a second one acts as usual); the old handlers after.

        The stop goes through :meth:`~torchrl.trainers.Trainer.request_stop`: the loop finishes the iteration
        under way, saves a checkpoint (``force_save``) and ends, so no save is ever cut by the signal.
        """

        def stop(signum: int, frame: FrameType | None) -> None:
            self._signal = signum
            self.request_stop(signal.Signals(signum).name)
            for sig in STOP_SIGNALS:
                signal.signal(sig, previous[sig])

        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if main else {}
        for sig in previous:
            signal.signal(sig, stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def train(self) -> None:
        """:meth:`torchrl.trainers.Trainer.train`, stopping cleanly on SIGINT / SIGTERM (see the class).

        Raises:
            Interrupted: after the checkpoint a stop signal asked for.
        """
        self._signal = None
        with self._signals_stop():
            super().train()
        if self._signal is not None:
            raise Interrupted(self._signal)

    def resume(self, checkpoint_dir: str | pathlib.Path) -> pathlib.Path:
        """Restore the newest whole checkpoint in ``checkpoint_dir``; returns its path.

        Damaged newer checkpoints are skipped with one warning line naming them and what is wrong.

        Raises:
            ValueError: one line when there is no whole, readable checkpoint there.
        """
        latest, skipped = None, []
        for candidate in reversed(CheckpointRotation(checkpoint_dir, keep_last=1).checkpoints()):
            problem = damage(candidate)
            if problem is None:
                latest = candidate
                break
            skipped.append(f"{str(candidate)!r} is damaged ({problem})")
        if latest is None:
            raise ValueError(
                f"no whole checkpoint in {str(checkpoint_dir)!r}{': ' + '; '.join(skipped) if skipped else ''}; "
                "cannot resume."
            )
        if skipped:
            print(f"warning: checkpoint {'; '.join(skipped)}; resuming from {str(latest)!r}.", file=sys.stderr,
                  flush=True)
        try:
            self.load_from_file(latest)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint gets the same one-line error
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(f"checkpoint {str(latest)!r} is unreadable: {type(err).__name__}: {reason}") from None
        self._last_save = self.collected_frames
        self.clock.start()
        return latest


class AWRTrainer(ResumableTrainer):
    """Advantage-Weighted Regression on a :class:`~torchrl.trainers.Trainer`.

    One AWR iteration (the paper's Algorithm 1) is this list of hooks, run in
    registration order for each collected batch:

    ============================  ===================  ==========================================
    hook (module name)            stage                step
    ============================  ===================  ==========================================
    ``update_observation_norm``   ``batch_process``    state statistics from the first N samples
    ``replay_buffer``             ``batch_process``    extend the FIFO buffer
    ``log_episode_return``        ``pre_steps_log``    training return
    ``relabel_critic``            ``pre_optim_steps``  TD(λ) targets over the buffer
    ``critic_phase``              ``pre_optim_steps``  ``critic_steps`` regressions of V
    ``relabel_actor``             ``pre_optim_steps``  targets and advantages with the new V
    ``actor_phase``               ``pre_optim_steps``  ``actor_steps`` weighted regressions of π
    ``update_weights``            ``post_steps``       push the policy to the collector
    ``clock``                     ``post_steps_log``   frames, wall time, frames/s
    ============================  ===================  ==========================================

    AWR's two phases have their own optimizers and step counts, so the
    trainer's generic per-step loop is off (see :class:`ResumableTrainer`,
    which also gives atomic checkpoints, here with the replay buffer and the
    normaliser, and :meth:`resume`). Add an evaluation with
    :class:`torchrl_awr.hooks.Evaluate`, replace any hook with :meth:`register_op`.

    Args:
        collector: a TorchRL collector running ``loss_module.actor_network``.
        loss_module: the :class:`~torchrl_awr.AWRLoss`.
        replay_buffer: FIFO buffer over a flat tensor storage.
        actor_optimizer / critic_optimizer: one per phase.
        total_frames: frames to collect.

    Keyword Args:
        actor_steps, critic_steps, batch_size: the phases' sizes (1000, 200, 256).
        observation_norm: the shared in-network normaliser to fit, if any.
        normalizer_samples: samples whose statistics it takes before freezing.
        frames_per_batch: frames per iteration, for checkpoint intervals (default: the collector's).
        normalize_advantage_over_buffer: standardise advantages over the whole
            buffer before the actor phase (the original); build the loss with
            ``normalize_advantage=False`` then.
        checkpoint_dir: where rotated checkpoints go (``None``: no checkpoints).
        checkpoint_interval: iterations between checkpoints.
        keep_checkpoints: how many checkpoints to keep.
        logger: a :mod:`torchrl.record.loggers` logger.
        progress_bar: show a tqdm bar.
        seed: seed for torch, numpy and the collector.
        compile: compile each phase's update step with :func:`torch.compile`.
        cudagraphs: capture each phase's update step as a CUDA graph (the loss on a CUDA device; with Adam,
            ``capturable=True``). The collector's policy may live elsewhere (a CPU copy):
            :class:`~torchrl.trainers.UpdateWeights` copies the learner's weights into it.

    Examples:
        >>> import torch
        >>> from torchrl.collectors import Collector
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl_awr import AWRLoss, AWRTrainer, make_awr_actor, make_awr_value, make_env
        >>> from torchrl_awr import make_observation_norm
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> norm = make_observation_norm(3)
        >>> actor = make_awr_actor(3, env.action_spec, observation_norm=norm)
        >>> loss = AWRLoss(actor, make_awr_value(3, observation_norm=norm))
        >>> trainer = AWRTrainer(
        ...     collector=Collector(env, actor, frames_per_batch=256, total_frames=-1),
        ...     loss_module=loss,
        ...     replay_buffer=TensorDictReplayBuffer(storage=LazyTensorStorage(1024)),
        ...     actor_optimizer=torch.optim.SGD(actor.parameters(), lr=1e-4, momentum=0.9),
        ...     critic_optimizer=torch.optim.SGD(loss.value_network.parameters(), lr=1e-2, momentum=0.9),
        ...     total_frames=512, actor_steps=4, critic_steps=2, batch_size=64,
        ...     observation_norm=norm, progress_bar=False)
        >>> trainer.train()
        >>> trainer.collected_frames
        512
    """

    def __init__(
        self,
        *,
        collector: BaseCollector,
        loss_module: AWRLoss,
        replay_buffer: ReplayBuffer,
        actor_optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        total_frames: int,
        actor_steps: int = 1000,
        critic_steps: int = 200,
        batch_size: int = 256,
        observation_norm: ObservationNorm | None = None,
        normalizer_samples: int = 300_000,
        frames_per_batch: int | None = None,
        normalize_advantage_over_buffer: bool = False,
        checkpoint_dir: str | pathlib.Path | None = None,
        checkpoint_interval: int = 10,
        keep_checkpoints: int = 2,
        logger: Logger | None = None,
        progress_bar: bool = True,
        seed: int | None = None,
        compile: bool = False,
        cudagraphs: bool = False,
    ) -> None:
        super().__init__(
            collector=collector,
            loss_module=loss_module,
            total_frames=total_frames,
            frames_per_batch=frames_per_batch or collector.frames_per_batch,
            checkpoint_dir=checkpoint_dir,
            checkpoint_interval=checkpoint_interval,
            keep_checkpoints=keep_checkpoints,
            logger=logger,
            progress_bar=progress_bar,
            seed=seed,
        )
        self.replay_buffer = replay_buffer
        if observation_norm is not None:
            UpdateObservationNorm(observation_norm, normalizer_samples).register(self)
        keys = loss_module.tensor_keys
        ExtendBuffer(replay_buffer, target_keys=(keys.advantage, keys.value_target)).register(self)
        LogEpisodeReturn().register(self)
        register_awr_update(
            self,
            loss_module,
            replay_buffer,
            actor_optimizer,
            critic_optimizer,
            actor_steps=actor_steps,
            critic_steps=critic_steps,
            batch_size=batch_size,
            normalize_advantage_over_buffer=normalize_advantage_over_buffer,
            compile=compile,
            cudagraphs=cudagraphs,
        )
        actor = loss_module.actor_network
        UpdateWeights(collector, 1, policy_weights_getter=lambda: TensorDict.from_module(actor)).register(self)
        self.clock.register(self)


def register_awr_update(
    trainer: Trainer,
    loss_module: AWRLoss,
    replay_buffer: ReplayBuffer,
    actor_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    *,
    actor_steps: int,
    critic_steps: int,
    batch_size: int,
    normalize_advantage_over_buffer: bool = False,
    relabel: str = "refresh",
    **phase_kwargs: Any,
) -> RegressionPhase:
    """Register AWR's update on ``trainer`` at ``pre_optim_steps``; returns the actor phase.

    ``relabel="refresh"`` (the original; online and offline): ``relabel_critic``
    → ``critic_phase`` → ``relabel_actor`` → ``actor_phase``, TD(λ) targets
    recomputed over the whole buffer with the current critic before each phase.
    ``relabel="once"`` (offline): :class:`~torchrl_awr.hooks.FixedTargets`
    computes the targets at ``setup``, then ``critic_phase`` → ``fixed_targets``
    (advantages against them) → ``actor_phase``. Each
    :class:`~torchrl_awr.RegressionPhase` reads the keys its loss method needs;
    ``phase_kwargs`` (``device``, ``compile``, ``cudagraphs``) go to both.

    Raises:
        ValueError: ``relabel`` is neither ``"refresh"`` nor ``"once"``.
    """
    if relabel not in ("refresh", "once"):
        raise ValueError(f"relabel={relabel!r} is not allowed; choose refresh or once.")
    keys = loss_module.tensor_keys
    actor, value = loss_module.actor_network, loss_module.value_network
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
    actor_phase = RegressionPhase(
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
        RelabelTargets(replay_buffer, loss_module).register(trainer, "relabel_critic")
        critic_phase.register(trainer)
        RelabelTargets(replay_buffer, loss_module, normalize_advantage=normalize_advantage_over_buffer).register(
            trainer, "relabel_actor"
        )
    else:
        critic_phase.register(trainer)
        FixedTargets(replay_buffer, loss_module, normalize_advantage_over_buffer).register(trainer)
    actor_phase.register(trainer)
    return actor_phase
