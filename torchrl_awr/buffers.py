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
