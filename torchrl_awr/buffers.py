"""The replay buffers AWR reads and what fills them: the online FIFO buffer and the dataset buffer.

Both hold flat ``[N]`` transitions with zeroed slots for the targets :func:`torchrl_awr.relabel` writes (the
loss's ``advantage`` and ``value_target`` keys), so storages whose keys are fixed at their first write
(memory-mapped ones) have room for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer, TensorDictReplayBuffer
from torchrl.trainers import Trainer, TrainerHookBase, mask_batch

from torchrl_awr.targets import chronological_indices

TARGET_KEYS: tuple[NestedKey, ...] = ("advantage", "value_target")  # AWRLoss's default tensor keys


def valid_transitions(batch: TensorDictBase) -> TensorDictBase:
    """A collector batch as a flat ``[N]`` batch of its valid transitions (``("collector", "mask")`` applied)."""
    return mask_batch(batch).reshape(-1)


def with_target_slots(data: TensorDictBase, target_keys: Sequence[NestedKey] = TARGET_KEYS) -> TensorDictBase:
    """``data`` with a zero ``[N, 1]`` entry for each of ``target_keys`` it lacks (in place; returned)."""
    for key in target_keys:
        if key not in data.keys(True):
            data.set(key, torch.zeros(*data.batch_size, 1, device=data.device))
    return data


class ExtendBuffer(TrainerHookBase):
    """Append the collected batch (valid transitions only, with target slots) to the FIFO replay buffer.

    Stage: ``batch_process``. Its state is the buffer's, so checkpoints hold the buffer.
    """

    def __init__(
        self,
        replay_buffer: ReplayBuffer,
        target_keys: Sequence[NestedKey] = TARGET_KEYS,
        exclude: tuple = ("loc", "scale", "logits", "observation_norm"),
    ) -> None:
        self.replay_buffer = replay_buffer
        self.target_keys = target_keys
        self.exclude = exclude

    def __call__(self, batch: TensorDictBase) -> None:
        self.replay_buffer.extend(with_target_slots(valid_transitions(batch).exclude(*self.exclude), self.target_keys))

    def state_dict(self) -> dict[str, Any]:
        return self.replay_buffer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.replay_buffer.load_state_dict(state_dict)

    def register(self, trainer: Trainer, name: str = "replay_buffer") -> None:
        trainer.register_op("batch_process", self)
        trainer.register_module(name, self)


def make_replay_buffer(cfg: DictConfig, output_dir: Path, device: torch.device) -> TensorDictReplayBuffer:
    """FIFO buffer of ``buffer.size`` transitions in RAM (``tensor``) or memory-mapped files (``memmap``)."""
    if cfg.buffer.storage == "memmap":
        storage = LazyMemmapStorage(cfg.buffer.size, scratch_dir=output_dir / "buffer", device=device, existsok=True)
    else:
        storage = LazyTensorStorage(cfg.buffer.size, device=device)
    return TensorDictReplayBuffer(storage=storage)


def make_offline_buffer(
    data: TensorDictBase, device: torch.device | str = "cpu", target_keys: Sequence[NestedKey] = TARGET_KEYS
) -> TensorDictReplayBuffer:
    """A replay buffer holding exactly ``data`` (a dataset's transitions), with zeroed target slots.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> rb = make_offline_buffer(TensorDict(observation=torch.zeros(5, 3), batch_size=[5]))
        >>> len(rb), rb.storage[:5]["value_target"].shape
        (5, torch.Size([5, 1]))
    """
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(data.shape[0], device=device))
    buffer.extend(with_target_slots(data.to_tensordict(), target_keys).to(device))
    return buffer


MIXES = ("evict", "keep", "anneal")  # dataset.mix


class MixedBuffer(TrainerHookBase):
    """What the update reads in a run that starts from a dataset: a share of the dataset plus the online FIFO buffer.

    Before each update (stage ``pre_optim_steps``, registered ahead of it) the buffer :attr:`buffer` is refilled with
    the dataset's share — its newest ``k`` transitions — followed by the online buffer's content, oldest first:

    * ``mix="keep"``: all of the dataset, always (``k = n``);
    * ``"anneal"``: ``k = n · max(0, 1 − frames / anneal_frames)``, to none after ``anneal_frames`` online frames;
    * ``"evict"``: new data evicts the dataset as it would in one FIFO of ``online_capacity``:
      ``k = min(n, online_capacity − len(online))``.

    The share is a function of the online frames and buffer, so nothing here is checkpointed (the dataset is
    re-read on resume; the online buffer is checkpointed on its own). The dataset's trajectory ids must differ from
    the collector's (the builder makes them negative), so TD(λ) never joins a dataset path with an online one.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> dataset = TensorDict(x=torch.zeros(6), batch_size=[6])
        >>> online = TensorDictReplayBuffer(storage=LazyTensorStorage(4))
        >>> _ = online.extend(TensorDict(x=torch.ones(3), batch_size=[3]))
        >>> mixed = MixedBuffer(dataset, online, mix="evict")
        >>> mixed()
        >>> mixed.buffer.storage[: len(mixed.buffer)]["x"]
        tensor([0., 1., 1., 1.])
    """

    def __init__(
        self, dataset: TensorDictBase, online: ReplayBuffer, mix: str = "evict", anneal_frames: int = 500_000
    ) -> None:
        if mix not in MIXES:
            raise ValueError(f"dataset.mix={mix!r} is not allowed; choose one of {', '.join(MIXES)}.")
        self.dataset = dataset
        self.online = online
        self.mix = mix
        self.anneal_frames = anneal_frames
        capacity = dataset.shape[0] + online.storage.max_size
        self.buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(capacity, device=online.storage.device))
        self._trainer: Trainer | None = None

    def share(self) -> int:
        """How many dataset transitions the next update reads."""
        n = self.dataset.shape[0]
        if self.mix == "keep":
            return n
        if self.mix == "anneal":
            frames = self._trainer.collected_frames if self._trainer is not None else 0
            return round(n * max(0.0, 1.0 - frames / self.anneal_frames))
        return max(0, min(n, self.online.storage.max_size - len(self.online)))

    def __call__(self) -> None:
        k = self.share()
        parts = [self.dataset[self.dataset.shape[0] - k :]] if k else []
        if len(self.online):
            keys = list(self.dataset.keys(True, True))
            parts.append(self.online.storage.get(chronological_indices(self.online)).select(*keys))
        self.buffer.empty()
        self.buffer.extend(torch.cat(parts))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return

    def register(self, trainer: Trainer, name: str = "mixed_buffer") -> None:
        self._trainer = trainer
        trainer.register_op("pre_optim_steps", self)
