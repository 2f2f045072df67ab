"""AWRLoss and awr_weights against hand computations (torchrl_awr/loss.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal
from torchrl.data import Bounded, Categorical, OneHot
from torchrl.objectives import ValueEstimators

from torchrl_awr import AWRLoss, awr_weights, make_awr_actor, make_awr_value, make_observation_norm

OBS = 3
LOW, HIGH = -2.0, 3.0  # mid 0.5, half range 2.5
ACTION_STD = 0.4


# ----------------------------------------------------------------- helpers
def continuous_actor(**kwargs):
    return make_awr_actor(OBS, Bounded(LOW, HIGH, shape=(2,)), action_std=ACTION_STD, **kwargs)


def linear_value(out_key: str = "state_value") -> TensorDictModule:
    lin = nn.Linear(OBS, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0, 0.25]]))
        lin.bias.fill_(0.3)
    return TensorDictModule(lin, in_keys=["observation"], out_keys=[out_key])


def hand_value(obs: torch.Tensor) -> torch.Tensor:
    """V(s) of `linear_value`, computed without the module (float64)."""
    obs = obs.double()
    return 0.5 * obs[..., :1] - 1.0 * obs[..., 1:2] + 0.25 * obs[..., 2:3] + 0.3


def continuous_batch(b: int = 16) -> TensorDict:
    return TensorDict(
        observation=torch.randn(b, OBS) * 2,
        action=torch.rand(b, 2) * (HIGH - LOW) + LOW,
        advantage=torch.randn(b, 1) * 3,
        value_target=torch.randn(b, 1) * 5,
        batch_size=[b],
    )


def hand_weights(adv: torch.Tensor, beta: float, max_weight: float, normalize: bool):
    """min(exp(A / beta), max_weight) in float64, with the biased-std standardisation."""
    a = adv.double().flatten()
    if normalize:
        mean = a.sum() / a.numel()
        std = ((a - mean) ** 2).sum().div(a.numel()).sqrt()
        a = (a - mean) / (std + 1e-5)
    raw = torch.exp(a / beta)
    return torch.minimum(raw, torch.tensor(max_weight, dtype=torch.float64)), raw > max_weight


def actor_params_out(actor, batch: TensorDict) -> TensorDict:
    """Run the actor on a copy holding only the observation (it samples into 'action' there)."""
    return actor(batch.select("observation").clone())


def close(actual, expected, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(
        torch.as_tensor(actual).double(), torch.as_tensor(expected).double(), rtol=rtol, atol=atol
    )


# -------------------------------------------------------- loss hand values
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_continuous_actor_loss_matches_hand_computation(normalize, beta):
    actor = continuous_actor()
    loss = AWRLoss(actor, make_awr_value(OBS), beta=beta, max_weight=1.5, normalize_advantage=normalize)
    batch = continuous_batch()
    out = loss(batch)

    params = actor_params_out(actor, batch)
    loc, scale = params["loc"].detach().double(), params["scale"].detach().double()
    torch.testing.assert_close(scale, torch.full_like(scale, 2.5 * ACTION_STD))  # half range * action_std
    logp = Normal(loc, scale).log_prob(batch["action"].double()).sum(-1)
    w, clipped = hand_weights(batch["advantage"], beta, 1.5, normalize)
    assert 0 < clipped.sum() < clipped.numel(), "the batch should exercise the clip on some entries only"

    close(out["loss_actor"], (-w * logp).mean())
    close(out["weight_mean"], w.mean())
    close(out["weight_max"], w.max())
    close(out["weight_clip_fraction"], clipped.double().mean())
    close(out["advantage_mean"], batch["advantage"].double().mean())
    close(out["advantage_std"], batch["advantage"].double().std(unbiased=False))
    close(out["entropy"], Normal(loc, scale).entropy().sum(-1).mean())


@pytest.mark.parametrize("value_scale", [1.0, 4.0])
def test_value_loss_matches_hand_computation(value_scale):
    value = make_awr_value(OBS)
    loss = AWRLoss(continuous_actor(), value, value_scale=value_scale)
    batch = continuous_batch()
    out = loss(batch)
    v = value(batch.select("observation").clone())["state_value"].detach().double()
    r = batch["value_target"].double()
    close(out["loss_value"], (0.5 * ((r - v) / value_scale) ** 2).mean())
    close(out["explained_variance"], 1 - (r - v).var(unbiased=False) / r.var(unbiased=False))
    # the separate public method gives the same number
    loss_value, meta = loss.value_loss(batch)
    close(loss_value, out["loss_value"])
    close(meta["explained_variance"], out["explained_variance"])


def test_value_loss_l1_and_reduction_none():
    value = make_awr_value(OBS)
    batch = continuous_batch()
    v = value(batch.select("observation").clone())["state_value"].detach().double().squeeze(-1)
    r = batch["value_target"].double().squeeze(-1)
    l1 = AWRLoss(continuous_actor(), value, loss_critic_type="l1", value_scale=2.0)
    close(l1(batch)["loss_value"], ((r - v).abs() / 2.0).mean())

    actor = continuous_actor()
    per_sample = AWRLoss(actor, value, reduction="none", normalize_advantage=False)
    out = per_sample(batch)
    assert out["loss_actor"].shape == (16,) and out["loss_value"].shape == (16,)
    close(out["loss_value"], 0.5 * (r - v) ** 2)
    summed = AWRLoss(actor, value, reduction="sum", normalize_advantage=False)(batch)
    close(summed["loss_actor"], out["loss_actor"].sum())
    close(summed["loss_value"], out["loss_value"].sum())


@pytest.mark.parametrize("normalize", [True, False])
def test_onehot_actor_loss_matches_hand_computation(normalize):
    actor = make_awr_actor(OBS, OneHot(4))
    loss = AWRLoss(actor, make_awr_value(OBS), beta=0.5, max_weight=4.0, normalize_advantage=normalize)
    batch = continuous_batch()
    idx = torch.randint(4, (16,))
    batch["action"] = nn.functional.one_hot(idx, 4)
    out = loss(batch)
    logits = actor_params_out(actor, batch)["logits"].detach().double()
    logp = TorchCategorical(logits=logits).log_prob(idx)
    w, clipped = hand_weights(batch["advantage"], 0.5, 4.0, normalize)
    close(out["loss_actor"], (-w * logp).mean())
    close(out["weight_clip_fraction"], clipped.double().mean())
    close(out["entropy"], TorchCategorical(logits=logits).entropy().mean())


def test_categorical_actor_loss_matches_hand_computation():
    actor = make_awr_actor(OBS, Categorical(5))
    loss = AWRLoss(actor, make_awr_value(OBS), beta=1.5, max_weight=20.0)
    batch = continuous_batch()
    batch["action"] = torch.randint(5, (16,))
    out = loss(batch)
    logits = actor_params_out(actor, batch)["logits"].detach().double()
    logp = TorchCategorical(logits=logits).log_prob(batch["action"])
    w, _ = hand_weights(batch["advantage"], 1.5, 20.0, True)
    close(out["loss_actor"], (-w * logp).mean())


@pytest.mark.parametrize("discrete", [False, True])
def test_entropy_bonus_is_subtracted(discrete):
    coeff = 0.05
    if discrete:
        actor = make_awr_actor(OBS, OneHot(3))
    else:
        actor = continuous_actor()
    batch = continuous_batch()
    if discrete:
        batch["action"] = nn.functional.one_hot(torch.randint(3, (16,)), 3)
    plain = AWRLoss(actor, make_awr_value(OBS), entropy_coeff=0.0)(batch)
    bonus = AWRLoss(actor, make_awr_value(OBS), entropy_coeff=coeff)(batch)
    params = actor_params_out(actor, batch)
    if discrete:
        entropy = TorchCategorical(logits=params["logits"].detach().double()).entropy()
    else:
        entropy = Normal(params["loc"].detach().double(), params["scale"].detach().double()).entropy().sum(-1)
    close(bonus["loss_actor"], plain["loss_actor"].double() - coeff * entropy.mean())
    close(bonus["entropy"], entropy.mean())


def _push_mean_out_of_bounds(actor, bias):
    gaussian = next(m for m in actor.modules() if hasattr(m, "mean_net"))
    with torch.no_grad():
        gaussian.mean_net[-1].bias.copy_(torch.tensor(bias))


def _hand_penalised_actor_loss(actor, batch, penalty, low, high, beta=1.0, max_weight=20.0):
    """Hand loss built on the actor's differentiable loc/scale (for values and gradients)."""
    params = actor(batch.select("observation").clone())
    loc, scale = params["loc"], params["scale"]
    logp = Normal(loc, scale).log_prob(batch["action"]).sum(-1)
    w, _ = hand_weights(batch["advantage"], beta, max_weight, True)
    mid, half = (high + low) / 2, (high - low) / 2
    mu = (loc - mid) / half
    violation = torch.relu(mu - 1) ** 2 + torch.relu(-1 - mu) ** 2
    bound = 0.5 * violation.sum(-1)
    return (-w.float() * logp + penalty * bound).mean(), bound


