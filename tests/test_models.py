"""make_awr_actor / make_awr_value / make_observation_norm (torchrl_awr/models.py)."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torch import nn
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded

from torchrl_awr import AWRLoss, make_awr_actor, make_awr_networks, make_awr_value, make_observation_norm

OBS = 4


def obs_td(b: int = 32, scale: float = 1.0) -> TensorDict:
    return TensorDict(observation=torch.randn(b, OBS) * scale, batch_size=[b])


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def gaussian_head(actor):
    return next(m for m in actor.modules() if hasattr(m, "mean_net"))


# ------------------------------------------------------------- continuous
@pytest.mark.parametrize("action_std", [0.4, 0.15])
def test_continuous_mean_and_std_in_env_units(action_std):
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([3.0, 1.0])  # mid (0.5, 0.5), half (2.5, 0.5)
    norm = make_observation_norm(OBS)
    with torch.no_grad():
        norm.loc.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
        norm.scale.copy_(torch.tensor([2.0, 0.5, 1.0, 4.0]))
    actor = make_awr_actor(OBS, Bounded(low, high, shape=(2,)), action_std=action_std, observation_norm=norm)
    mean_net = gaussian_head(actor).mean_net
    with torch.no_grad():  # a visible mean, so the affine map is really exercised
        mean_net[-1].bias.copy_(torch.tensor([0.6, -0.8]))
    td = obs_td()
    out = actor(td.clone())
    with torch.no_grad():
        mu = mean_net((td["observation"] - norm.loc) / norm.scale)
    mid, half = (high + low) / 2, (high - low) / 2
    torch.testing.assert_close(out["loc"], mid + half * mu)
    torch.testing.assert_close(out["scale"], (half * action_std).expand(32, 2))
    assert out["action"].shape == (32, 2)


def test_fixed_std_has_no_parameter_and_learned_std_does():
    spec = Bounded(-2.0, 3.0, shape=(3,))
    fixed = make_awr_actor(OBS, spec, action_std=0.4)
    learned = make_awr_actor(OBS, spec, action_std=0.4, learn_std=True)
    mlp_params = sum(p.numel() for lin in linears(fixed) for p in lin.parameters())
    assert sum(p.numel() for p in fixed.parameters()) == mlp_params  # nothing but the MLP
    extra = [p for n, p in learned.named_parameters() if "mean_net" not in n]
    assert len(extra) == 1 and extra[0].numel() == 3 and extra[0].requires_grad
    # it starts at action_std (in normalised units) and is trained by the likelihood
    td = obs_td()
    out = learned(td.clone())
    torch.testing.assert_close(out["scale"], torch.full((32, 3), 2.5 * 0.4))
    loss = AWRLoss(learned, make_awr_value(OBS))
    batch = td.update(
        {"action": torch.rand(32, 3) * 5 - 2, "advantage": torch.randn(32, 1), "value_target": torch.randn(32, 1)}
    )
    loss(batch)["loss_actor"].backward()
    assert extra[0].grad is not None and extra[0].grad.abs().sum() > 0
    # the fixed std stays 0.4 whatever the optimiser does: it is not a parameter
    torch.testing.assert_close(fixed(td.clone())["scale"], torch.full((32, 3), 1.0))


def test_output_layer_initialisation_and_default_hidden_sizes():
    actor = make_awr_actor(OBS, Bounded(-1.0, 1.0, shape=(5,)))
    layers = linears(actor)
    assert [(lin.in_features, lin.out_features) for lin in layers] == [(OBS, 128), (128, 64), (64, 5)]
    out_layer = layers[-1]
    assert out_layer.weight.abs().max() <= 0.01
    assert out_layer.weight.abs().max() > 0.002  # uniform in +-0.01, not zero
    assert torch.all(out_layer.bias == 0)
    assert layers[0].weight.abs().max() > 0.05  # hidden layers keep the default (wider) init

    discrete = make_awr_actor(OBS, OneHot(6))
    dlayers = linears(discrete)
    assert [(lin.in_features, lin.out_features) for lin in dlayers] == [(OBS, 128), (128, 64), (64, 6)]
    assert dlayers[-1].weight.abs().max() <= 0.01 and torch.all(dlayers[-1].bias == 0)

    value = make_awr_value(OBS)
    assert [(lin.in_features, lin.out_features) for lin in linears(value)] == [(OBS, 128), (128, 64), (64, 1)]

    custom = make_awr_actor(OBS, Bounded(-1.0, 1.0, shape=(2,)), hidden_sizes=(16,), init_output_scale=0.5)
    clayers = linears(custom)
    assert [(lin.in_features, lin.out_features) for lin in clayers] == [(OBS, 16), (16, 2)]
    assert 0.01 < clayers[-1].weight.abs().max() <= 0.5
    assert all(isinstance(m, nn.ReLU) for m in custom.modules() if isinstance(m, (nn.ReLU, nn.Tanh, nn.ELU)))


def test_layer_norm_and_activation_in_every_hidden_layer_of_both_networks():
    actor, value = make_awr_networks(Unbounded(OBS), Bounded(-1.0, 1.0, shape=(3,)), hidden_sizes=(16, 8),
                                     layer_norm=True, activation="elu")
    for net in (actor, value):
        kinds = [type(m) for m in net.modules() if isinstance(m, (nn.Linear, nn.LayerNorm, nn.ELU, nn.ReLU))]
        assert kinds == [nn.Linear, nn.LayerNorm, nn.ELU, nn.Linear, nn.LayerNorm, nn.ELU, nn.Linear]
        assert [m.normalized_shape for m in net.modules() if isinstance(m, nn.LayerNorm)] == [(16,), (8,)]
    assert actor(obs_td(4))["action"].shape == (4, 3)
    with pytest.raises(ValueError, match="activation='gelu'; allowed: relu, elu, tanh"):
        make_awr_value(OBS, activation="gelu")


def test_initial_policy_mean_is_near_the_middle_of_the_bounds():
    actor = make_awr_actor(OBS, Bounded(-2.0, 3.0, shape=(2,)))
    out = actor(obs_td(scale=1.0))
    assert (out["loc"] - 0.5).abs().max() < 0.5  # 0.01-scale output layer: mean ~ mid


def test_tanh_actor_stays_in_bounds():
    spec = Bounded(-2.0, 3.0, shape=(2,))
    actor = make_awr_actor(OBS, spec, tanh=True, action_std=1.0)
    actions = actor(obs_td(512))["action"]
    assert ((actions >= -2.0) & (actions <= 3.0)).all()
    assert spec.is_in(actions)


def test_config_tanh_builds_a_squashed_actor_without_the_bound_penalty():
    """``model.tanh=true``: TorchRL's TanhNormal inside Pendulum's ±2 bounds, and no penalty on a mean the squashing
    already keeps inside them (its ``mean`` has no closed form); the default keeps the original's Gaussian."""
    from torchrl.modules import TanhNormal

    from torchrl_awr.builders import make_loss
    from torchrl_awr.config import load_config
    from torchrl_awr.envs import make_env

    env = make_env("Pendulum-v1")
    squashed = make_loss(load_config(["env.name=Pendulum-v1", "model.tanh=true", "model.action_std=2.0"]), env)
    gaussian = make_loss(load_config(["env.name=Pendulum-v1", "model.action_std=2.0"]), env)
    assert (squashed.action_bound_penalty, gaussian.action_bound_penalty) == (0.0, 10.0)
    td = TensorDict(observation=torch.randn(512, 3), batch_size=[512])
    with torch.no_grad():
        assert isinstance(squashed.actor_network.get_dist(td), TanhNormal)
        assert not isinstance(gaussian.actor_network.get_dist(td), TanhNormal)
        actions = squashed.actor_network(td)["action"]
    assert actions.abs().max() <= 2.0 and actions.abs().max() > 1.5  # std 2 in pre-squash units: near the bounds
    td.update({"advantage": torch.randn(512, 1), "value_target": torch.randn(512, 1)})
    out = squashed(td)
    assert torch.isfinite(out["loss_actor"])


