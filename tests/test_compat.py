"""torchrl_awr.compat: each private-API helper still works, and its reason still holds (when one of these fails
after a torchrl / tensordict upgrade, the helper can go: use the public API the failure points to)."""

import importlib.util
import inspect
import io
import time
from types import SimpleNamespace
from unittest.mock import patch

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.datasets import MinariExperienceReplay
from torchrl.objectives import A2CLoss
from torchrl.trainers import Trainer
from tqdm import tqdm

from torchrl_awr import make_awr_actor, make_awr_value, make_env
from torchrl_awr.compat import (
    DirectWriteModule,
    advance_progress_bar,
    fifo_start,
    loss_mask_keys,
    memmap_like_keeps_content,
    values_from_tensordict,
)
from torchrl_awr.loss import AWRLoss


def test_fifo_start_is_the_oldest_slot_and_no_public_cursor_exists():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(4))
    rb.extend(TensorDict(x=torch.arange(6.0), batch_size=[6]))  # slots hold 4, 5, 2, 3: the oldest is slot 2
    assert fifo_start(rb) == 2
    assert not any(hasattr(rb, name) for name in ("cursor", "write_cursor")), "a public cursor: use it"


def test_values_from_tensordict_uses_the_given_values_and_leaves_the_critic_where_it_was():
    loss = AWRLoss(make_awr_actor(3, make_env("Pendulum-v1").action_spec), make_awr_value(3))
    estimator = loss.value_estimator
    names = sorted(name for name, _ in loss.named_parameters())
    n = 5
    data = TensorDict(
        observation=torch.randn(1, n, 3),
        state_value=torch.zeros(1, n, 1),
        next=TensorDict(
            observation=torch.randn(1, n, 3),
            state_value=torch.ones(1, n, 1),
            reward=torch.zeros(1, n, 1),
            done=torch.ones(1, n, 1, dtype=torch.bool),  # each step truncated: its target is r + γ V(s')
            terminated=torch.zeros(1, n, 1, dtype=torch.bool),
            batch_size=[1, n],
        ),
        batch_size=[1, n],
    )
    with torch.no_grad(), values_from_tensordict(estimator):
        estimator(data)
    torch.testing.assert_close(data["advantage"], torch.full((1, n, 1), 0.99))  # 0 + γ · 1 − 0: the given values
    assert estimator.value_network is loss.value_network
    assert "value_network" not in dict(estimator.named_children()), "TorchRL registers the critic now: assign it"
    assert sorted(name for name, _ in loss.named_parameters()) == names


def test_loss_mask_keys_match_torchrl_losses():
    env = make_env("Pendulum-v1", seed=0)
    actor, value = make_awr_actor(3, env.action_spec), make_awr_value(3)
    assert loss_mask_keys(AWRLoss(actor, value)) == loss_mask_keys(A2CLoss(actor, value))
    assert not hasattr(A2CLoss, "loss_mask_keys"), "torchrl has a public loss_mask_keys: use it"


def test_trainer_progress_bar_starts_at_zero():
    assert "tqdm(total=self.total_frames)" in inspect.getsource(Trainer.train), (
        "Trainer.train builds its bar differently now: check whether advance_progress_bar is still needed"
    )


def test_resumed_progress_bar_counts_frames_and_times_only_this_run():
    trainer = SimpleNamespace(progress_bar=True, _pbar=tqdm(total=10_000, file=io.StringIO(), mininterval=0))
    advance_progress_bar(trainer, 6000, "gradient_steps")
    time.sleep(0.05)
    trainer._pbar.update(100)
    bar = trainer._pbar.format_dict
    assert (bar["n"], bar["initial"], bar["unit"]) == (6100, 6000, " gradient steps")
    assert bar["rate"] <= 100 / 0.05, "the rate (and the ETA) must count the 100 steps of this run, not the 6000"


def test_direct_write_skips_the_per_output_package_lookup():
    def make(cls):
        return cls(torch.nn.Linear(2, 2), in_keys=["x"], out_keys=["y"])

    td = TensorDict(x=torch.ones(3, 2), batch_size=[3])
    calls = {}
    for cls in (TensorDictModule, DirectWriteModule):
        with patch("importlib.util.find_spec", wraps=importlib.util.find_spec) as find_spec:
            out = make(cls)(td.clone())
        calls[cls.__name__] = find_spec.call_count
        assert out["y"].shape == (3, 2)
    assert calls["DirectWriteModule"] == 0
    assert calls["TensorDictModule"] > 0, "TensorDictModule no longer looks packages up per output: drop the subclass"


def test_minari_replay_still_stores_with_memmap_like():
    assert "memmap_like" in inspect.getsource(MinariExperienceReplay), (
        "MinariExperienceReplay no longer calls memmap_like: drop memmap_like_keeps_content"
    )
    td = TensorDict(x=torch.ones(3), batch_size=[3])
    assert td.memmap_like().get("x").sum() == 0  # contentless, as documented
    with memmap_like_keeps_content():
        assert td.memmap_like().get("x").sum() == 3
    assert td.memmap_like().get("x").sum() == 0  # restored