def test_action_bound_penalty_out_of_bounds_values_and_gradients():
    actor = continuous_actor()
    _push_mean_out_of_bounds(actor, [4.0, -3.0])  # normalised mean ~ (4, -3): violations ~3 and ~2
    batch = continuous_batch()
    loss = AWRLoss(actor, make_awr_value(OBS), action_bound_penalty=10.0)
    out = loss(batch)
    expected, bound = _hand_penalised_actor_loss(actor, batch, 10.0, torch.tensor(LOW), torch.tensor(HIGH))
    close(bound.mean(), 0.5 * (3.0**2 + 2.0**2), rtol=0.05, atol=0.0)  # the case really violates the bounds
    close(out["loss_actor"], expected.detach())
    without = AWRLoss(actor, make_awr_value(OBS), action_bound_penalty=0.0)(batch)
    assert out["loss_actor"] - without["loss_actor"] > 50.0  # 10 * ~6.5

    # the gradients are those of the hand formula too
    grads = torch.autograd.grad(out["loss_actor"], list(actor.parameters()))
    hand_grads = torch.autograd.grad(expected, list(actor.parameters()))
    for g, h in zip(grads, hand_grads, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5)
    gaussian = next(m for m in actor.modules() if hasattr(m, "mean_net"))
    bias_grad = grads[-1]
    assert bias_grad.shape == gaussian.mean_net[-1].bias.shape
    assert bias_grad[0] > 0 > bias_grad[1]  # gradient descent pulls the mean back inside