def test_composite_action_spec_is_unwrapped():
    actor = make_awr_actor(OBS, Composite(action=Bounded(-2.0, 3.0, shape=(2,))), action_std=0.4)
    out = actor(obs_td())
    torch.testing.assert_close(out["scale"], torch.full((32, 2), 1.0))


@pytest.mark.parametrize("bad", [0.0, -0.4, float("nan"), float("inf")])
def test_invalid_action_std_raises(bad):
    with pytest.raises(ValueError, match="action_std") as err:
        make_awr_actor(OBS, Bounded(-1.0, 1.0, shape=(2,)), action_std=bad)
    assert repr(bad) in str(err.value)


def test_infinite_bounds_raise():
    spec = Bounded(torch.tensor([-1.0, -math.inf]), torch.tensor([1.0, 1.0]), shape=(2,))
    with pytest.raises(ValueError, match="bounds"):
        make_awr_actor(OBS, spec)


# --------------------------------------------------------------- discrete
def test_onehot_actor_samples_valid_actions():
    spec = OneHot(5, dtype=torch.long)  # the dtype gym envs give their one-hot action specs
    actor = make_awr_actor(OBS, spec)
    actions = actor(obs_td(1000))["action"]
    assert actions.shape == (1000, 5)
    assert set(actions.unique().tolist()) <= {0, 1}
    assert torch.all(actions.sum(-1) == 1)
    assert spec.is_in(actions)
    counts = actions.sum(0)
    assert (counts > 100).all()  # ~uniform at init (logits ~0): every action is sampled
    with set_interaction_type(InteractionType.DETERMINISTIC):
        td = actor(obs_td(20))
    assert torch.equal(td["action"].argmax(-1), td["logits"].argmax(-1))


