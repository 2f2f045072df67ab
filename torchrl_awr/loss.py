"""AWRLoss: Advantage-Weighted Regression as a TorchRL :class:`~torchrl.objectives.LossModule`.

The two regressions of AWR (Peng et al., 2019, Algorithm 1), in the order the
paper states them:

* critic: ``L_V = 1/2 · ((R − V(s)) / value_scale)²`` where ``R`` is a TD(λ)
  return (the ``value_target``);
* actor: ``L_π = −w · log π(a|s)`` with ``w = min(exp(A / β), max_weight)``
  and ``A = R − V(s)`` (optionally standardised first).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase, unravel_key
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    dispatch,
)
from tensordict.utils import NestedKey
from torch import Tensor
from torch.func import functional_call
from torchrl.data import TensorSpec
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import ValueEstimators, dispatch_value_estimator, distance_loss

from torchrl_awr.compat import TensorChain, loss_mask_keys

ADVANTAGE_EPS = 1e-5  # the original's ADV_EPS: keeps a zero-std batch finite


# normalize_advantage's accepted values and what each is stored as (see AWRLoss)
ADVANTAGE_NORMALIZATION: dict[bool | str, bool | str] = {
    True: "batch", "batch": "batch", "buffer": "buffer", False: False, "none": False
}


def awr_weights(
    advantage: Tensor, beta: float, max_weight: float, normalize: bool, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Advantage weights ``min(exp(A / β), max_weight)``, computed without overflow.

    The exponent is clipped at ``log(max_weight)`` *before* ``exp``, so a huge
    advantage or a tiny β gives ``max_weight``, never ``inf`` or ``nan``.

    Args:
        advantage: advantages, any shape.
        beta: temperature β > 0.
        max_weight: weight clip > 0.
        normalize: standardise the advantages over the given tensor first
            (``(A − mean) / (std + 1e-5)``, as the original implementation does).
        mask: boolean, the advantage's leading (batch) shape: ``False`` marks rows (padding) left out of the
            standardisation statistics; their weights are computed from a zero advantage. ``None``: every row.

    Returns:
        ``(weights, clipped)``: the weights and a boolean mask of the clipped entries.

    Examples:
        >>> import torch
        >>> w, clipped = awr_weights(torch.tensor([0.0, 1.0, 1e6]), beta=1.0, max_weight=20.0, normalize=False)
        >>> w
        tensor([ 1.0000,  2.7183, 20.0000])
        >>> clipped
        tensor([False, False,  True])
    """
    for name, val in (("beta", beta), ("max_weight", max_weight)):
        _check_positive(name, val)
    if mask is not None:
        advantage = torch.where(_broadcast(mask, advantage), advantage, torch.zeros_like(advantage))
    if normalize:
        advantage = standardize(advantage, mask)
    log_weight = advantage / beta
    log_clip = math.log(max_weight)
    clipped = log_weight > log_clip
    return log_weight.clamp_max(log_clip).exp(), clipped


def standardize(advantage: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(A − mean) / (std + 1e-5)`` with float64 statistics (a float32 mean of huge advantages overflows).

    With a ``mask`` (batch-shaped, ``False`` for padding) the statistics are those of the rows it keeps and the
    rows it drops come out as ``0``.

    Examples:
        >>> standardize(torch.tensor([1.0, 3.0]))
        tensor([-1.0000,  1.0000])
        >>> standardize(torch.tensor([1.0, 3.0, 100.0]), mask=torch.tensor([True, True, False]))
        tensor([-1.0000,  1.0000,  0.0000])
    """
    wide = advantage.double()
    if mask is None:
        return ((wide - wide.mean()) / (wide.std(unbiased=False) + ADVANTAGE_EPS)).to(advantage.dtype)
    keep = _broadcast(mask, wide)
    wide = torch.where(keep, wide, torch.zeros_like(wide))
    mean, std = _masked_mean(wide, keep), _masked_var(wide, keep).sqrt()
    out = (wide - mean) / (std + ADVANTAGE_EPS)
    return torch.where(keep, out, torch.zeros_like(out)).to(advantage.dtype)


def _broadcast(mask: Tensor, like: Tensor) -> Tensor:
    """A batch-shaped boolean ``mask`` expanded over the trailing (feature) dims of ``like``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim)).expand_as(like)


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.mean()
    keep = _broadcast(mask, x)
    return torch.where(keep, x, torch.zeros_like(x)).sum() / keep.sum().clamp_min(1)