def test_action_bound_penalty_zero_inside_bounds_and_explicit_spec():
    actor = continuous_actor()
    batch = continuous_batch()
    plain = AWRLoss(actor, make_awr_value(OBS))(batch)
    inside = AWRLoss(actor, make_awr_value(OBS), action_bound_penalty=10.0)(batch)
    close(inside["loss_actor"], plain["loss_actor"])  # mean ~ mid at init: no violation

    # an explicit, narrower spec is used instead of the actor's: mid 0, half range 0.1
    _push_mean_out_of_bounds(actor, [0.2, 0.0])  # loc ~ 0.5 + 2.5 * 0.2 = 1.0 -> 10 in units of 0.1
    narrow = Bounded(-0.1, 0.1, shape=(2,))
    out = AWRLoss(actor, make_awr_value(OBS), action_bound_penalty=2.0, action_spec=narrow)(batch)
    expected, bound = _hand_penalised_actor_loss(actor, batch, 2.0, torch.tensor(-0.1), torch.tensor(0.1))
    assert bound.mean() > 10.0
    close(out["loss_actor"], expected.detach())


def test_action_bound_penalty_needs_a_bounded_spec():
    with pytest.raises(ValueError, match="bounded action spec"):
        AWRLoss(make_awr_actor(OBS, OneHot(3)), make_awr_value(OBS), action_bound_penalty=1.0)


