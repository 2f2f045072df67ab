"""Actor and critic builders with the original AWR architecture.

Both networks read the raw ``"observation"`` and standardise it inside the
network with a shared :class:`~torchrl.envs.transforms.ObservationNorm`
(as the original does), so the replay buffer keeps raw observations and a
statistics update applies consistently to every stored sample. The statistics
travel with the policy weights (they are buffers of the module).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import (
    AddStateIndependentNormalScale,
    InteractionType,
    ProbabilisticTensorDictSequential,
    TensorDictSequential,
)
from torch import nn
from torch.distributions import Categorical as CategoricalDist
from torchrl.data import Categorical, Composite, OneHot, TensorSpec
from torchrl.envs import ObservationNorm
from torchrl.modules import MLP, IndependentNormal, OneHotCategorical, ProbabilisticActor
from torchrl.modules.distributions import TanhNormal
from torchrl.trainers import Trainer, TrainerHookBase

from torchrl_awr.buffers import valid_transitions
from torchrl_awr.compat import DirectWriteModule, StateNorm

NORM_KEY = "observation_norm"
# hidden-layer activations a builder accepts by name (the original: ReLU)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


def observation_norm_of(network: nn.Module) -> ObservationNorm | None:
    """The (first) :class:`~torchrl.envs.ObservationNorm` inside ``network``, or ``None``: the shared state
    normaliser of the AWR networks."""
    return next((m for m in network.modules() if isinstance(m, ObservationNorm)), None)


def make_observation_norm(
    observation_size: int, observation_key: str = "observation", clip: float | None = None
) -> ObservationNorm:
    """An identity :class:`~torchrl.envs.ObservationNorm` for in-network state normalisation.

    Its ``loc``/``scale`` start at 0/1 and are set by
    :class:`torchrl_awr.UpdateObservationNorm` from the first samples, then frozen. With ``clip`` the standardised
    observation is clamped to ``[-clip, clip]``: statistics frozen early can lie far from what a later policy
    visits (a contact force that was 0 in every early sample standardises to ±100 with the std floor of 1e-2).

    Examples:
        >>> from tensordict import TensorDict
        >>> norm = make_observation_norm(3, clip=5.0)
        >>> norm.loc.shape, norm.scale.shape
        (torch.Size([3]), torch.Size([3]))
        >>> norm(TensorDict(observation=torch.tensor([[1.0, -40.0, 0.5]]), batch_size=[1]))["observation_norm"]
        tensor([[ 1.0000, -5.0000,  0.5000]])
    """
    return StateNorm(
        loc=torch.zeros(observation_size),
        scale=torch.ones(observation_size),
        in_keys=[observation_key],
        out_keys=[NORM_KEY],
        standard_normal=True,
        clip=clip,
    )


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
        obs = valid_transitions(batch).get(self.key).reshape(-1, *self.norm.loc.shape).double().cpu()
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


def _size(spec_or_size: TensorSpec | int, key: str) -> int:
    if isinstance(spec_or_size, int):
        return spec_or_size
    if isinstance(spec_or_size, Composite):
        spec_or_size = spec_or_size[key]
    return int(spec_or_size.shape[-1])


def _mlp(
    in_features: int,
    out_features: int,
    hidden_sizes: Sequence[int],
    init_output_scale: float | None,
    activation: str = "relu",
    layer_norm: bool = False,
) -> MLP:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}; allowed: {', '.join(ACTIVATIONS)}.")
    net = MLP(
        in_features=in_features,
        out_features=out_features,
        num_cells=list(hidden_sizes),
        activation_class=ACTIVATIONS[activation],
        # Linear -> LayerNorm -> activation in each hidden layer
        norm_class=nn.LayerNorm if layer_norm else None,
        norm_kwargs=[{"normalized_shape": width} for width in hidden_sizes] if layer_norm else None,
    )
    if init_output_scale is not None:  # the original: output layer uniform in ±scale, bias 0
        nn.init.uniform_(net[-1].weight, -init_output_scale, init_output_scale)
        nn.init.zeros_(net[-1].bias)
    return net


class GaussianParams(nn.Module):
    """``(loc, scale)`` of the AWR Gaussian: MLP mean and state-independent std.

    Both are produced in normalised ``[-1, 1]`` action units; when ``low`` and
    ``high`` are given they are mapped onto those bounds (``loc`` affinely,
    ``scale`` by the half range), as the original's action normaliser does.
    """

    def __init__(
        self,
        mean_net: nn.Module,
        std: AddStateIndependentNormalScale,
        low: torch.Tensor | None = None,
        high: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.mean_net = mean_net
        self.std = std
        # [-1, 1] bounds (most MuJoCo tasks) need no mapping: skip its three ops per forward and backward.
        self.rescale = low is not None and not (bool((low == -1).all()) and bool((high == 1).all()))
        if self.rescale:
            self.register_buffer("mid", (high + low) / 2)
            self.register_buffer("half_range", (high - low) / 2)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale = self.std(self.mean_net(observation))
        if self.rescale:
            return self.mid + self.half_range * loc, self.half_range * scale
        return loc, scale


def make_awr_actor(
    observation_spec: TensorSpec | int,
    action_spec: TensorSpec,
    *,
    hidden_sizes: Sequence[int] = (128, 64),
    activation: str = "relu",
    layer_norm: bool = False,
    action_std: float = 0.4,
    learn_std: bool = False,
    tanh: bool = False,
    init_output_scale: float = 0.01,
    observation_norm: ObservationNorm | None = None,
    observation_key: str = "observation",
) -> ProbabilisticTensorDictSequential:
    """The AWR policy: ReLU MLP (128, 64) → Gaussian (continuous) or categorical (discrete).

    Continuous actions: the mean is produced in normalised ``[-1, 1]`` units and
    mapped onto the action bounds; the std is ``action_std`` in those units,
    fixed (the original) or learned (``learn_std=True``, initialised at
    ``action_std``). ``tanh=True`` uses a :class:`~torchrl.modules.TanhNormal`
    that stays inside the bounds instead. Discrete actions (``OneHot`` or
    ``Categorical`` specs) use the matching categorical distribution.

    Args:
        observation_spec: the observation spec (or a Composite holding ``observation_key``), or its size.
        action_spec: the env's action spec (``env.action_spec``).

    Keyword Args:
        hidden_sizes: hidden layer widths. Defaults to ``(128, 64)``.
        activation: hidden-layer activation, one of ``ACTIVATIONS``. Defaults to ``"relu"`` (the original).
        layer_norm: a LayerNorm after each hidden linear layer, before its activation. Defaults to ``False``.
        action_std: Gaussian std in normalised action units. Defaults to ``0.4``.
        learn_std: learn a state-independent std. Defaults to ``False``.
        tanh: TanhNormal instead of a Gaussian. Defaults to ``False``.
        init_output_scale: output layer initialised uniformly in ±this. Defaults to ``0.01``.
        observation_norm: a shared :func:`make_observation_norm` (one is made if ``None``).
        observation_key: the observation entry. Defaults to ``"observation"``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> actor = make_awr_actor(17, Bounded(-1.0, 1.0, shape=(6,)), action_std=0.4)
        >>> td = actor(TensorDict(observation=torch.randn(5, 17), batch_size=[5]))
        >>> td["action"].shape
        torch.Size([5, 6])
    """
    obs_size = _size(observation_spec, observation_key)
    if observation_norm is None:
        observation_norm = make_observation_norm(obs_size, observation_key)
    if isinstance(action_spec, Composite):
        action_spec = action_spec["action"]
    discrete = isinstance(action_spec, (OneHot, Categorical))
    if discrete:
        net = _mlp(obs_size, action_spec.space.n, hidden_sizes, init_output_scale, activation, layer_norm)
        head = DirectWriteModule(net, in_keys=[NORM_KEY], out_keys=["logits"])
        dist_class = OneHotCategorical if isinstance(action_spec, OneHot) else CategoricalDist
        dist_kwargs: dict = {}
        dist_keys = ["logits"]
    else:
        if not (action_std > 0 and math.isfinite(action_std)):
            raise ValueError(f"make_awr_actor: action_std={action_std!r}; it must be a finite number > 0.")
        low, high = action_spec.space.low.float(), action_spec.space.high.float()
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ValueError(f"make_awr_actor: action bounds must be finite, got low={low}, high={high}.")
        action_size = int(action_spec.shape[-1])
        net = _mlp(obs_size, action_size, hidden_sizes, init_output_scale, activation, layer_norm)
        scale = AddStateIndependentNormalScale(
            action_size, scale_mapping="exp", init_value=math.log(action_std), make_param=learn_std
        )
        params = GaussianParams(net, scale) if tanh else GaussianParams(net, scale, low, high)
        head = DirectWriteModule(params, in_keys=[NORM_KEY], out_keys=["loc", "scale"])
        dist_keys = ["loc", "scale"]
        if tanh:
            dist_class, dist_kwargs = TanhNormal, {"low": low, "high": high}
        else:
            dist_class, dist_kwargs = IndependentNormal, {"tanh_loc": False}
    return ProbabilisticActor(
        TensorDictSequential(observation_norm, head),
        in_keys=dist_keys,
        out_keys=["action"],
        spec=action_spec,
        distribution_class=dist_class,
        distribution_kwargs=dist_kwargs,
        default_interaction_type=InteractionType.RANDOM,
        return_log_prob=False,
    )


def make_awr_value(
    observation_spec: TensorSpec | int,
    *,
    hidden_sizes: Sequence[int] = (128, 64),
    activation: str = "relu",
    layer_norm: bool = False,
    value_scale: float = 1.0,
    observation_norm: ObservationNorm | None = None,
    observation_key: str = "observation",
) -> TensorDictSequential:
    """The AWR critic V(s): ReLU MLP (128, 64) writing ``"state_value"``.

    ``hidden_sizes``, ``activation`` and ``layer_norm`` as in :func:`make_awr_actor`.
    ``value_scale`` multiplies the network output: the original predicts values
    in units of ``1/(1-γ)`` (pair it with ``AWRLoss(value_scale=...)``).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> value = make_awr_value(17)
        >>> value(TensorDict(observation=torch.randn(5, 17), batch_size=[5]))["state_value"].shape
        torch.Size([5, 1])
    """
    obs_size = _size(observation_spec, observation_key)
    if observation_norm is None:
        observation_norm = make_observation_norm(obs_size, observation_key)
    net: nn.Module = _mlp(obs_size, 1, hidden_sizes, None, activation, layer_norm)
    if value_scale != 1.0:
        net = nn.Sequential(net, _Scale(value_scale))
    return TensorDictSequential(observation_norm, DirectWriteModule(net, in_keys=[NORM_KEY], out_keys=["state_value"]))


def make_awr_networks(
    observation_spec: TensorSpec,
    action_spec: TensorSpec,
    *,
    hidden_sizes: Sequence[int] = (128, 64),
    activation: str = "relu",
    layer_norm: bool = False,
    action_std: float = 0.4,
    learn_std: bool = False,
    tanh: bool = False,
    value_scale: float = 1.0,
    observation_clip: float | None = None,
) -> tuple[ProbabilisticTensorDictSequential, TensorDictSequential]:
    """``(actor, critic)`` for one env's unbatched specs, sharing one observation normaliser.

    ``observation_clip`` is the normaliser's (:func:`make_observation_norm`); the other keyword arguments are those
    of :func:`make_awr_actor` and :func:`make_awr_value`.

    Examples:
        >>> from torchrl.data import Bounded, Unbounded
        >>> actor, value = make_awr_networks(Unbounded(3), Bounded(-1.0, 1.0, shape=(1,)))
        >>> actor.module[0][0] is value.module[0]
        True
    """
    norm = make_observation_norm(observation_spec.shape[-1], clip=observation_clip)
    actor = make_awr_actor(
        observation_spec,
        action_spec,
        hidden_sizes=hidden_sizes,
        activation=activation,
        layer_norm=layer_norm,
        action_std=action_std,
        learn_std=learn_std,
        tanh=tanh,
        observation_norm=norm,
    )
    value = make_awr_value(
        observation_spec,
        hidden_sizes=hidden_sizes,
        activation=activation,
        layer_norm=layer_norm,
        value_scale=value_scale,
        observation_norm=norm,
    )
    return actor, value


class _Scale(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
