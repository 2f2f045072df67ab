"""Every place torchrl-awr reaches into a private TorchRL / tensordict API, in one module.

Each helper names the versions it was written against (torchrl 0.14.1, tensordict 0.14.3) and why no public API
does the job; ``tests/test_compat.py`` fails when a helper's reason no longer holds (the private name is gone,
or the upstream problem is fixed), so that it can be deleted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tensordict import TensorDict, TensorDictBase, unravel_key
from tensordict.nn import ProbabilisticTensorDictModule, TensorDictModule, TensorDictSequential
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torch.distributions import Distribution
from torchrl.collectors import MultiAsyncCollector
from torchrl.data import ReplayBuffer
from torchrl.envs import ObservationNorm
from torchrl.objectives import LossModule
from torchrl.objectives.value import ValueEstimatorBase
from torchrl.trainers import Trainer


def fifo_start(buffer: ReplayBuffer) -> int:
    """The storage slot of the oldest entry of a full FIFO buffer: the writer's next slot to overwrite.

    torchrl 0.14.1 exposes no cursor; ``write_count % max_size`` is the same for a
    :class:`~torchrl.data.RoundRobinWriter` that was never reset, the fallback when the private one is absent.
    """
    return getattr(buffer._writer, "_cursor", buffer.write_count % buffer.storage.max_size)


@contextmanager
def values_from_tensordict(estimator: ValueEstimatorBase) -> Iterator[None]:
    """Within this context ``estimator`` reads ``V(s)`` and ``V(s')`` from the tensordict, as TorchRL's estimators do
    when built without a value network, instead of running its critic over the states and again over the next states.

    torchrl 0.14.1 has no switch for it on a built estimator; it keeps ``value_network`` in the instance's
    ``__dict__`` (not a submodule), which is where this sets it to ``None`` and back: assigning a module through
    ``nn.Module.__setattr__`` would register the critic as the estimator's submodule, a second path to its parameters.
    """
    network = estimator.__dict__["value_network"]
    estimator.__dict__["value_network"] = None
    try:
        yield
    finally:
        estimator.__dict__["value_network"] = network


def loss_mask_keys(loss: LossModule) -> tuple[NestedKey, ...]:
    """The validity-mask entries a TorchRL loss reduces over (``loss_mask_key``, ``"auto"`` expanded).

    torchrl 0.14.1 keeps the expansion of ``"auto"`` in the protected ``LossModule._loss_mask_keys``; a loss
    of our own that reduces by hand must look at the same entries.
    """
    return loss._loss_mask_keys()


def advance_progress_bar(trainer: Trainer, frames: int, unit: str = "frames") -> None:
    """Count a trainer's tqdm bar in ``unit`` (``"frames"``, ``"gradient_steps"``), from the ``frames`` it already
    has: torchrl 0.14.1 builds it as ``tqdm(total=total_frames)``, counting "it" from 0, so a resumed run's bar took
    its first batch as all its frames and showed a rate and ETA far off.

    The bar starts at ``frames`` as tqdm's ``initial`` (its rate and ETA count only what this run does). It
    (``Trainer._pbar``) exists only inside :meth:`~torchrl.trainers.Trainer.train`: call this from a ``setup`` hook.
    """
    if trainer.progress_bar:
        bar = trainer._pbar
        bar.unit, bar.unit_scale = f" {unit.replace('_', ' ')}", True
        bar.initial = bar.n = bar.last_print_n = frames
        bar.refresh()


class DirectWriteModule(TensorDictModule):
    """A :class:`~tensordict.nn.TensorDictModule` that writes plain tensor outputs straight into the tensordict.

    tensordict 0.14.3's ``TensorDictModule._write_to_tensordict`` passes each output through
    ``TensorDict.from_any``, which calls ``importlib.util.find_spec("pandas")`` every time: about 90 µs per output
    on a 2-core CPU, ~20% of an AWR actor step with its two outputs. Everything else behaves as the parent class.
    """

    def _write_to_tensordict(self, tensordict, tensors, tensordict_out=None, out_keys=None):
        if tensordict_out is not None or self.inplace is not True or not all(isinstance(t, Tensor) for t in tensors):
            return super()._write_to_tensordict(tensordict, tensors, tensordict_out, out_keys)
        out_keys = self.out_keys_source if out_keys is None else out_keys
        if len(out_keys) != len(tensors):
            raise RuntimeError(f"{len(tensors)} outputs for out_keys {out_keys}.")
        for key, tensor in zip(out_keys, tensors, strict=True):
            if key != "_":
                tensordict.set(key, tensor)
        return tensordict


class StateNorm(ObservationNorm):
    """A standardising :class:`~torchrl.envs.ObservationNorm`, ``(obs − loc) / scale``, with no data-dependent branch.

    torchrl 0.14.1's ``ObservationNorm._apply_transform`` keeps ``standard_normal`` as a tensor buffer and branches on
    it in every call: a GPU→CPU sync, which a CUDA-graph capture refuses and which breaks a :func:`torch.compile`
    graph. State dicts are the parent's. ``clip``: the standardised values are clamped to ``[-clip, clip]``.
    """

    def __init__(self, *args, clip: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clip = clip

    def _apply_transform(self, obs: Tensor) -> Tensor:
        out = (obs - self.loc) / self.scale
        return out if self.clip is None else out.clamp(-self.clip, self.clip)


class TensorChain:
    """A :class:`~tensordict.nn.TensorDictSequential` of plain modules run on its tensors, without the TensorDict
    machinery of each call; :meth:`of` builds one, or returns ``None`` for a sequence it cannot run that way.

    tensordict 0.14.3 wraps each :class:`~tensordict.nn.TensorDictModule` call in its dispatch, skip-existing,
    key-unravelling and output-writing layers; on an AWR actor (normaliser, then MLP → ``loc``, ``scale``) they cost
    ~120 µs per eager update step on a 2-core CPU, ~15% of the step. A chain reads the sequence's ``in_keys`` from
    the tensordict once, then calls each step's ``module`` (a :class:`~tensordict.nn.TensorDictModule`'s, or
    :class:`StateNorm`'s ``_apply_transform``) on the tensors its ``in_keys`` name, and returns every entry the
    sequence would have written, in a dict. It runs the same modules on the same tensors, so the values (and
    gradients) are the sequence's. Supported: :class:`~tensordict.nn.TensorDictSequential` (nested too, no
    ``selected_out_keys``, not ``partial_tolerant``), ``TensorDictModule`` and :class:`DirectWriteModule` (positional
    ``in_keys``, no hooks), :class:`StateNorm`; anything else (a subclass with its own ``forward``, a probabilistic
    module, a keyword-mapped module) gives ``None``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_awr import make_awr_value
        >>> critic = make_awr_value(3)
        >>> batch = TensorDict(observation=torch.randn(4, 3), batch_size=[4])
        >>> chain = TensorChain.of(critic)
        >>> sorted(chain(batch))
        ['observation', 'observation_norm', 'state_value']
        >>> torch.equal(chain(batch)["state_value"], critic(batch.clone())["state_value"])
        True
    """

    def __init__(self, in_keys: list[NestedKey], steps: list[tuple[Any, list[NestedKey], list[NestedKey]]]) -> None:
        self.in_keys = in_keys
        self.steps = steps  # (function of tensors, its input keys, its output keys), in order

    @classmethod
    def of(cls, module: Any) -> TensorChain | None:
        steps = cls._steps(module)
        if steps is None:
            return None
        return cls([unravel_key(k) for k in module.in_keys], steps)

    @classmethod
    def _steps(cls, module: Any) -> list | None:
        if type(module) is TensorDictSequential:
            if module._select_before_return or module.partial_tolerant:
                return None
            steps: list = []
            subs = module.module.values() if isinstance(module.module, nn.ModuleDict) else module.module
            for sub in subs:
                sub_steps = cls._steps(sub)
                if sub_steps is None:
                    return None
                steps += sub_steps
            return steps
        if type(module) is StateNorm and not module.missing_tolerance:
            fn = module._apply_transform
        elif type(module) in (TensorDictModule, DirectWriteModule) and module._kwargs is None:
            if module._forward_hooks or module._forward_pre_hooks:
                return None
            fn = module.module
        else:
            return None
        return [(fn, [unravel_key(k) for k in module.in_keys], [unravel_key(k) for k in module.out_keys])]

    def __call__(self, tensordict: TensorDictBase) -> dict[NestedKey, Tensor]:
        """The sequence's inputs read from ``tensordict`` and every entry it writes, by (unravelled) key."""
        entries = {key: tensordict.get(key) for key in self.in_keys}
        for fn, in_keys, out_keys in self.steps:
            outputs = fn(*(entries[key] for key in in_keys))
            if not isinstance(outputs, tuple):
                outputs = (outputs,)
            entries.update((key, out) for key, out in zip(out_keys, outputs, strict=True) if key != "_")
        return entries

    def distribution(self, dist_module: ProbabilisticTensorDictModule, tensordict: TensorDictBase) -> Distribution:
        """``dist_module.get_dist`` on the chain's outputs: it reads its parameters with ``.get(key, None)``, which
        the dict answers as a TensorDict would (no TensorDict is built for them)."""
        return dist_module.get_dist(self(tensordict))