# --------------------------------------------------------------- gradients
def _grads_set(module):
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("targets_in_batch", [True, False])
def test_actor_and_value_losses_reach_only_their_own_parameters(targets_in_batch):
    norm = make_observation_norm(OBS)
    with torch.no_grad():
        norm.loc.copy_(torch.tensor([0.1, -0.2, 0.3]))
        norm.scale.copy_(torch.tensor([2.0, 0.5, 1.5]))
    actor = make_awr_actor(OBS, Bounded(LOW, HIGH, shape=(2,)), observation_norm=norm, learn_std=True)
    value = make_awr_value(OBS, observation_norm=norm)
    loss = AWRLoss(actor, value)
    if targets_in_batch:
        batch = continuous_batch()
    else:
        batch = trajectory_batch(2, 6)
        batch["action"] = torch.rand(2, 6, 2) * (HIGH - LOW) + LOW
    actor_names = {n for n, _ in actor.named_parameters()}
    value_names = {n for n, _ in value.named_parameters()}
    assert actor_names and value_names
    assert not {id(p) for p in actor.parameters()} & {id(p) for p in value.parameters()}

    loss(batch)["loss_actor"].backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads_set(actor).values())
    assert all(g is None for g in _grads_set(value).values())

    actor.zero_grad(set_to_none=True)
    loss(batch)["loss_value"].backward()
    assert all(g is None for g in _grads_set(actor).values())
    assert all(g is not None and g.abs().sum() > 0 for g in _grads_set(value).values())


def test_actor_loss_does_not_backprop_into_an_advantage_with_a_graph():
    """An advantage computed with grad (R - V(s)) is a fixed weight: the actor loss must not reach the critic."""
    value = make_awr_value(OBS)
    loss = AWRLoss(continuous_actor(), value)
    batch = continuous_batch()
    batch["advantage"] = batch["value_target"] - value(batch.select("observation").clone())["state_value"]
    assert batch["advantage"].requires_grad
    loss(batch)["loss_actor"].backward()
    assert all(p.grad is None for p in value.parameters())


# -------------------------------------------------------------------- keys
def test_set_keys_advantage_value_target_and_action_renames():
    actor = continuous_actor()
    loss_default = AWRLoss(actor, make_awr_value(OBS))
    batch = continuous_batch()
    expected = loss_default(batch)

    renamed = AWRLoss(actor, loss_default.value_network)
    renamed.set_keys(advantage="adv", value_target="ret", action="act")
    other = TensorDict(
        observation=batch["observation"],
        act=batch["action"],
        adv=batch["advantage"],
        ret=batch["value_target"],
        # decoys under the default names must be ignored
        action=torch.zeros_like(batch["action"]),
        advantage=torch.full_like(batch["advantage"], 7.0),
        value_target=torch.full_like(batch["value_target"], -7.0),
        batch_size=batch.batch_size,
    )
    out = renamed(other)
    close(out["loss_actor"], expected["loss_actor"])
    close(out["loss_value"], expected["loss_value"])
    close(out["advantage_mean"], expected["advantage_mean"])
    # keys absent under the new names are reported under the new names
    with pytest.raises(ValueError, match="'act'"):
        renamed(other.exclude("act"))


def test_set_keys_value_rename_uses_the_renamed_value_entry():
    actor = continuous_actor()
    batch = continuous_batch()
    expected = AWRLoss(actor, linear_value("state_value"))(batch)
    loss = AWRLoss(actor, linear_value("v"))
    loss.set_keys(value="v")
    out = loss(batch)
    close(out["loss_value"], expected["loss_value"])
    close(out["loss_value"], (0.5 * (batch["value_target"].double() - hand_value(batch["observation"])) ** 2).mean())


def test_set_keys_reflected_in_in_keys_and_estimator():
    loss = AWRLoss(continuous_actor(), make_awr_value(OBS))
    defaults = set(loss.in_keys)
    assert {
        "action",
        "observation",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    } <= defaults
    _ = loss.value_estimator  # built before the rename: it must follow it
    loss.set_keys(action="act", reward="rew", done="d", terminated="t", advantage="adv", value_target="ret")
    keys = set(loss.in_keys)
    assert {"act", ("next", "rew"), ("next", "d"), ("next", "t")} <= keys
    assert not {"action", ("next", "reward"), ("next", "done"), ("next", "terminated")} & keys
    est_keys = loss.value_estimator.tensor_keys
    assert (est_keys.advantage, est_keys.value_target, est_keys.reward, est_keys.done, est_keys.terminated) == (
        "adv",
        "ret",
        "rew",
        "d",
        "t",
    )


