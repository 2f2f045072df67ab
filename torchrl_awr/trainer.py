"""AWRTrainer: the AWR iteration, online or offline, as a short list of TorchRL trainer hooks."""

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
from tensordict import TensorDict, TensorDictBase
from torchrl.checkpoint import Checkpoint, CheckpointRotation, GlobalRNGState
from torchrl.collectors import BaseCollector
from torchrl.data import ReplayBuffer
from torchrl.envs import ObservationNorm
from torchrl.objectives import BCLoss
from torchrl.record.loggers import Logger
from torchrl.trainers import Trainer, UpdateWeights

from torchrl_awr.buffers import ExtendBuffer, MixedBuffer, with_target_slots
from torchrl_awr.errors import one_line
from torchrl_awr.integrity import ResumeRefused, SealedRotation, damage, remove_stale
from torchrl_awr.loss import AWRLoss
from torchrl_awr.models import UpdateObservationNorm
from torchrl_awr.monitoring import LogEpisodeReturn, RunClock
from torchrl_awr.update import AWRUpdate, BCObjective, RegressionPhase

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
    Its :class:`~torchrl_awr.monitoring.RunClock` (``clock``) counts ``collected_frames`` in ``unit``;
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
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, ResumeRefused):  # torchrl wraps what a part raises
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise cause from None
            raise ValueError(f"checkpoint {str(latest)!r} is unreadable: {one_line(err)}") from None
        self.clock.start()
        return latest


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