def _masked_var(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.var(unbiased=False)
    return _masked_mean((x - _masked_mean(x, mask)) ** 2, mask)


def _masked_var_mean(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(variance, mean)`` over the rows ``mask`` keeps (one pass without a mask)."""
    if mask is None:
        return torch.var_mean(x, unbiased=False)
    mean = _masked_mean(x, mask)
    return _masked_mean((x - mean) ** 2, mask), mean


def _distribution_module(actor: torch.nn.Module) -> ProbabilisticTensorDictModule | None:
    """The module that builds the actor's distribution, where ``actor.get_dist`` would search for it on every call
    (a :class:`~tensordict.nn.ProbabilisticTensorDictSequential` returning one distribution): its last
    :class:`~tensordict.nn.ProbabilisticTensorDictModule`. ``None`` for any other actor (its own ``get_dist``)."""
    if not isinstance(actor, ProbabilisticTensorDictSequential) or actor.return_composite:
        return None
    return next((m for m in reversed(list(actor.modules())) if isinstance(m, ProbabilisticTensorDictModule)), None)


def _distribution_class(actor: torch.nn.Module) -> type[torch.distributions.Distribution] | None:
    """The actor's distribution class (``functools.partial`` unwrapped), or ``None`` where it cannot be found.

    Class-level checks on it, as :func:`torchrl.modules.distributions.utils.has_analytic_entropy` does for an
    instance, let :class:`AWRLoss` know its keys and refuse what it cannot compute before any batch is seen.
    """
    dist_class = next(
        (m.distribution_class for m in actor.modules() if getattr(m, "distribution_class", None) is not None), None
    )
    while isinstance(dist_class, functools.partial):
        dist_class = dist_class.func
    if not isinstance(dist_class, type) or not issubclass(dist_class, torch.distributions.Distribution):
        return None
    return dist_class


def _has_analytic_entropy(actor: torch.nn.Module) -> bool:
    """Whether the actor's distribution class has a closed-form ``entropy`` (TanhNormal has none); an actor whose
    class cannot be found is assumed to have one."""
    dist_class = _distribution_class(actor)
    return dist_class is None or dist_class.entropy is not torch.distributions.Distribution.entropy


def _is_squashed(actor: torch.nn.Module) -> bool:
    """Whether the actor's distribution is a transformed one (TanhNormal): no closed-form ``mean``, and its samples
    already inside the bounds the transform maps onto."""
    dist_class = _distribution_class(actor)
    return dist_class is not None and issubclass(dist_class, torch.distributions.TransformedDistribution)


def _check_positive(name: str, value: object, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"AWRLoss: {name}={value!r} is invalid; it must be a finite number {bound}.")


_INPUTS_CHECKED = contextvars.ContextVar("awr_inputs_checked", default=False)


@contextlib.contextmanager
def inputs_checked() -> Iterator[None]:
    """Within it, :class:`AWRLoss` skips its per-call check that batch entries are finite.

    For a caller that has checked its data itself: :class:`~torchrl_awr.RegressionPhase` checks its whole phase
    buffer once per phase, so each of its minibatch steps need not (the check costs a host sync per entry).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value
        >>> loss = AWRLoss(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(1,))), make_awr_value(3))
        >>> batch = TensorDict(observation=torch.randn(4, 3), value_target=torch.full((4, 1), float("nan")),
        ...                    batch_size=[4])
        >>> loss.value_loss(batch)
        Traceback (most recent call last):
        ...
        ValueError: AWRLoss: non-finite value nan in 'value_target'; the batch must hold finite numbers only.
        >>> with inputs_checked():
        ...     loss.value_loss(batch)[0].isnan().item()
        True
    """
    token = _INPUTS_CHECKED.set(True)
    try:
        yield
    finally:
        _INPUTS_CHECKED.reset(token)


def _check_finite(tensor: Tensor, key: NestedKey, mask: Tensor | None = None) -> None:
    if torch.compiler.is_compiling() or _INPUTS_CHECKED.get():
        return  # no data-dependent branch in a compiled step (RegressionPhase checks its data); or checked
    if tensor.is_cuda and torch.cuda.is_current_stream_capturing():
        return  # nor in a CUDA-graph-captured step
    if not tensor.is_floating_point():
        return
    bad_entries = ~torch.isfinite(tensor)
    if mask is not None:  # rows the mask drops (padding) may hold anything
        bad_entries &= _broadcast(mask, tensor)
    if bad_entries.any():
        bad = tensor[bad_entries].flatten()[0].item()
        raise ValueError(f"AWRLoss: non-finite value {bad} in {key!r}; the batch must hold finite numbers only.")


class AWRLoss(LossModule):
    r"""Advantage-Weighted Regression loss (Peng, Kumar, Zhang & Levine, 2019).

    AWR fits a value function by regression onto TD(λ) returns, then fits the
    policy by advantage-weighted maximum likelihood:

    .. math::

        \mathcal{L}_V = \tfrac12 \mathbb{E}\big[((R - V(s)) / c)^2\big], \qquad
        \mathcal{L}_\pi = -\mathbb{E}\big[\min(e^{A/\beta}, w_{\max}) \log\pi(a|s)\big]

    where :math:`A = R - V(s)` (standardised over the batch when
    ``normalize_advantage=True``) and :math:`c` is ``value_scale``.

    The two losses are separate public methods, :meth:`value_loss` and
    :meth:`actor_loss`, because AWR fits critic and actor in separate phases
    with separate optimizers and step counts; :meth:`forward` returns both.

    If the batch holds no ``advantage``/``value_target``, they are computed with
    the loss's value estimator (TD(λ), γ=0.99, λ=0.95 by default), which needs a
    trajectory-shaped batch (``[*B, T]`` with ``"next"`` entries). Over a whole
    replay buffer use :func:`torchrl_awr.relabel`, which does the same with
    trajectory boundaries, truncations and the buffer's write cursor handled.

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy; its
            ``get_dist`` gives :math:`\pi(\cdot|s)`. Continuous (Normal,
            IndependentNormal, TanhNormal) and discrete (Categorical,
            OneHotCategorical) distributions work.
        value_network (TensorDictModule): :math:`V(s)`, writing ``"state_value"``.

    Keyword Args:
        beta (float): temperature β > 0. Defaults to ``1.0`` (the released
            code's value, used on standardised advantages).
        max_weight (float): weight clip > 0. Defaults to ``20.0``.
        normalize_advantage (bool or str): where the advantages are standardised, ``(A − mean) / (std + 1e-5)``,
            before weighting: ``"batch"`` (or ``True``, TorchRL's convention) over each batch the loss sees;
            ``"buffer"`` (the original) once over the whole replay buffer by :func:`torchrl_awr.relabel`, which reads
            this attribute; ``False`` (or ``"none"``) not at all. Stored as ``"batch"``, ``"buffer"`` or ``False``.
            Defaults to ``True``.
        action_bound_penalty (float): weight of the original's penalty
            ``½·Σ violation²`` on the Gaussian mean leaving the action bounds
            (measured in units of half the action range). ``0`` switches it
            off; the original uses ``10``. Needs ``action_spec`` or an actor
            with a bounded ``spec``. Defaults to ``0.0``.
        action_spec (TensorSpec, optional): bounded action spec for the penalty.
        entropy_coeff (float): weight of an entropy bonus. Defaults to ``0.0``.
        value_scale (float): the critic regresses in a value space divided by
            this (the original divides by ``1/(1-γ)``). Defaults to ``1.0``.
        loss_critic_type (str): ``"l2"`` (``½·diff²``), ``"l1"`` or ``"smooth_l1"``.
        gamma (float, optional): discount for the default value estimator.
        reduction (str, optional): ``"mean"``, ``"sum"`` or ``"none"``; ``None`` means ``"mean"``, as in
            TorchRL's losses. Defaults to ``"mean"``.
        separate_losses (bool): if ``True``, parameters the value network shares with the actor are trained by
            the actor loss only (the value loss sees them detached), as in TorchRL's A2C/PPO/IQL. Defaults to
            ``False``.

    TorchRL conventions (checked in ``tests/test_loss_conventions.py`` against TorchRL's own ``A2CLoss``):

    * keyword calls: ``loss(observation=..., action=..., advantage=..., value_target=...)`` returns a tuple
      in :attr:`out_keys` order (nested keys joined by ``_``: ``next_reward``); :meth:`select_out_keys`
      narrows it;
    * :attr:`out_keys` lists exactly what :meth:`forward` returns (``entropy`` only for distributions with
      a closed-form entropy, so not for ``TanhNormal``);
    * the input batch is left as it was; a stored action that requires grad is refused;
    * rows the validity mask drops (``("collector", "mask")`` from ``SliceSampler(pad_output=True)``, see
      :attr:`~torchrl.objectives.LossModule.loss_mask_key`) count nowhere: not in the reductions, the
      advantage standardisation or the diagnostics, and non-finite values there are allowed;
    * a batch holding only one of ``advantage`` / ``value_target`` keeps it; the other is computed;
    * the loss is *non-functional* (:attr:`functional` is ``False``): the networks are ordinary
      submodules, ``get_stateful_net`` returns them, ``from_stateful_net`` loads weights into them and the
      ``*_params`` attributes are ``None``. AWR's compiled update (:class:`torchrl_awr.RegressionPhase`)
      differentiates the loss's own parameters through :func:`torch.func.functional_call`, and its two
      optimizers hold ``actor_network.parameters()`` / ``value_network.parameters()``; functional copies
      would add a second set of parameters for both to track.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value
        >>> spec = Bounded(-1.0, 1.0, shape=(2,))
        >>> actor = make_awr_actor(3, spec, action_std=0.4)
        >>> value = make_awr_value(3)
        >>> loss = AWRLoss(actor, value, beta=1.0, max_weight=20.0)
        >>> batch = TensorDict(
        ...     observation=torch.randn(8, 3), action=torch.rand(8, 2) * 2 - 1,
        ...     advantage=torch.randn(8, 1), value_target=torch.randn(8, 1),
        ...     batch_size=[8])
        >>> out = loss(batch)
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_value']
        >>> (out["loss_actor"] + out["loss_value"]).backward()

    Keyword calls, as with TorchRL's losses:

        >>> loss_actor, loss_value = loss.select_out_keys("loss_actor", "loss_value")(
        ...     observation=batch["observation"], action=batch["action"],
        ...     advantage=batch["advantage"], value_target=batch["value_target"])
        >>> loss_actor.shape
        torch.Size([])
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys; rename them with :meth:`set_keys`.

        Attributes:
            advantage (NestedKey): the advantage ``A = R - V(s)``. Defaults to ``"advantage"``.
            value_target (NestedKey): the TD(λ) return ``R``. Defaults to ``"value_target"``.
            value (NestedKey): the state value written by the value network.
                Defaults to ``"state_value"``.
            action (NestedKey): the action taken. Defaults to ``"action"``.
            reward (NestedKey): the reward (read under ``"next"``). Defaults to ``"reward"``.
            done (NestedKey): the done flag (read under ``"next"``). Defaults to ``"done"``.
            terminated (NestedKey): the termination flag (read under ``"next"``).
                Defaults to ``"terminated"``.
        """

        advantage: NestedKey = "advantage"
        value_target: NestedKey = "value_target"
        value: NestedKey = "state_value"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    default_value_estimator = ValueEstimators.TDLambda
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
        ValueEstimators.GAE,
    )
    _base_out_keys = (
        "loss_actor",
        "loss_value",
        "weight_mean",
        "weight_max",
        "weight_clip_fraction",
        "advantage_mean",
        "advantage_std",
        "explained_variance",
    )

    actor_network: ProbabilisticTensorDictSequential
    value_network: TensorDictModule
    # Non-functional (see the class docstring): the networks are ordinary submodules and these stay None.
    actor_network_params: None
    value_network_params: None
    target_actor_network_params: None
    target_value_network_params: None

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        value_network: TensorDictModule,
        *,
        beta: float = 1.0,
        max_weight: float = 20.0,
        normalize_advantage: bool | str = True,
        action_bound_penalty: float = 0.0,
        action_spec: TensorSpec | None = None,
        entropy_coeff: float = 0.0,
        value_scale: float = 1.0,
        loss_critic_type: str = "l2",
        gamma: float | None = None,
        reduction: str | None = "mean",
        separate_losses: bool = False,
    ) -> None:
        if reduction is None:
            reduction = "mean"  # TorchRL's losses read reduction=None as "mean"
        for name, val in (("beta", beta), ("max_weight", max_weight), ("value_scale", value_scale)):
            _check_positive(name, val)
        for name, val in (("action_bound_penalty", action_bound_penalty), ("entropy_coeff", entropy_coeff)):
            _check_positive(name, val, allow_zero=True)
        if loss_critic_type not in ("l2", "l1", "smooth_l1"):
            raise ValueError(f"AWRLoss: loss_critic_type={loss_critic_type!r}; allowed: 'l2', 'l1', 'smooth_l1'.")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"AWRLoss: reduction={reduction!r}; allowed: 'mean', 'sum', 'none'.")
        super().__init__()
        self.actor_network = actor_network
        self.value_network = value_network
        self.actor_network_params = self.value_network_params = None
        self.target_actor_network_params = self.target_value_network_params = None
        self._out_keys: list[NestedKey] | None = None
        self._analytic_entropy = _has_analytic_entropy(actor_network)
        if entropy_coeff > 0 and not self._analytic_entropy:
            raise ValueError(
                f"AWRLoss: entropy_coeff={entropy_coeff!r} needs a distribution with a closed-form entropy; "
                "the actor's has none (e.g. TanhNormal): set entropy_coeff=0."
            )
        self.separate_losses = bool(separate_losses)
        actor_params = {id(p) for p in actor_network.parameters()}
        # Value-network parameters the actor also holds: detached in value_loss when separate_losses=True.
        self._shared_value_params = (
            [name for name, p in value_network.named_parameters() if id(p) in actor_params] if separate_losses else []
        )
        self.beta = float(beta)
        self.max_weight = float(max_weight)
        if normalize_advantage not in ADVANTAGE_NORMALIZATION:
            raise ValueError(
                f"AWRLoss: normalize_advantage={normalize_advantage!r}; allowed: 'batch' (or True), 'buffer', "
                "'none' (or False)."
            )
        self.normalize_advantage = ADVANTAGE_NORMALIZATION[normalize_advantage]
        self.entropy_coeff = float(entropy_coeff)
        self.value_scale = float(value_scale)
        self.loss_critic_type = loss_critic_type
        self.reduction = reduction
        if gamma is not None:
            self.gamma = gamma
        self.action_bound_penalty = float(action_bound_penalty)
        if self.action_bound_penalty > 0 and _is_squashed(actor_network):
            raise ValueError(
                f"AWRLoss: action_bound_penalty={action_bound_penalty!r} penalises the policy mean, which the actor's "
                "squashed distribution (e.g. TanhNormal) has no closed form of and keeps inside the bounds: "
                "set action_bound_penalty=0."
            )
        if self.action_bound_penalty > 0:
            low, high = self._action_bounds(action_spec)
            self.register_buffer("_action_mid", (high + low) / 2)
            self.register_buffer("_action_half_range", (high - low) / 2)
            # [-1, 1] bounds (most MuJoCo tasks): the mean is already in half-range units
            self._unit_bounds = bool((low == -1).all() and (high == 1).all())
        # The module that builds π(·|s) from the actor's outputs, found once (get_dist would search for it per call).
        self._dist_module = _distribution_module(actor_network)
        # The actor's deterministic part and the critic run as plain module calls on tensors where they are chains of
        # plain modules (~120 µs less per eager actor step on a CPU); otherwise through their TensorDict calls.
        self._actor_chain = TensorChain.of(actor_network.det_part) if self._dist_module is not None else None
        self._value_chain = TensorChain.of(value_network)
        self._in_keys = None

    @property
    def functional(self) -> bool:
        """``False``: AWRLoss keeps its networks as ordinary submodules (see the class docstring)."""
        return False

    def reset_parameters_recursive(self) -> None:
        """Re-initialise the parameters of both networks (layers' own ``reset_parameters``).

        :class:`~torchrl.objectives.LossModule`'s version only reaches networks converted to functional ones,
        which a non-functional loss has none of.

        Examples:
            >>> from torchrl.data import Bounded
            >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value
            >>> loss = AWRLoss(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(2,))), make_awr_value(3))
            >>> before = [p.clone() for p in loss.parameters()]
            >>> loss.reset_parameters_recursive()
            >>> all((p != b).any() for p, b in zip(loss.parameters(), before))
            True
        """
        for network in (self.actor_network, self.value_network):
            network.reset_parameters_recursive()

    def _action_bounds(self, action_spec: TensorSpec | None) -> tuple[Tensor, Tensor]:
        spec = action_spec
        if spec is None:
            spec = getattr(self.actor_network, "spec", None)
            if spec is not None and self.tensor_keys.action in spec.keys(True):
                spec = spec[self.tensor_keys.action]
        space = getattr(spec, "space", None)
        if space is None or not hasattr(space, "low"):
            raise ValueError(
                f"AWRLoss: action_bound_penalty>0 needs a bounded action spec, got {spec!r}; "
                "pass action_spec=env.action_spec or set action_bound_penalty=0."
            )
        return space.low.float(), space.high.float()

    # ---------------------------------------------------------------- keys
    def _set_in_keys(self) -> None:
        keys = {
            self.tensor_keys.advantage,
            self.tensor_keys.value_target,
            self.tensor_keys.action,
            ("next", self.tensor_keys.reward),
            ("next", self.tensor_keys.done),
            ("next", self.tensor_keys.terminated),
            *self.actor_network.in_keys,
            *self.value_network.in_keys,
            *[("next", key) for key in self.value_network.in_keys],
        }
        self._in_keys = sorted(keys, key=str)

    @property
    def in_keys(self) -> list[NestedKey]:
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values: list[NestedKey]) -> None:
        self._in_keys = values

    @property
    def out_keys(self) -> list[NestedKey]:
        """What :meth:`forward` returns: the two losses and their diagnostics (``entropy`` where the actor's
        distribution has a closed-form one)."""
        if self._out_keys is None:
            self._out_keys = [*self._base_out_keys, *(["entropy"] if self._analytic_entropy else [])]
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values: list[NestedKey]) -> None:
        self._out_keys = list(values)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        if self._value_estimator is not None:
            self._value_estimator.set_keys(
                advantage=self.tensor_keys.advantage,
                value_target=self.tensor_keys.value_target,
                value=self.tensor_keys.value,
                reward=self.tensor_keys.reward,
                done=self.tensor_keys.done,
                terminated=self.tensor_keys.terminated,
            )
        self._set_in_keys()

    def make_value_estimator(self, value_type: ValueEstimators | None = None, **hyperparams) -> AWRLoss:
        """Build the value estimator used for targets: TD(λ) (default), GAE, TD(0) or TD(1).

        Examples:
            >>> from torchrl.objectives import ValueEstimators
            >>> from torchrl.data import Bounded
            >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value
            >>> loss = AWRLoss(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(2,))), make_awr_value(3))
            >>> _ = loss.make_value_estimator(ValueEstimators.TDLambda, gamma=0.99, lmbda=0.95)
            >>> type(loss.value_estimator).__name__
            'TDLambdaEstimator'
        """
        value_type, hp = self._prepare_value_estimator_kwargs(value_type, **hyperparams)
        if value_type is None:
            return self
        hp["differentiable"] = False  # AWR's targets are regression labels: never backprop into them
        # Evaluate V in chunks along time: over a 50k buffer one 100k-row MLP call is ~3x slower than 8k-row chunks.
        hp.setdefault("value_chunk_size", 8192)
        hp.setdefault("value_chunk_dim", -1)
        dispatch_value_estimator(
            self,
            value_type,
            supported=self.SUPPORTED_VALUE_ESTIMATORS,
            tensor_keys={
                "advantage": self.tensor_keys.advantage,
                "value_target": self.tensor_keys.value_target,
                "value": self.tensor_keys.value,
                "reward": self.tensor_keys.reward,
                "done": self.tensor_keys.done,
                "terminated": self.tensor_keys.terminated,
            },
            **hp,
        )
        # γ and λ are hyperparameters, not learned state: keep them out of state_dict so that a loss whose
        # estimator was built lazily on first use loads into a fresh one (and vice versa).
        self._value_estimator._non_persistent_buffers_set.update(self._value_estimator._buffers)
        return self

    # ------------------------------------------------------------- targets
    def _validity_mask(self, tensordict: TensorDictBase) -> Tensor | None:
        """The batch-shaped AND of the validity masks the batch holds (see ``loss_mask_key``), or ``None``."""
        mask = None
        for key in loss_mask_keys(self):
            entry = tensordict.get(key, None)
            if entry is not None:
                entry = entry.bool()
                while entry.ndim > tensordict.ndim and entry.shape[-1] == 1:
                    entry = entry.squeeze(-1)
                mask = entry if mask is None else mask & entry
        return mask

    def _network_inputs(
        self, tensordict: TensorDictBase, mask: Tensor | None, chain: TensorChain | None, *keys: NestedKey
    ) -> TensorDictBase:
        """What a loss method hands its network: the batch itself where the network runs as a chain (it writes
        nothing into it), else a selection of ``keys``, so that the network's intermediate entries (``loc``,
        ``scale``, the normalised observation) are written there and not into the caller's batch; rows ``mask``
        drops are zeroed."""
        if chain is None:
            tensordict = tensordict.select(*keys, strict=False)
        return self._zero_dropped_rows(tensordict, mask)

    @staticmethod
    def _zero_dropped_rows(tensordict: TensorDictBase, mask: Tensor | None) -> TensorDictBase:
        """A copy whose floating entries are ``0`` in the rows ``mask`` drops, so they cannot reach a gradient."""
        if mask is None:
            return tensordict

        def zero(x: Tensor) -> Tensor:
            return torch.where(_broadcast(mask, x), x, torch.zeros_like(x)) if x.is_floating_point() else x

        return tensordict.apply(zero)

    def _get_checked(self, tensordict: TensorDictBase, key: NestedKey, mask: Tensor | None = None) -> Tensor:
        value = tensordict.get(key, None)
        if value is None:
            raise ValueError(
                f"AWRLoss: key {key!r} missing from the batch (has {sorted(map(str, tensordict.keys(True, True)))})."
            )
        _check_finite(value, key, mask)
        return value

    def _ensure_targets(self, tensordict: TensorDictBase, *needed: NestedKey) -> TensorDictBase:
        """Fill a ``needed`` ``advantage`` / ``value_target`` that is absent with the value estimator.

        A target the batch holds is kept: only the missing one is taken from the estimator.
        """
        keys = self.tensor_keys
        present = tensordict.keys(True)
        if all(key in present for key in needed):
            return tensordict
        mask = self._validity_mask(tensordict)
        self._get_checked(tensordict, ("next", keys.reward), mask)
        for key in (("next", keys.done), ("next", keys.terminated)):
            if tensordict.get(key, None) is None:
                raise ValueError(
                    f"AWRLoss: key {key!r} missing; it is needed to compute targets when "
                    f"{keys.advantage!r}/{keys.value_target!r} are absent."
                )
        given = {key: tensordict.get(key) for key in (keys.advantage, keys.value_target) if key in present}
        tensordict = tensordict.copy()
        with torch.no_grad():
            self.value_estimator(tensordict)
        for key, value in given.items():
            tensordict.set(key, value)
        return tensordict

    # -------------------------------------------------------------- losses
    def _state_value(self, tensordict: TensorDictBase) -> Tensor:
        if self._value_chain is not None and not self._shared_value_params:
            return self._value_chain(tensordict)[unravel_key(self.tensor_keys.value)]
        td_value = tensordict.select(*self.value_network.in_keys, strict=False)
        if self._shared_value_params:  # separate_losses: the actor's parameters enter V(s) as constants
            detached = {name: self.value_network.get_parameter(name).detach() for name in self._shared_value_params}
            return functional_call(self.value_network, detached, (td_value,), strict=False).get(self.tensor_keys.value)
        return self.value_network(td_value).get(self.tensor_keys.value)

    def value_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Critic regression ``½((R − V(s)) / value_scale)²`` onto the value target.

        Returns:
            ``(loss_value, metadata)`` where metadata holds the detached ``explained_variance``.
        """
        tensordict = self._ensure_targets(tensordict, self.tensor_keys.value_target)
        mask = self._validity_mask(tensordict)
        self._get_checked(tensordict, self.tensor_keys.value_target, mask)
        inputs = self._network_inputs(
            tensordict, mask, self._value_chain, self.tensor_keys.value_target, *self.value_network.in_keys
        )
        target = inputs.get(self.tensor_keys.value_target)
        value = self._state_value(inputs)
        target = target.view_as(value)
        scaled = (value, target) if self.value_scale == 1 else (value / self.value_scale, target / self.value_scale)
        loss = distance_loss(*scaled, self.loss_critic_type)
        if self.loss_critic_type == "l2":
            loss = 0.5 * loss
        with torch.no_grad():
            explained_variance = 1 - _masked_var(target - value, mask) / _masked_var(target, mask).clamp_min(1e-8)
        return self._reduce(loss.squeeze(-1), tensordict, mask), {"explained_variance": explained_variance}

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        """Advantage-weighted log-likelihood ``−min(exp(A/β), max_weight) · log π(a|s)``.

        Adds the action-bound penalty and entropy bonus when their weights are non-zero.

        Returns:
            ``(loss_actor, metadata)`` with detached weight and advantage diagnostics.
        """
        keys = self.tensor_keys
        tensordict = self._ensure_targets(tensordict, keys.advantage)
        mask = self._validity_mask(tensordict)
        self._get_checked(tensordict, keys.advantage, mask)
        action = self._get_checked(tensordict, keys.action, mask)
        if action.requires_grad:
            raise RuntimeError(
                f"AWRLoss: tensordict stored {keys.action!r} requires grad; the actions are regression labels "
                "(detach them before the loss)."
            )
        inputs = self._network_inputs(
            tensordict, mask, self._actor_chain, keys.advantage, keys.action, *self.actor_network.in_keys
        )
        advantage = inputs.get(keys.advantage).detach()
        action = inputs.get(keys.action)
        weights, clipped = awr_weights(
            advantage, self.beta, self.max_weight, self.normalize_advantage == "batch", mask
        )
        dist = self._distribution(inputs)
        if isinstance(dist, torch.distributions.Categorical) and action.ndim > len(dist.batch_shape):
            action = action.squeeze(-1)  # integer actions stored as [B, 1]
        log_prob = dist.log_prob(action)
        weights = weights.reshape(log_prob.shape)
        loss = -weights * log_prob
        if self.action_bound_penalty > 0:
            loss = loss + self._bound_penalty(dist)
        entropy = dist.entropy() if self._analytic_entropy and self.entropy_coeff > 0 else None
        if entropy is not None:
            loss = loss - self.entropy_coeff * entropy.reshape(loss.shape)
        with torch.no_grad():  # diagnostics
            kept_weights = weights if mask is None else torch.where(_broadcast(mask, weights), weights, 0.0)
            advantage_var, advantage_mean = _masked_var_mean(advantage, mask)
            metadata = {
                "weight_mean": _masked_mean(weights, mask),
                "weight_max": kept_weights.max(),
                "weight_clip_fraction": _masked_mean(clipped.float(), mask),
                "advantage_mean": advantage_mean,
                "advantage_std": advantage_var.sqrt(),
            }
            if self._analytic_entropy:
                metadata["entropy"] = _masked_mean(dist.entropy() if entropy is None else entropy, mask)
        return self._reduce(loss, tensordict, mask), metadata

    def _reduce(self, loss: Tensor, tensordict: TensorDictBase, mask: Tensor | None) -> Tensor:
        """``reduction`` over the batch: TorchRL's ``_reduce_loss`` where the batch holds a mask, else directly."""
        if mask is not None:
            return self._reduce_loss(loss, tensordict)
        return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss

    def _distribution(self, inputs: TensorDictBase) -> torch.distributions.Distribution:
        """π(·|s): the actor's ``get_dist``, with the distribution module looked up once (at construction)."""
        if self._dist_module is None:
            return self.actor_network.get_dist(inputs)
        if self._actor_chain is not None:
            return self._actor_chain.distribution(self._dist_module, inputs)
        return self._dist_module.get_dist(self.actor_network.get_dist_params(inputs))

    def _bound_penalty(self, dist: torch.distributions.Distribution) -> Tensor:
        """``action_bound_penalty · ½ Σ (|m| − 1)₊²`` of the mean ``m`` in half-range units: its distance outside
        ``[-1, 1]``, squared."""
        mean = dist.mean
        if not self._unit_bounds:
            mean = (mean - self._action_mid) / self._action_half_range
        # softshrink(m, 1)² = (|m| − 1)₊²: one op for abs, − 1 and clamp; the two constants folded into one multiply
        return F.softshrink(mean, 1.0).square().sum(-1) * (0.5 * self.action_bound_penalty)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Both AWR losses and their diagnostics on one batch.

        Called with a TensorDict, returns a TensorDict; called with tensors by keyword (``observation=...,
        action=..., advantage=..., value_target=...``, or ``next_reward=...`` etc. for computed targets),
        returns them as a tuple in :attr:`out_keys` order.

        Returns:
            A TensorDict with ``loss_actor``, ``loss_value`` and detached
            ``weight_mean``, ``weight_max``, ``weight_clip_fraction``,
            ``advantage_mean``, ``advantage_std``, ``explained_variance`` and
            ``entropy`` (where the distribution has a closed-form one).
        """
        tensordict = self._ensure_targets(tensordict, self.tensor_keys.advantage, self.tensor_keys.value_target)
        loss_value, value_meta = self.value_loss(tensordict)
        loss_actor, actor_meta = self.actor_loss(tensordict)
        return TensorDict(
            {"loss_actor": loss_actor, "loss_value": loss_value, **actor_meta, **value_meta},
            batch_size=[],
        )