def test_renamed_keys_used_when_targets_are_computed():
    actor = continuous_actor()
    value = linear_value()
    batch = trajectory_batch(2, 5)
    batch["action"] = torch.rand(2, 5, 2) * (HIGH - LOW) + LOW
    expected = AWRLoss(actor, value)(batch)

    loss = AWRLoss(actor, value)
    loss.set_keys(reward="rew", done="d", terminated="t", advantage="adv", value_target="ret")
    nxt = batch["next"]
    renamed = TensorDict(
        observation=batch["observation"],
        action=batch["action"],
        next=TensorDict(
            observation=nxt["observation"],
            rew=nxt["reward"],
            d=nxt["done"],
            t=nxt["terminated"],
            batch_size=batch.batch_size,
        ),
        batch_size=batch.batch_size,
    )
    out = loss(renamed)
    close(out["loss_value"], expected["loss_value"])
    close(out["loss_actor"], expected["loss_actor"])
    close(out["advantage_mean"], expected["advantage_mean"])


# -------------------------------------------------------------- awr_weights
def test_awr_weights_match_manual_formula():
    adv = torch.tensor([-3.0, -0.5, 0.0, 0.2, 1.0, 2.5, 4.0])
    for normalize in (True, False):
        for beta, max_weight in ((1.0, 20.0), (0.3, 5.0), (2.0, 1.5)):
            w, clipped = awr_weights(adv, beta, max_weight, normalize)
            hw, hclipped = hand_weights(adv, beta, max_weight, normalize)
            close(w, hw)
            assert torch.equal(clipped, hclipped)
            assert w.shape == adv.shape and clipped.dtype == torch.bool


def test_awr_weights_clip_fraction_and_shape():
    adv = torch.log(torch.tensor([[0.5], [1.0], [4.0], [9.0], [30.0], [100.0]]))  # exp(A) = listed numbers
    w, clipped = awr_weights(adv, 1.0, 10.0, False)
    assert w.shape == (6, 1)
    close(w.squeeze(-1), torch.tensor([0.5, 1.0, 4.0, 9.0, 10.0, 10.0]))
    assert clipped.squeeze(-1).tolist() == [False, False, False, False, True, True]
    assert clipped.float().mean().item() == pytest.approx(2 / 6)


@pytest.mark.parametrize(
    "adv, beta",
    [
        ([1e30, -1e30, 0.0, 1.0], 1.0),
        ([1e30, 1e30], 1.0),
        ([-1e30, -1e30, -1e30], 1.0),
        ([0.5, -0.3, 1e-3], 1e-12),
        ([1e30, -1e30, 3.0], 1e-12),
        ([2.0, 2.0, 2.0, 2.0], 1.0),
        ([0.1] * 7, 1e-12),
        ([-5.0], 1e-3),
    ],
)
@pytest.mark.parametrize("normalize", [True, False])
def test_awr_weights_never_inf_or_nan(adv, beta, normalize):
    adv = torch.tensor(adv)
    w, clipped = awr_weights(adv, beta, 20.0, normalize)
    assert torch.isfinite(w).all(), w
    assert (w >= 0).all() and (w <= 20.0 + 1e-4).all()
    if not normalize:
        big = adv / beta > math.log(20.0)
        assert torch.equal(clipped, big)
        assert torch.allclose(w[big], torch.tensor(20.0))


def test_awr_weights_zero_std_batch_gives_unit_weights():
    for value in (0.0, 2.0, -1234.5):
        w, clipped = awr_weights(torch.full((8, 1), value), 1.0, 20.0, True)
        close(w, torch.ones(8, 1), rtol=1e-3, atol=1e-3)
        assert not clipped.any()


def test_awr_weights_finite_for_advantages_whose_sum_overflows():
    w, _ = awr_weights(torch.full((5,), 1e38), 1.0, 20.0, True)
    assert torch.isfinite(w).all(), w


