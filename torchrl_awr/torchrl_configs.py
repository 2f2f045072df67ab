"""AWR in TorchRL's Hydra trainer configs: ``loss=awr`` and ``trainer=awr``.

Importing :mod:`torchrl_awr` registers :class:`AWRLossConfig` (group ``loss``, name ``awr``) and
:class:`AWRTrainerConfig` (group ``trainer``, name ``awr``) in Hydra's ``ConfigStore``, next to TorchRL's own
(``torchrl.trainers.algorithms.configs``). Env, collector, replay buffer, optimizers and logger come from
TorchRL's configs; a script selects AWR by name (see the README).

Where TorchRL's config system does not fit AWR, the bridge differs, and only there:

* two optimizers (``actor_optimizer`` / ``critic_optimizer``) instead of TorchRL's one ``optimizer``: AWR's two
  phases are separate regressions with their own learning rates and step counts;
* no advantage module in the replay buffer's ``transform`` (TorchRL's on-policy configs put GAE there): AWR
  relabels the *whole* buffer with TD(λ) and the current critic before each phase
  (:func:`~torchrl_awr.relabel`, in :class:`~torchrl_awr.AWRUpdate`), which a per-sample transform cannot do.
  The buffer must be a plain FIFO buffer;
* the collector config must be partial (``collector._partial_=true``): the trainer gives it the loss's actor as
  policy, so collection and learning share one module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModuleBase
from torchrl.collectors import BaseCollector
from torchrl.data import ReplayBuffer
from torchrl.envs import EnvBase, RewardSum, TransformedEnv
from torchrl.record.loggers import Logger
from torchrl.trainers.algorithms.configs.objectives import LossConfig
from torchrl.trainers.algorithms.configs.trainers import TrainerConfig

from torchrl_awr.compat import StateNorm
from torchrl_awr.loss import AWRLoss
from torchrl_awr.models import make_awr_networks
from torchrl_awr.trainer import AWRTrainer


@dataclass
class AWRLossConfig(LossConfig):
    """Hydra fields for :class:`~torchrl_awr.AWRLoss` and its TD(λ) estimator (``gamma``, ``lmbda``).

    ``actor_network`` / ``value_network`` may be any TorchRL network configs; left ``None``, the AWR networks
    (:func:`~torchrl_awr.make_awr_actor`, :func:`~torchrl_awr.make_awr_value`, one shared observation
    normaliser) are built for the trainer's env.
    """

    actor_network: Any = None
    value_network: Any = None
    beta: float = 1.0
    max_weight: float = 20.0
    normalize_advantage: Any = True  # True / "batch", "buffer" (over the whole buffer), False / "none"
    action_bound_penalty: float = 0.0
    entropy_coeff: float = 0.0
    value_scale: float = 1.0
    loss_critic_type: str = "l2"
    reduction: str | None = None
    separate_losses: bool = False
    gamma: float = 0.99
    lmbda: float = 0.95
    hidden_sizes: list[int] | None = None  # the AWR networks' widths when they are built here (default 128, 64)
    action_std: float = 0.4
    _partial_: bool = True  # the trainer completes it with the env
    _target_: str = "torchrl_awr.torchrl_configs.make_awr_loss"

    def __post_init__(self) -> None:
        super().__post_init__()


def make_awr_loss(
    actor_network: Any = None,
    value_network: Any = None,
    *,
    env: EnvBase | None = None,
    gamma: float = 0.99,
    lmbda: float = 0.95,
    hidden_sizes: list[int] | None = None,
    action_std: float = 0.4,
    **loss_kwargs: Any,
) -> AWRLoss:
    """The :class:`~torchrl_awr.AWRLoss` of an :class:`AWRLossConfig`, with its TD(λ) estimator.

    Raises:
        TypeError: a network is neither given nor buildable (no ``env``), or is not a TensorDict module.
        ValueError: a hyperparameter is out of range (from :class:`~torchrl_awr.AWRLoss`), or ``lmbda``/``gamma``
            are outside ``[0, 1]``.

    Examples:
        >>> from torchrl_awr import make_env
        >>> loss = make_awr_loss(env=make_env("Pendulum-v1"), beta=0.5)
        >>> type(loss).__name__, loss.beta
        ('AWRLoss', 0.5)
    """
    for name, val in (("gamma", gamma), ("lmbda", lmbda)):
        if not 0.0 <= float(val) <= 1.0:
            raise ValueError(f"loss=awr: {name}={val!r}; it must lie in [0, 1].")
    if actor_network is None or value_network is None:
        if not isinstance(env, EnvBase):
            raise TypeError("loss=awr: actor_network/value_network not given and no env to build them for.")
        # the batched specs, indexed down (torchrl 0.14.1's DoubleToFloat fails on observation_spec_unbatched)
        obs_spec, action_spec = env.observation_spec["observation"], env.action_spec
        for _ in env.batch_size:
            obs_spec, action_spec = obs_spec[0], action_spec[0]
        sizes = tuple(hidden_sizes) if hidden_sizes else (128, 64)
        actor, value = make_awr_networks(obs_spec, action_spec, hidden_sizes=sizes, action_std=action_std)
        actor_network = actor if actor_network is None else actor_network
        value_network = value if value_network is None else value_network
    if not isinstance(actor_network, ProbabilisticTensorDictSequential):
        raise TypeError(f"loss=awr: actor_network must be a probabilistic TensorDict module, got {actor_network!r}.")
    if not isinstance(value_network, TensorDictModuleBase):
        raise TypeError(f"loss=awr: value_network must be a TensorDict module, got {value_network!r}.")
    if "action_spec" not in loss_kwargs and loss_kwargs.get("action_bound_penalty", 0.0) > 0 and env is not None:
        loss_kwargs["action_spec"] = actor_network.spec
    loss = AWRLoss(actor_network, value_network, gamma=gamma, **loss_kwargs)
    loss.make_value_estimator(gamma=gamma, lmbda=lmbda)
    return loss


@dataclass
class AWRTrainerConfig(TrainerConfig):
    """Hydra fields for :class:`~torchrl_awr.AWRTrainer` (see the module docstring for what differs from
    TorchRL's trainer configs)."""

    collector: Any = None
    loss_module: Any = None
    replay_buffer: Any = None
    actor_optimizer: Any = None
    critic_optimizer: Any = None
    total_frames: int = 1_000_000
    actor_steps: int = 1000
    critic_steps: int = 200
    batch_size: int = 256
    normalizer_samples: int = 100_000
    logger: Any = None
    progress_bar: bool = True
    seed: int | None = None
    compile: bool = False
    checkpoint_dir: str | None = None
    checkpoint_interval: int = 10
    _target_: str = "torchrl_awr.torchrl_configs.make_awr_trainer"

    def __post_init__(self) -> None:
        super().__post_init__()


def _positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"trainer=awr: {name}={value!r}; it must be an integer {'>= 0' if allow_zero else '> 0'}.")
    return value