class AWRTrainer(ResumableTrainer):
    """Advantage-Weighted Regression on a :class:`~torchrl.trainers.Trainer`, online or offline.

    One AWR iteration (the paper's Algorithm 1) is this list of hooks, run in
    registration order for each batch; the update itself reads top to bottom in
    :meth:`torchrl_awr.update.AWRUpdate.__call__`:

    ============================  ===================  ==========================================
    hook (module name)            stage                step
    ============================  ===================  ==========================================
    ``update_observation_norm``   ``batch_process``    state statistics from the first N samples
    ``replay_buffer``             ``batch_process``    extend the FIFO buffer
    ``log_episode_return``        ``pre_steps_log``    training return
    ``mixed_buffer``              ``pre_optim_steps``  with a ``dataset``: its share beside the FIFO buffer
    ``awr_update``                ``pre_optim_steps``  relabel, fit V, relabel, fit π
    ``update_weights``            ``post_steps``       push the policy to the collector
    ``clock``                     ``post_steps_log``   frames, wall time, frames/s
    ============================  ===================  ==========================================

    **Offline** (``collector=None``): the buffer is a fixed dataset
    (:func:`~torchrl_awr.buffers.make_offline_buffer`, its normaliser fitted beforehand), the collector is a
    :class:`GradientSteps` clock, and each round runs only ``awr_update``; ``total_frames`` and every count
    (logger steps, checkpoint intervals, :class:`~torchrl_awr.Evaluate`'s rows) are policy gradient steps, as
    in TorchRL's offline sota-implementations (``iql/iql_offline.py``). The dataset is not checkpointed:
    re-read it to resume. ``bc_loss`` (TorchRL's :class:`~torchrl.objectives.BCLoss` on the same actor)
    replaces the update by one unweighted phase: behaviour cloning.

    AWR's two phases have their own optimizers and step counts, so the
    trainer's generic per-step loop is off (see :class:`ResumableTrainer`,
    which also gives atomic checkpoints, with the online buffer and the
    normaliser, and :meth:`resume`). Add an evaluation with
    :class:`torchrl_awr.Evaluate`, replace any hook with :meth:`register_op`.

    Args:
        collector: a TorchRL collector running ``loss_module.actor_network``; ``None`` trains offline.
        loss_module: the :class:`~torchrl_awr.AWRLoss`.
        replay_buffer: FIFO buffer over a flat tensor storage (offline: the dataset).
        actor_optimizer / critic_optimizer: one per phase.
        total_frames: frames to collect (offline: policy gradient steps).

    Keyword Args:
        actor_steps, critic_steps, batch_size: the phases' sizes (1000, 200, 256); offline, the last round's
            actor steps are cut to ``total_frames``.
        relabel: ``"refresh"`` (TD(λ) returns recomputed before each phase) or ``"once"`` (offline: kept).
        observation_norm: the shared in-network normaliser to fit online, if any.
        normalizer_samples: samples whose statistics it takes before freezing.
        frames_per_batch: frames per iteration, for checkpoint intervals (default: the collector's).
        bc_loss: offline, train by behaviour cloning with this loss instead of AWR.
        dataset: online, transitions (TED layout, trajectory ids apart from the collector's) the update reads beside
            the FIFO buffer, mixed by ``dataset_mix`` (``"evict"``, ``"keep"``, ``"anneal"`` over ``anneal_frames``
            online frames; see :class:`~torchrl_awr.buffers.MixedBuffer`). Not checkpointed.
        checkpoint_dir: where rotated checkpoints go (``None``: no checkpoints).
        checkpoint_interval: iterations between checkpoints.
        keep_checkpoints: how many checkpoints to keep.
        logger: a :mod:`torchrl.record.loggers` logger.
        progress_bar: show a tqdm bar.
        seed: seed for torch, numpy and the collector.
        device: where the phases' minibatches live (default: the parameters' device).
        compile: each phase's update step as one :func:`torch.compile` graph.
        unroll: with ``compile``, update steps per call of a phase's graph (where it divides the phase's steps).
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

        Offline, on a random-policy dataset of two episodes:

        >>> from torchrl_awr import make_offline_buffer
        >>> data = env.rollout(400, break_when_any_done=False)
        >>> data["collector", "traj_ids"] = torch.arange(400) // 200
        >>> trainer = AWRTrainer(
        ...     collector=None, loss_module=loss, replay_buffer=make_offline_buffer(data),
        ...     actor_optimizer=torch.optim.Adam(actor.parameters(), 1e-3),
        ...     critic_optimizer=torch.optim.Adam(loss.value_network.parameters(), 1e-3),
        ...     total_frames=30, actor_steps=20, critic_steps=5, batch_size=64, progress_bar=False)
        >>> trainer.train()
        >>> trainer.collected_frames, trainer.clock.iteration
        (30, 2)
    """

    def __init__(
        self,
        *,
        collector: BaseCollector | None,
        loss_module: AWRLoss,
        replay_buffer: ReplayBuffer,
        actor_optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        total_frames: int,
        actor_steps: int = 1000,
        critic_steps: int = 200,
        batch_size: int = 256,
        relabel: str = "refresh",
        observation_norm: ObservationNorm | None = None,
        normalizer_samples: int = 300_000,
        frames_per_batch: int | None = None,
        bc_loss: BCLoss | None = None,
        dataset: TensorDictBase | None = None,
        dataset_mix: str = "evict",
        anneal_frames: int = 500_000,
        checkpoint_dir: str | pathlib.Path | None = None,
        checkpoint_interval: int = 10,
        keep_checkpoints: int = 2,
        logger: Logger | None = None,
        progress_bar: bool = True,
        seed: int | None = None,
        device: torch.device | str | None = None,
        compile: bool = False,
        cudagraphs: bool = False,
        unroll: int = 2,
    ) -> None:
        online = collector is not None
        if not online and actor_steps <= 0:
            raise ValueError(f"actor_steps={actor_steps!r}; offline training needs actor steps > 0.")
        if online and bc_loss is not None:
            raise ValueError("bc_loss: behaviour cloning trains offline only (collector=None).")
        super().__init__(
            collector=collector if online else GradientSteps(actor_steps, total_frames),
            loss_module=loss_module,
            total_frames=total_frames,
            frames_per_batch=(frames_per_batch or collector.frames_per_batch) if online else actor_steps,
            checkpoint_dir=checkpoint_dir,
            checkpoint_interval=checkpoint_interval,
            keep_checkpoints=keep_checkpoints,
            logger=logger,
            progress_bar=progress_bar,
            seed=seed,
            unit="frames" if online else "gradient_steps",
        )
        if dataset is not None and not online:
            raise ValueError("dataset: offline, pass the dataset as the replay_buffer (make_offline_buffer).")
        self.buffer = replay_buffer  # what the update reads; online it is also TorchRL's (checkpointed) replay_buffer
        keys = loss_module.tensor_keys
        target_keys = (keys.advantage, keys.value_target)
        if online:
            self.replay_buffer = replay_buffer
            if observation_norm is not None:
                UpdateObservationNorm(observation_norm, normalizer_samples).register(self)
            ExtendBuffer(replay_buffer, target_keys=target_keys).register(self)
            LogEpisodeReturn().register(self)
        if dataset is not None:
            mixed = MixedBuffer(with_target_slots(dataset, target_keys), replay_buffer, dataset_mix, anneal_frames)
            mixed.register(self)
            self.buffer = mixed.buffer
        phase = {"device": device, "compile": compile, "cudagraphs": cudagraphs, "unroll": unroll}
        if bc_loss is None:
            self.update = AWRUpdate(
                loss_module, self.buffer, actor_optimizer, critic_optimizer, actor_steps=actor_steps,
                critic_steps=critic_steps, batch_size=batch_size, relabel=relabel, **phase,
            )
            self.actor_phase = self.update.actor_phase
        else:
            self.update = self.actor_phase = RegressionPhase(
                "actor_phase", BCObjective(bc_loss), [*loss_module.actor_network.in_keys, keys.action],
                replay_buffer, actor_optimizer, actor_steps, batch_size, **phase,
            )
        if not online:
            self.register_op("batch_process", self._set_round_steps)
        self.update.register(self)
        if online:
            actor = loss_module.actor_network
            UpdateWeights(collector, 1, policy_weights_getter=lambda: TensorDict.from_module(actor)).register(self)
        self.clock.register(self)

    def _set_round_steps(self, batch: TensorDictBase) -> None:
        """Offline: the round's actor steps are the clock's batch size (the last round may be cut)."""
        self.actor_phase.steps = batch.numel()