# ------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"beta": float("inf")}, "beta"),
        ({"max_weight": 0.0}, "max_weight"),
        ({"max_weight": -2.0}, "max_weight"),
        ({"max_weight": float("nan")}, "max_weight"),
        ({"value_scale": 0.0}, "value_scale"),
        ({"action_bound_penalty": -1.0}, "action_bound_penalty"),
        ({"entropy_coeff": -0.1}, "entropy_coeff"),
        ({"loss_critic_type": "l3"}, "loss_critic_type"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_hyperparameters_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError) as err:
        AWRLoss(continuous_actor(), make_awr_value(OBS), **kwargs)
    (value,) = kwargs.values()
    assert name in str(err.value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("name", ["action_bound_penalty", "entropy_coeff"])
def test_nan_penalty_or_entropy_coeff_rejected(name):
    with pytest.raises(ValueError, match=name):
        AWRLoss(continuous_actor(), make_awr_value(OBS), **{name: float("nan")})


@pytest.mark.parametrize("key", ["action_bound_penalty", "entropy_coeff"])
def test_a_squashed_actor_refuses_a_bound_penalty_or_entropy_bonus_when_built(key):
    """TanhNormal has neither a closed-form mean (the penalty's input) nor entropy: one clear error naming the value
    at construction, not a NotImplementedError from deep inside the first forward (the penalty's, before)."""
    spec = Bounded(LOW, HIGH, shape=(2,))
    with pytest.raises(ValueError, match=rf"AWRLoss: {key}=0\.5 .*set {key}=0\."):
        AWRLoss(make_awr_actor(OBS, spec, tanh=True), make_awr_value(OBS), action_spec=spec, **{key: 0.5})
    loss = AWRLoss(make_awr_actor(OBS, spec, tanh=True), make_awr_value(OBS), action_spec=spec)
    batch = continuous_batch()
    batch["action"] = batch["action"].clamp(LOW + 0.01, HIGH - 0.01)
    assert torch.isfinite(loss(batch)["loss_actor"])


def test_missing_advantage_and_reward_raises():
    loss = AWRLoss(continuous_actor(), make_awr_value(OBS))
    batch = continuous_batch().exclude("advantage", "value_target")
    with pytest.raises(ValueError, match="reward"):
        loss(batch)
    with pytest.raises(ValueError, match="reward"):
        loss.actor_loss(batch)
    with pytest.raises(ValueError, match="reward"):
        loss.value_loss(batch)


def test_missing_done_when_targets_needed_raises():
    loss = AWRLoss(continuous_actor(), make_awr_value(OBS))
    batch = trajectory_batch(2, 4)
    batch["action"] = torch.zeros(2, 4, 2)
    with pytest.raises(ValueError, match="terminated"):
        loss(batch.exclude(("next", "terminated")))


def test_nan_advantage_raises():
    loss = AWRLoss(continuous_actor(), make_awr_value(OBS))
    batch = continuous_batch()
    batch["advantage"][3] = float("nan")
    with pytest.raises(ValueError, match="'advantage'") as err:
        loss(batch)
    assert "nan" in str(err.value)
    with pytest.raises(ValueError, match="'advantage'"):
        loss.actor_loss(batch)


def test_nan_value_target_raises():
    loss = AWRLoss(continuous_actor(), make_awr_value(OBS))
    batch = continuous_batch()
    batch["value_target"][0] = float("inf")
    with pytest.raises(ValueError, match="'value_target'"):
        loss.value_loss(batch)


def test_inf_reward_raises_when_targets_are_computed():
    loss = AWRLoss(continuous_actor(), make_awr_value(OBS))
    batch = trajectory_batch(2, 4)
    batch["action"] = torch.zeros(2, 4, 2)
    batch["next", "reward"][1, 2] = float("inf")
    with pytest.raises(ValueError, match="reward") as err:
        loss(batch)
    assert "inf" in str(err.value)


def test_missing_action_raises():
    loss = AWRLoss(continuous_actor(), make_awr_value(OBS))
    with pytest.raises(ValueError, match="'action'"):
        loss(continuous_batch().exclude("action"))


# ----------------------------------------------- targets computed in forward
def trajectory_batch(b: int, t: int) -> TensorDict:
    """A [b, t] batch with consistent next observations, one termination and one truncation."""
    obs = torch.randn(b, t + 1, OBS)
    observation = obs[:, :-1].clone()
    next_obs = obs[:, 1:].clone()
    done = torch.zeros(b, t, 1, dtype=torch.bool)
    terminated = torch.zeros(b, t, 1, dtype=torch.bool)
    # row 0 terminates at step 1, row 1 is truncated (time limit) at step 2
    done[0, 1] = terminated[0, 1] = True
    done[min(1, b - 1), 2] = True
    # after an episode end the next step starts from a fresh reset observation
    for row, step in ((0, 1), (min(1, b - 1), 2)):
        if step + 1 < t:
            observation[row, step + 1] = torch.randn(OBS) * 3
    return TensorDict(
        observation=observation,
        next=TensorDict(
            observation=next_obs,
            reward=torch.randn(b, t, 1),
            done=done,
            terminated=terminated,
            batch_size=[b, t],
        ),
        batch_size=[b, t],
    )


def hand_td_lambda(batch: TensorDict, gamma: float, lmbda: float) -> torch.Tensor:
    """Backward TD(lambda) loop over each row, cut at done, V(s') dropped at termination (float64)."""
    reward = batch["next", "reward"].double()
    done, term = batch["next", "done"], batch["next", "terminated"]
    v_next = hand_value(batch["next", "observation"])
    b, t = batch.batch_size
    out = torch.zeros(b, t, 1, dtype=torch.float64)
    for i in range(b):
        ret_next = None
        for s in reversed(range(t)):
            boot = 0.0 if term[i, s] else v_next[i, s, 0].item()
            if s == t - 1 or done[i, s]:
                ret = reward[i, s, 0].item() + gamma * boot
            else:
                ret = reward[i, s, 0].item() + gamma * ((1 - lmbda) * boot + lmbda * ret_next)
            out[i, s, 0] = ret
            ret_next = ret
    return out


def test_forward_computes_td_lambda_targets_when_absent():
    actor = continuous_actor()
    loss = AWRLoss(actor, linear_value(), gamma=0.9, normalize_advantage=False)
    loss.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.8)
    batch = trajectory_batch(3, 6)
    batch["action"] = torch.rand(3, 6, 2) * (HIGH - LOW) + LOW
    out = loss(batch)
    ret = hand_td_lambda(batch, 0.9, 0.8)
    v = hand_value(batch["observation"])
    adv = ret - v
    close(out["loss_value"], (0.5 * (ret - v) ** 2).mean())
    close(out["advantage_mean"], adv.mean())
    close(out["advantage_std"], adv.std(unbiased=False))

    params = actor_params_out(actor, batch)
    logp = (
        Normal(params["loc"].detach().double(), params["scale"].detach().double())
        .log_prob(batch["action"].double())
        .sum(-1)
    )
    w, _ = hand_weights(adv, 1.0, 20.0, False)
    close(out["loss_actor"], (-w * logp.flatten()).mean())
    # the caller's batch is left as it was
    assert "advantage" not in batch.keys() and "value_target" not in batch.keys()