def _optimizer(name: str, optimizer: Any, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer(params=[p for p in params if p.requires_grad])
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"trainer=awr: {name} must be a torch optimizer (or a partial config), got {optimizer!r}.")
    return optimizer


def make_awr_trainer(
    *,
    collector: Any,
    loss_module: Any,
    replay_buffer: Any,
    actor_optimizer: Any,
    critic_optimizer: Any,
    total_frames: int,
    actor_steps: int = 1000,
    critic_steps: int = 200,
    batch_size: int = 256,
    normalizer_samples: int = 100_000,
    logger: Any = None,
    **trainer_kwargs: Any,
) -> AWRTrainer:
    """The :class:`~torchrl_awr.AWRTrainer` of an :class:`AWRTrainerConfig`; checks every part first.

    Raises:
        TypeError: a part has the wrong type (collector not partial, buffer not a replay buffer, ...).
        ValueError: a count is not a positive integer, or ``batch_size`` exceeds the buffer's capacity.
    """
    total_frames = _positive_int("total_frames", total_frames)
    batch_size = _positive_int("batch_size", batch_size)
    _positive_int("actor_steps", actor_steps, allow_zero=True)
    _positive_int("critic_steps", critic_steps, allow_zero=True)
    if not isinstance(collector, functools.partial):
        raise TypeError(
            "trainer=awr: the collector config must be partial (collector._partial_=true): the trainer gives it "
            f"the loss's actor as policy; got {collector!r}."
        )
    env = collector.keywords.get("create_env_fn")
    if isinstance(loss_module, functools.partial):
        loss_module = loss_module(env=env if isinstance(env, EnvBase) else None)
    if not isinstance(loss_module, AWRLoss):
        raise TypeError(f"trainer=awr: loss_module must be an AWRLoss (loss=awr), got {type(loss_module).__name__}.")
    if not isinstance(replay_buffer, ReplayBuffer):
        raise TypeError(f"trainer=awr: replay_buffer must be a TorchRL ReplayBuffer, got {replay_buffer!r}.")
    if replay_buffer.transform is not None and len(replay_buffer.transform) > 0:
        raise TypeError("trainer=awr: the replay buffer must have no transform; AWR relabels the whole buffer itself.")
    capacity = replay_buffer.storage.max_size
    if batch_size > capacity:
        raise ValueError(f"trainer=awr: batch_size={batch_size} exceeds the replay buffer's {capacity} transitions.")
    if logger is not None and not isinstance(logger, Logger):
        raise TypeError(f"trainer=awr: logger must be a torchrl Logger, got {logger!r}.")
    collector_kwargs: dict[str, Any] = {"policy": loss_module.actor_network}
    if isinstance(env, EnvBase) and "episode_reward" not in env.observation_spec.keys():
        # AWRTrainer logs the training return from RewardSum's "episode_reward"; TorchRL's env configs add none
        collector_kwargs["create_env_fn"] = TransformedEnv(env, RewardSum())
    collector = collector(**collector_kwargs)
    if not isinstance(collector, BaseCollector):
        raise TypeError(f"trainer=awr: the collector config built {type(collector).__name__}, not a collector.")
    norm = next((m for m in loss_module.actor_network.modules() if isinstance(m, StateNorm)), None)
    return AWRTrainer(
        collector=collector,
        loss_module=loss_module,
        replay_buffer=replay_buffer,
        actor_optimizer=_optimizer("actor_optimizer", actor_optimizer, list(loss_module.actor_network.parameters())),
        critic_optimizer=_optimizer(
            "critic_optimizer", critic_optimizer, list(loss_module.value_network.parameters())
        ),
        total_frames=total_frames,
        actor_steps=actor_steps,
        critic_steps=critic_steps,
        batch_size=batch_size,
        observation_norm=norm,
        normalizer_samples=normalizer_samples,
        logger=logger,
        **trainer_kwargs,
    )


def register_configs() -> None:
    """Store ``loss=awr`` and ``trainer=awr`` in Hydra's ``ConfigStore`` (done on ``import torchrl_awr``)."""
    import torchrl.trainers.algorithms.configs  # noqa: F401 - TorchRL's own groups (env, collector, ...) first

    store = ConfigStore.instance()
    store.store(group="loss", name="awr", node=AWRLossConfig)
    store.store(group="trainer", name="awr", node=AWRTrainerConfig)


register_configs()
