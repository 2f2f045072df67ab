"""TorchRL's loss conventions, checked on AWRLoss and, as a control, on TorchRL's own A2CLoss.

Each check below is something a TorchRL user relies on when they put a loss next to TorchRL's
(``test/objectives/`` in pytorch/rl holds its losses to the same things). Every check runs on AWRLoss with a
Gaussian and with a TanhNormal actor, and on ``A2CLoss`` built on the very same ``make_awr_actor`` /
``make_awr_value`` networks: a check A2C fails is not a TorchRL convention. Issue 17's cases are named in the
test names (``case1`` ... ``case11``).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest
import torch
from tensordict import TensorDict, assert_allclose_td
from torchrl.data import Bounded
from torchrl.objectives import A2CLoss

from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value

OBS, ACT, B = 3, 2, 8
SPEC = Bounded(-1.0, 1.0, shape=(ACT,))

# name -> (loss class, tanh actor, extra kwargs)
LOSSES = {
    "awr": (AWRLoss, False, {}),
    "awr_tanh": (AWRLoss, True, {}),
    "a2c_control": (A2CLoss, False, {"entropy_bonus": False}),
}


def make_loss(name: str, actor=None, value=None, **kwargs):
    cls, tanh, extra = LOSSES[name]
    actor = actor if actor is not None else make_awr_actor(OBS, SPEC, tanh=tanh)
    value = value if value is not None else make_awr_value(OBS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return cls(actor, value, **{**extra, **kwargs})


def value_net(loss):
    return loss.value_network if isinstance(loss, AWRLoss) else loss.critic_network


def actor_loss_key(loss) -> str:
    return "loss_actor" if isinstance(loss, AWRLoss) else "loss_objective"


def value_loss_key(loss) -> str:
    return "loss_value" if isinstance(loss, AWRLoss) else "loss_critic"


def make_batch(b: int = B) -> TensorDict:
    torch.manual_seed(0)
    return TensorDict(
        observation=torch.randn(b, OBS),
        action=torch.rand(b, ACT) * 1.8 - 0.9,
        advantage=torch.randn(b, 1),
        value_target=torch.randn(b, 1),
        next=TensorDict(
            observation=torch.randn(b, OBS),
            reward=torch.randn(b, 1),
            done=torch.zeros(b, 1, dtype=torch.bool),
            terminated=torch.zeros(b, 1, dtype=torch.bool),
            batch_size=[b],
        ),
        batch_size=[b],
    )


def kwargs_of(batch: TensorDict, loss) -> dict:
    flat = batch.flatten_keys("_")
    return {
        "_".join(k) if isinstance(k, tuple) else k: flat.get("_".join(k) if isinstance(k, tuple) else k)
        for k in loss.in_keys
        if ("_".join(k) if isinstance(k, tuple) else k) in flat.keys()
    }


def loss_entries(out: TensorDict) -> dict:
    return {k: v for k, v in out.items() if k.startswith("loss_")}


@pytest.fixture(params=list(LOSSES))
def name(request) -> str:
    return request.param


# ----------------------------------------------------------------------- calls and outputs
def test_case1_keyword_call_returns_out_keys_tuple_and_select_narrows(name):
    loss = make_loss(name)
    batch = make_batch()
    kwargs = kwargs_of(batch, loss)
    if isinstance(loss, AWRLoss):
        assert {"advantage", "value_target"} <= kwargs.keys()  # given targets travel by keyword too
    expected = loss(batch.select(*loss.in_keys, strict=False))
    out = loss(**kwargs)
    assert isinstance(out, tuple) and len(out) == len(loss.out_keys)
    for key, value in zip(loss.out_keys, out, strict=True):
        torch.testing.assert_close(value, expected[key])
    keep = [actor_loss_key(loss), value_loss_key(loss)]
    loss.select_out_keys(*keep)
    narrowed = loss(**kwargs_of(batch, loss))
    assert len(narrowed) == 2
    torch.testing.assert_close(narrowed[0], expected[keep[0]])


def test_case2_reduction_none_is_mean_and_none_string_keeps_rows(name):
    batch = make_batch()
    actor, value = make_awr_actor(OBS, SPEC, tanh=LOSSES[name][1]), make_awr_value(OBS)
    default = loss_entries(make_loss(name, actor, value)(batch))
    as_none = loss_entries(make_loss(name, actor, value, reduction=None)(batch))
    for key in default:
        torch.testing.assert_close(as_none[key], default[key])
    per_row = loss_entries(make_loss(name, actor, value, reduction="none")(batch))
    for key, val in per_row.items():
        assert val.shape[0] == B, key


def test_case3_out_keys_are_exactly_what_forward_returns(name):
    loss = make_loss(name)
    assert set(loss(make_batch()).keys()) == set(loss.out_keys)


def test_case4_subclass_supports_select_out_keys(name):
    cls = LOSSES[name][0]
    sub = type("MyLoss", (cls,), {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = sub(make_awr_actor(OBS, SPEC), make_awr_value(OBS), **LOSSES[name][2])
    key = actor_loss_key(loss)
    loss.select_out_keys(key)
    assert loss.out_keys == [key]
    assert list(loss(make_batch()).keys()) == [key]


def test_outputs_are_scalars_and_only_losses_carry_grad(name):
    out = make_loss(name)(make_batch())
    assert out.batch_size == torch.Size([])
    for key, value in out.items():
        assert value.shape == torch.Size([]), key
        assert value.requires_grad == key.startswith("loss_"), key


def test_in_keys_are_enough(name):
    loss = make_loss(name)
    batch = make_batch()
    subset = loss(batch.select(*loss.in_keys))
    if set(batch.keys(True, True)) <= set(loss.in_keys):  # AWR lists the targets it reads; A2C does not
        torch.testing.assert_close(loss_entries(subset), loss_entries(loss(batch)))


# ----------------------------------------------------------------------- module protocol
def test_case5_functional_api_behaves_as_declared(name):
    loss = make_loss(name)
    assert isinstance(loss.functional, bool)
    _ = loss.actor_network_params  # never an AttributeError
    stateful = loss.get_stateful_net("actor_network")
    if loss.functional:
        assert stateful is not loss.actor_network
    else:
        assert stateful is loss.actor_network
        with pytest.raises(RuntimeError):
            loss.get_stateful_net("actor_network", copy=True)
    other = copy.deepcopy(stateful)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    loss.from_stateful_net("actor_network", other)
    reference = make_loss(name, actor=other, value=value_net(loss))
    batch = make_batch()
    key = actor_loss_key(loss)
    torch.testing.assert_close(loss(batch)[key], reference(batch)[key])


def test_case6_reset_parameters_recursive_changes_every_parameter(name):
    loss = make_loss(name)
    with torch.no_grad():
        for p in loss.parameters():
            p.add_(1000.0)
    before = [p.clone() for p in loss.parameters()]
    loss.reset_parameters_recursive()
    assert all((p != b).any() for p, b in zip(loss.parameters(), before, strict=True))


def test_state_dict_round_trip_and_unknown_key(name):
    loss = make_loss(name)
    fresh = make_loss(name)
    fresh.load_state_dict(loss.state_dict())
    batch = make_batch()
    torch.testing.assert_close(loss_entries(fresh(batch)), loss_entries(loss(batch)))
    with pytest.raises(ValueError):
        loss.set_keys(not_a_key="x")


# ----------------------------------------------------------------------- inputs
def test_case7_input_batch_is_left_alone(name):
    batch = make_batch()
    before = batch.clone()
    make_loss(name)(batch)
    assert set(batch.keys(True, True)) == set(before.keys(True, True))
    assert_allclose_td(batch, before)


def test_case8_action_that_requires_grad_is_refused(name):
    batch = make_batch()
    batch["action"].requires_grad_(True)
    with pytest.raises(RuntimeError, match="requires grad"):
        make_loss(name)(batch)


def test_case9_padded_rows_do_not_count(name):
    """Rows the collector mask drops (SliceSampler(pad_output=True)) change nothing, even when non-finite."""
    actor, value = make_awr_actor(OBS, SPEC, tanh=LOSSES[name][1]), make_awr_value(OBS)
    loss = make_loss(name, actor, value)
    batch = make_batch(B)
    valid = loss_entries(loss(batch[:5]))
    padded = batch.clone()
    padded.set(("collector", "mask"), torch.arange(B) < 5)
    padded["advantage"][5:] = 1e4
    padded["value_target"][5:] = float("nan")
    out = loss_entries(loss(padded))
    for key in valid:
        torch.testing.assert_close(out[key], valid[key], rtol=1e-5, atol=1e-6)
    if isinstance(loss, AWRLoss):  # beyond the convention: A2C's gradients are nan there (nan * 0 in backward)
        sum(out.values()).backward()
        assert all(torch.isfinite(p.grad).all() for p in loss.parameters() if p.grad is not None)


def test_case10_separate_losses_keeps_shared_parameters_out_of_the_value_loss(name):
    for separate in (False, True):
        actor, value = make_awr_actor(OBS, SPEC, tanh=LOSSES[name][1]), make_awr_value(OBS)
        shared = next(m for m in actor.modules() if isinstance(m, torch.nn.Linear))
        value.module[1].module[0] = shared  # the first layer of both MLPs is one module
        loss = make_loss(name, actor, value, separate_losses=separate)
        loss(make_batch())[value_loss_key(loss)].backward()
        reached = shared.weight.grad is not None and shared.weight.grad.abs().sum() > 0
        assert reached != separate
        assert value.module[1].module[-1].weight.grad.abs().sum() > 0  # the critic's own layers still learn


# ----------------------------------------------------------------------- AWR only
def test_case11_a_given_target_is_kept_when_the_other_is_computed():
    loss = make_loss("awr")
    batch = make_batch()
    full = loss(batch)
    only_adv = loss(batch.exclude("value_target"))
    only_target = loss(batch.exclude("advantage"))
    computed = loss(batch.exclude("advantage", "value_target"))
    # the given advantage is the one weighting the actor; the given target the one the critic regresses onto
    torch.testing.assert_close(only_adv["loss_actor"], full["loss_actor"])
    torch.testing.assert_close(only_adv["loss_value"], computed["loss_value"])
    torch.testing.assert_close(only_target["loss_value"], full["loss_value"])
    torch.testing.assert_close(only_target["loss_actor"], computed["loss_actor"])
    assert not torch.allclose(full["loss_value"], computed["loss_value"])


def test_case4_subclass_select_out_keys_in_a_fresh_process():
    """As test_case4 above, in a process where no loss has been used yet (the order-dependent failure)."""
    script = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from torchrl.data import Bounded\n"
        "from torchrl.objectives import A2CLoss\n"
        "from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value\n"
        "for cls, key in ((AWRLoss, 'loss_actor'), (A2CLoss, 'loss_objective')):\n"
        "    sub = type('MyLoss', (cls,), {})\n"
        "    loss = sub(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(2,))), make_awr_value(3))\n"
        "    loss.select_out_keys(key)\n"
        "    assert loss.out_keys == [key], loss.out_keys\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