def test_default_estimator_is_td_lambda_099_095():
    loss = AWRLoss(continuous_actor(), linear_value())
    batch = trajectory_batch(2, 7)
    td = loss.value_estimator(batch.clone())
    assert type(loss.value_estimator).__name__ == "TDLambdaEstimator"
    close(td["value_target"], hand_td_lambda(batch, 0.99, 0.95))


@pytest.mark.parametrize(
    "value_type, hyper, lmbda",
    [
        (ValueEstimators.TDLambda, {"gamma": 0.9, "lmbda": 0.7}, 0.7),
        (ValueEstimators.GAE, {"gamma": 0.9, "lmbda": 0.7}, 0.7),
        (ValueEstimators.TD0, {"gamma": 0.9}, 0.0),
        (ValueEstimators.TD1, {"gamma": 0.9}, 1.0),
    ],
)
def test_make_value_estimator_types(value_type, hyper, lmbda):
    loss = AWRLoss(continuous_actor(), linear_value())
    assert loss.make_value_estimator(value_type, **hyper) is loss
    batch = trajectory_batch(3, 6)
    td = loss.value_estimator(batch.clone())
    ret = hand_td_lambda(batch, 0.9, lmbda)
    close(td["value_target"], ret)
    close(td["advantage"], ret - hand_value(batch["observation"]))
    # and forward uses it
    batch["action"] = torch.rand(3, 6, 2) * (HIGH - LOW) + LOW
    out = loss(batch)
    close(out["loss_value"], (0.5 * (ret - hand_value(batch["observation"])) ** 2).mean())