def test_observation_norm_still_branches_on_a_tensor_buffer():
    from torchrl.envs import ObservationNorm

    from torchrl_awr.compat import StateNorm

    assert "standard_normal" in inspect.getsource(ObservationNorm._apply_transform), (
        "ObservationNorm._apply_transform no longer branches on standard_normal: StateNorm may go"
    )
    norm = StateNorm(loc=torch.tensor([1.0, 2.0]), scale=torch.tensor([2.0, 4.0]), in_keys=["observation"])
    torch.testing.assert_close(norm._apply_transform(torch.tensor([3.0, 6.0])), torch.tensor([1.0, 1.0]))


def test_ray_local_address_helper_still_exists():
    import pytest

    services = pytest.importorskip("ray._private.services", reason="ray is not installed (pip install -e '.[ray]')")
    assert hasattr(services, "canonicalize_bootstrap_address"), "Ray moved it: update compat.ray_local_address"


def test_async_workers_still_drop_a_batch_when_asked_for_their_state():
    import torchrl.collectors._runner as runner
    from torchrl.collectors import MultiAsyncCollector, MultiCollector

    from torchrl_awr.compat import CheckpointableAsyncCollector

    assert "we skip the collected trajectory" in inspect.getsource(runner), (
        "torchrl no longer drops a worker's batch on a message: MultiAsyncCollector's own state_dict may do"
    )
    source = inspect.getsource(MultiCollector)  # the class MultiAsyncCollector inherits them from: the names we read
    assert all(f"self.{name} = " in source for name in ("_traj_pool", "_frames", "_iter"))
    assert issubclass(CheckpointableAsyncCollector, MultiAsyncCollector)


def test_state_norm_clips_the_standardised_observation():
    from torchrl_awr import make_observation_norm

    norm = make_observation_norm(2, clip=3.0)
    norm.scale.fill_(0.01)  # a dim seen constant while the statistics were fitted: 0.1 away is 10 stds
    out = norm(TensorDict(observation=torch.tensor([[0.1, -0.02]]), batch_size=[1]))["observation_norm"]
    torch.testing.assert_close(out, torch.tensor([[3.0, -2.0]]))


def _python_calls(fn) -> int:
    """How many Python function calls ``fn()`` makes (a count, not a timing)."""
    import sys

    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def _networks():
    from torchrl.data import Bounded, Categorical, OneHot

    box = Bounded(-2.0, 1.0, shape=(3,))
    kinds = {
        "gaussian": (box, {}),
        "learned std": (box, {"learn_std": True}),
        "tanh": (box, {"tanh": True}),
        "layer norm + elu": (box, {"layer_norm": True, "activation": "elu"}),
        "one-hot": (OneHot(4), {}),
        "categorical": (Categorical(4), {}),
    }
    for name, (spec, kwargs) in kinds.items():
        yield name, make_awr_actor(5, spec, **kwargs).det_part
    yield "critic", make_awr_value(5)


def test_tensor_chain_gives_the_sequence_outputs_without_its_machinery():
    from torchrl_awr.compat import TensorChain

    td = TensorDict(observation=torch.randn(7, 5), batch_size=[7])
    for name, sequence in _networks():
        chain = TensorChain.of(sequence)
        assert chain is not None, name
        expected = sequence(td.clone())
        out = chain(td)
        assert set(out) == set(expected.keys(True, True)), name
        for key, value in out.items():
            assert torch.equal(value, expected.get(key)), (name, key)
        through_tensordict = _python_calls(lambda s=sequence: s(td.clone()))
        through_chain = _python_calls(lambda c=chain: c(td))
        assert through_chain * 3 < through_tensordict, (
            f"{name}: tensordict's module call now makes {through_tensordict} Python calls against the chain's "
            f"{through_chain}: its per-call machinery is gone, and TensorChain may go"
        )


def test_tensor_chain_refuses_sequences_it_cannot_run_on_tensors():
    from tensordict.nn import TensorDictSequential

    from torchrl_awr.compat import TensorChain

    linear = TensorDictModule(torch.nn.Linear(2, 2), in_keys=["x"], out_keys=["y"])
    hooked = TensorDictModule(torch.nn.Linear(2, 2), in_keys=["x"], out_keys=["y"])
    hooked.register_forward_hook(lambda module, args, out: out)

    class OwnForward(TensorDictModule):
        def forward(self, tensordict):
            return tensordict

    refused = {
        "selected_out_keys": TensorDictSequential(linear, selected_out_keys=["y"]),
        "partial_tolerant": TensorDictSequential(linear, partial_tolerant=True),
        "keyword inputs": TensorDictModule(lambda a: a, in_keys={"x": "a"}, out_keys=["y"]),
        "a forward hook": TensorDictSequential(hooked),
        "its own forward": TensorDictSequential(OwnForward(torch.nn.Linear(2, 2), in_keys=["x"], out_keys=["y"])),
        "a probabilistic actor": make_awr_actor(5, make_env("Pendulum-v1").action_spec),
    }
    for name, module in refused.items():
        assert TensorChain.of(module) is None, name
    assert TensorChain.of(TensorDictSequential(linear)) is not None