def test_categorical_actor_samples_valid_actions():
    spec = Categorical(4)
    actor = make_awr_actor(OBS, spec)
    actions = actor(obs_td(800))["action"]
    assert actions.shape == (800,)
    assert not actions.dtype.is_floating_point
    assert ((actions >= 0) & (actions < 4)).all()
    assert torch.bincount(actions, minlength=4).min() > 100


def test_discrete_actor_ignores_action_std():
    make_awr_actor(OBS, OneHot(3), action_std=-1.0)  # no Gaussian: nothing to validate


# ------------------------------------------------------------------ value
def test_value_output_shape_and_scale():
    torch.manual_seed(3)
    plain = make_awr_value(OBS)
    torch.manual_seed(3)
    scaled = make_awr_value(OBS, value_scale=7.0)
    for a, b in zip(linears(plain), linears(scaled), strict=True):
        assert torch.equal(a.weight, b.weight)  # same init, so the outputs must differ by the scale only
    td = obs_td(9)
    v_plain = plain(td.clone())["state_value"]
    v_scaled = scaled(td.clone())["state_value"]
    assert v_plain.shape == (9, 1) and v_scaled.shape == (9, 1)
    assert v_plain.abs().max() > 1e-3
    torch.testing.assert_close(v_scaled, 7.0 * v_plain)
    # and value_scale changes nothing but the output: the parameters are the MLP's only
    assert sum(p.numel() for p in scaled.parameters()) == sum(p.numel() for p in plain.parameters())


def test_shared_observation_norm_standardises_both_networks():
    norm = make_observation_norm(OBS)
    assert torch.equal(norm.loc, torch.zeros(OBS)) and torch.equal(norm.scale, torch.ones(OBS))
    actor = make_awr_actor(OBS, Bounded(-1.0, 1.0, shape=(2,)), observation_norm=norm)
    value = make_awr_value(OBS, observation_norm=norm)
    td = obs_td(6)
    before_v = value(td.clone())["state_value"]
    before_loc = actor(td.clone())["loc"]
    with torch.no_grad():
        norm.loc.copy_(td["observation"].mean(0))
        norm.scale.copy_(td["observation"].std(0))
    # both now see (obs - loc) / scale: the same as the old networks fed with pre-standardised inputs
    shifted = TensorDict(observation=(td["observation"] - norm.loc) / norm.scale, batch_size=[6])
    with torch.no_grad():
        norm_value = make_awr_value(OBS)
        norm_value.load_state_dict(value.state_dict())
        norm_value[0].loc.zero_()
        norm_value[0].scale.fill_(1.0)
        expected_v = norm_value(shifted)["state_value"]
    torch.testing.assert_close(value(td.clone())["state_value"], expected_v)
    assert not torch.allclose(value(td.clone())["state_value"], before_v)
    assert not torch.allclose(actor(td.clone())["loc"], before_loc)
    # the statistics are module buffers: they travel in the state dict with the weights
    assert any(k.endswith("loc") and torch.equal(t, norm.loc) for k, t in actor.state_dict().items())


# ------------------------------------------------------------------- env
def test_pendulum_rollout_and_loss():
    from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv

    env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
    env.set_seed(0)
    obs_spec = env.observation_spec["observation"]
    actor = make_awr_actor(obs_spec, env.action_spec, action_std=0.4)
    with torch.no_grad():  # as a collector does: AWRLoss (like TorchRL's A2C/PPO) refuses actions that carry grad
        td = env.rollout(20, actor)
    env.close()
    assert td.batch_size == (20,)
    assert td["action"].shape == (20, 1) and td["action"].dtype == torch.float32
    torch.testing.assert_close(td["scale"], torch.full((20, 1), 2.0 * 0.4))  # Pendulum bounds +-2
    assert td["loc"].abs().max() < 1.0
    assert td["next", "reward"].shape == (20, 1)
    # a rollout is a trajectory: the loss computes its own targets from it and trains both networks
    value = make_awr_value(obs_spec)
    loss = AWRLoss(actor, value, action_bound_penalty=10.0, action_spec=env.action_spec)
    out = loss(td)
    assert torch.isfinite(out["loss_actor"]) and torch.isfinite(out["loss_value"])
    (out["loss_actor"] + out["loss_value"]).backward()
    assert all(p.grad is not None for p in actor.parameters())
    assert all(p.grad is not None for p in value.parameters())


def test_cartpole_rollout_with_onehot_actor():
    from torchrl.envs import GymEnv

    env = GymEnv("CartPole-v1")
    env.set_seed(0)
    actor = make_awr_actor(env.observation_spec["observation"], env.action_spec)
    td = env.rollout(20, actor, break_when_any_done=False)
    env.close()
    assert td["action"].shape == (20, 2)
    assert torch.all(td["action"].sum(-1) == 1)
    assert all(env.action_spec.is_in(a) for a in td["action"])