def test_unsupported_value_estimator_rejected():
    loss = AWRLoss(continuous_actor(), linear_value())
    with pytest.raises(NotImplementedError, match="AWRLoss"):
        loss.make_value_estimator(ValueEstimators.VTrace)


def test_computed_targets_are_not_differentiated():
    """The value gradient is that of 0.5 (R - V)^2 with R a constant label."""
    value = make_awr_value(OBS)
    loss = AWRLoss(continuous_actor(), value)
    loss.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.8)
    batch = trajectory_batch(2, 5)
    batch["action"] = torch.zeros(2, 5, 2)
    grads = torch.autograd.grad(loss(batch)["loss_value"], list(value.parameters()))

    with torch.no_grad():
        ret = loss.value_estimator(batch.clone())["value_target"]
    v = value(batch.select("observation").clone())["state_value"]
    hand = (0.5 * (ret - v) ** 2).mean()
    hand_grads = torch.autograd.grad(hand, list(value.parameters()))
    for g, h in zip(grads, hand_grads, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"learn_std": True}, {"tanh": True}])
def test_tensor_chain_path_equals_the_tensordict_path(kwargs):
    """The actor and critic run as plain module calls (compat.TensorChain) give the losses, diagnostics and
    gradients of their TensorDict calls, with the bound penalty, a value scale and padded rows."""
    torch.manual_seed(0)
    penalty = 0.0 if kwargs.get("tanh") else 3.0
    fast = AWRLoss(continuous_actor(**kwargs), make_awr_value(OBS), action_bound_penalty=penalty, value_scale=2.0)
    assert fast._actor_chain is not None and fast._value_chain is not None
    slow = copy.deepcopy(fast)
    slow._actor_chain = slow._value_chain = None
    batch = continuous_batch(12)
    batch.set(("collector", "mask"), torch.arange(12) < 9)
    for loss in (fast, slow):  # push the means past the bounds, so that the penalty is not zero
        _push_mean_out_of_bounds(loss.actor_network, 1.5)
    outs = []
    for loss in (fast, slow):
        out = loss(batch.clone())
        (out["loss_actor"] + out["loss_value"]).backward()
        outs.append((out, [p.grad for p in loss.parameters()]))
    (fast_out, fast_grads), (slow_out, slow_grads) = outs
    if penalty:
        assert fast_out["loss_actor"] > AWRLoss(slow.actor_network, slow.value_network)(batch)["loss_actor"]
    for key in slow_out.keys():
        assert torch.equal(fast_out[key], slow_out[key]), key
    for a, b in zip(fast_grads, slow_grads, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_a_deep_copied_loss_runs_its_own_networks():
    """A copy's chains call the copy's modules (a benchmark or a target network trains the copy, not the original)."""
    original = AWRLoss(continuous_actor(), make_awr_value(OBS))
    clone = copy.deepcopy(original)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
    batch = continuous_batch()
    assert not torch.equal(clone(batch.clone())["loss_value"], original(batch.clone())["loss_value"])
    out = clone(batch.clone())
    (out["loss_actor"] + out["loss_value"]).backward()
    assert all(p.grad is None for p in original.parameters())
    assert any(p.grad is not None for p in clone.actor_network.parameters())
    assert any(p.grad is not None for p in clone.value_network.parameters())