def ray_local_address() -> str | None:
    """The address of the Ray cluster ``ray start`` left on this machine (what ``ray.init(address="auto")`` joins),
    or ``None``: Ray 2.x has no public call for it (``ray._private.services.canonicalize_bootstrap_address``)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - no cluster, or a Ray version without this helper: nothing found
        return None


@contextmanager
def memmap_like_keeps_content() -> Iterator[None]:
    """Work around torchrl 0.14.1: ``MinariExperienceReplay`` fills its TensorDict, then stores it with
    ``TensorDict.memmap_like``, which makes a *contentless* (all-zero) copy, so every value it returns is 0.

    Within this context ``memmap_like`` writes the content too (``memmap``); the loader checks for all-zero data
    after loading, which catches a regression.
    """
    original = TensorDict.memmap_like

    def memmap_with_content(self: TensorDict, prefix: str | None = None, *args: object, **kwargs: object):
        return self.memmap(prefix)

    TensorDict.memmap_like = memmap_with_content
    try:
        yield
    finally:
        TensorDict.memmap_like = original


class CheckpointableAsyncCollector(MultiAsyncCollector):
    """A :class:`~torchrl.collectors.MultiAsyncCollector` whose state a checkpoint can take while its workers collect.

    torchrl 0.14.1's ``MultiAsyncCollector.state_dict`` (and ``load_state_dict``) asks each worker for its state over
    the worker's pipe. A worker that finds a message waiting when it finishes a batch drops that batch
    (``collectors/_runner.py``: "we skip the collected trajectory and get the message from main") and answers the
    message; the main process, which had already asked it for that batch, then waits for it forever: a run hangs at
    its first checkpoint whenever the learner is faster than collection.

    This state leaves the workers out and keeps what the main process holds: the private frame and iteration
    counters (``_frames``, ``_iter``) and the next trajectory id (of the private ``_traj_pool``). The workers are
    rebuilt on resume (their envs start new episodes, their policy is the trainer's, pushed after every load) and
    draw ids from a new pool that starts at 0, so every id collected after a resume is shifted by the next id the
    checkpoint recorded: no trajectory after a resume shares an id with one in the restored replay buffer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._ids = _ShiftTrajectoryIds()
        super().__init__(*args, postproc=self._ids, **kwargs)

    def state_dict(self) -> OrderedDict:
        next_id = self._ids.offset + int(self._traj_pool.state_dict()["traj_id"])
        return OrderedDict(frames=self._frames, iter=self._iter, next_traj_id=next_id)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._ids.offset = int(state_dict["next_traj_id"])
        self._frames = state_dict["frames"]
        self._iter = state_dict["iter"]


class _ShiftTrajectoryIds:
    """A collector ``postproc``: trajectory ids plus ``offset``."""

    offset = 0

    def __call__(self, batch: TensorDict) -> TensorDict:
        if self.offset:  # the batch is the collector's own copy (MultiAsyncCollector clones what it receives)
            batch.set(("collector", "traj_ids"), batch.get(("collector", "traj_ids")) + self.offset)
        return batch
