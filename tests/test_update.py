"""The regression phases and their update step (torchrl_awr.update): minibatches, the phase, eager against compiled."""

import copy
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, LazyTensorStorage, OneHot, TensorDictReplayBuffer

from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value, make_observation_norm, update
from torchrl_awr.update import RegressionPhase, adam_update, init_optimizer_state, sgd_update, shuffled_indices


# ----------------------------------------------------------------------------------- shuffled_indices
def test_minibatches_cover_every_element_once_per_pass():
    batches = list(shuffled_indices(12, batch_size=4, steps=9))
    assert len(batches) == 9
    assert all(b.shape == torch.Size([4]) and b.dtype == torch.long for b in batches)
    passes = [torch.cat(batches[p * 3 : (p + 1) * 3]) for p in range(3)]
    for seen in passes:
        assert sorted(seen.tolist()) == list(range(12))
    assert not all(torch.equal(passes[0], p) for p in passes[1:])  # a new permutation per pass


def test_minibatches_with_remainder_never_repeat_within_a_pass():
    batches = list(shuffled_indices(10, batch_size=3, steps=7))  # 3 per pass: 3 + 3 + 1
    assert len(batches) == 7
    assert [len(b) for b in batches] == [3] * 7
    for p in range(2):
        seen = torch.cat(batches[p * 3 : (p + 1) * 3]).tolist()
        assert len(set(seen)) == 9


def test_minibatches_exact_steps_and_whole_data():
    assert list(shuffled_indices(5, batch_size=2, steps=0)) == []
    batches = list(shuffled_indices(5, batch_size=5, steps=2))
    assert [sorted(b.tolist()) for b in batches] == [[0, 1, 2, 3, 4]] * 2


def test_minibatches_reject_batch_larger_than_data():
    with pytest.raises(ValueError, match="batch_size=6"):
        next(shuffled_indices(5, batch_size=6, steps=1))


# ---------------------------------------------------------------------------------------- RegressionPhase


class CountingSGD(torch.optim.SGD):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def step(self, closure=None):
        self.calls += 1
        return super().step(closure)


def regression_setup(steps: int, n: int = 32, batch_size: int = 8):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(64))
    x = torch.randn(n, 1)
    rb.extend(TensorDict(x=x, y=3 * x, unused=torch.zeros(n, 1), batch_size=[n]))
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = CountingSGD([weight], lr=0.1)
    record = []

    def loss_fn(batch):
        assert set(batch.keys()) == {"x", "y"}  # only the requested keys are read
        assert batch.batch_size == torch.Size([batch_size])
        loss = ((weight * batch["x"] - batch["y"]) ** 2).mean()
        aux = batch["x"].abs().mean()
        record.append((loss.item(), aux.item(), weight.item()))
        return loss, {"aux": aux}

    phase = RegressionPhase("critic_phase", loss_fn, ["x", "y"], rb, optimizer, steps, batch_size)
    return phase, optimizer, weight, record


def test_regression_phase_steps_and_averaged_metrics():
    phase, optimizer, weight, record = regression_setup(steps=3)
    phase()
    assert optimizer.calls == 3
    assert len(record) == 3
    assert [w for *_, w in record] == sorted(w for *_, w in record)  # each step moved the weight towards 3
    assert len({w for *_, w in record}) == 3
    assert 0 < weight.item() < 3
    assert [phase.log(), phase.log()] == [
        {
            "critic_phase/loss": pytest.approx(sum(r[0] for r in record) / 3),
            "critic_phase/aux": pytest.approx(sum(r[1] for r in record) / 3),
        },
        None,  # logged once
    ]


def test_regression_phase_zero_steps_does_nothing():
    phase, optimizer, weight, record = regression_setup(steps=0)
    phase()
    assert optimizer.calls == 0 and record == [] and phase.log() is None
    assert weight.item() == 0.0


def test_regression_phase_non_finite_loss_raises():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    rb.extend(TensorDict(x=torch.ones(8, 1), batch_size=[8]))
    weight = torch.nn.Parameter(torch.zeros(1))

    def loss_fn(batch):
        return (weight * batch["x"]).mean() * float("nan"), {}

    phase = RegressionPhase("actor_phase", loss_fn, ["x"], rb, torch.optim.SGD([weight], lr=0.1), 2, 4)
    with pytest.raises(FloatingPointError, match="actor_phase"):
        phase()


def test_regression_phase_state_dict_is_the_optimizer_state():
    phase, optimizer, *_ = regression_setup(steps=2)
    optimizer.param_groups[0]["momentum"] = 0.9
    phase()
    state = phase.state_dict()
    assert state["param_groups"][0]["lr"] == pytest.approx(0.1)
    assert "momentum_buffer" in state["state"][0]


def test_regression_phase_rejects_non_finite_buffer_entries():
    phase, optimizer, *_ = regression_setup(steps=2)
    phase.replay_buffer.storage._storage["y"][3] = float("nan")
    with pytest.raises(ValueError, match=r"critic_phase: non-finite values in replay buffer entries \['y'\]"):
        phase()
    assert optimizer.calls == 0


def test_regression_phase_follows_the_buffer_across_phases():
    """The phase buffer has fixed addresses (as a captured graph needs) and holds the buffer's newest content."""
    phase, optimizer, weight, record = regression_setup(steps=1, n=8, batch_size=8)
    phase()
    data, address = phase._data, phase._data["x"].data_ptr()
    phase.replay_buffer.extend(TensorDict(x=torch.full((8, 1), 2.0), y=torch.zeros(8, 1), batch_size=[8]))
    phase()
    assert phase._data is data and data["x"].data_ptr() == address and data.shape == (64,)
    torch.testing.assert_close(data["x"][8:16], torch.full((8, 1), 2.0))
    assert len(record) == 2


def test_regression_phase_cudagraphs_needs_cuda():
    phase, optimizer, *_ = regression_setup(steps=1)
    with pytest.raises(ValueError, match="cudagraphs=True needs a CUDA device, got device='cpu'"):
        RegressionPhase("critic_phase", phase.loss_fn, ["x", "y"], phase.replay_buffer, optimizer, 1, 8,
                        cudagraphs=True)


# ------------------------------------------------------------------- compiled and captured updates


def awr_phases(device: str, optimizer: str, actor: str = "gaussian", steps: int = 12, **kwargs):
    """Both AWR phases on a fixed HalfCheetah-sized buffer (128 transitions), built identically for each call.

    ``actor``: ``"gaussian"`` (fixed std, the original), ``"learned_std"``, ``"discrete"`` (one-hot, 4 actions),
    ``"layer_norm"`` (fixed std; actor and critic with LayerNorm and ELU) or ``"tanh"`` (TanhNormal, fixed std; its
    actions strictly inside the bounds, as it samples them).
    """
    torch.manual_seed(0)
    n, discrete = 128, actor == "discrete"
    action_spec = OneHot(4) if discrete else Bounded(-1.0, 1.0, shape=(6,))
    norm = make_observation_norm(17)
    layers = {"hidden_sizes": (32, 16), "observation_norm": norm}
    if actor == "layer_norm":
        layers.update(layer_norm=True, activation="elu")
    loss = AWRLoss(
        make_awr_actor(17, action_spec, learn_std=actor == "learned_std", tanh=actor == "tanh", **layers),
        make_awr_value(17, **layers),
        action_bound_penalty=0.0 if discrete or actor == "tanh" else 10.0,
        action_spec=None if discrete else action_spec,
    ).to(device)
    action = action_spec.rand((n,)).float() if discrete else torch.rand(n, 6) * 1.98 - 0.99
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(256, device=device))
    rb.extend(
        TensorDict(
            observation=torch.randn(n, 17),
            action=action,
            advantage=torch.randn(n, 1),
            value_target=torch.randn(n, 1) * 5,
            batch_size=[n],
        )
    )

    def make_opt(module):  # foreach, as make_optimizers builds them
        params = [p for p in module.parameters() if p.requires_grad]
        if optimizer == "adam":
            return torch.optim.Adam(params, lr=1e-3, capturable=kwargs.get("cudagraphs", False), foreach=True)
        return torch.optim.SGD(params, lr=1e-2, momentum=0.9, foreach=True)

    keys = loss.tensor_keys
    critic = RegressionPhase("critic_phase", loss.value_loss, ["observation", keys.value_target], rb,
                             make_opt(loss.value_network), steps, 32, **kwargs)
    actor_phase = RegressionPhase("actor_phase", loss.actor_loss, ["observation", keys.action, keys.advantage],
                                  rb, make_opt(loss.actor_network), steps, 32, **kwargs)
    return loss, critic, actor_phase


def run_phases(device: str, optimizer: str = "sgd", repeats: int = 2, **kwargs):
    """Parameters and logged metrics after ``repeats`` rounds of both phases, fixed seeds."""
    loss, critic, actor = awr_phases(device, optimizer, **kwargs)
    logged = []
    for _ in range(repeats):
        logged += [critic(), actor()]
    params = {k: v.detach().cpu() for k, v in loss.named_parameters()}
    return params, logged


def assert_same_updates(ours, eager, rtol: float, atol: float):
    ours_params, ours_logs = ours
    eager_params, eager_logs = eager
    for name in eager_params:
        torch.testing.assert_close(ours_params[name], eager_params[name], rtol=rtol, atol=atol, msg=name)
    assert len(ours_logs) == len(eager_logs) == 4
    for got, want in zip(ours_logs, eager_logs, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=rtol * 10, abs=atol * 10), key


def test_eager_phase_checks_its_data_once_not_every_step():
    """The phase checks its buffer at load; the loss's own finiteness check (a host sync per entry and call) is
    skipped for its minibatches, and applies again outside the phase."""
    loss, critic, actor = awr_phases("cpu", "sgd", steps=20)
    with torch.profiler.profile() as prof:
        critic()
        actor()
    calls = sum(1 for e in prof.events() if e.name == "aten::isfinite")
    assert calls == len(critic.keys) + len(actor.keys)  # one per key and phase, none per step (were 60 more)
    bad = actor.replay_buffer.storage[:4].clone()
    bad["advantage"][0] = float("nan")
    with pytest.raises(ValueError, match="non-finite value nan in 'advantage'"):
        loss.actor_loss(bad)


@pytest.mark.parametrize("actor", ["gaussian", "learned_std", "discrete", "layer_norm", "tanh"])
def test_compiled_sgd_update_matches_eager(actor):
    eager = run_phases("cpu", actor=actor)
    moved = {k: v for k, v in awr_phases("cpu", "sgd", actor=actor)[0].named_parameters()}
    assert any(not torch.equal(eager[0][k], moved[k].detach()) for k in moved)  # the phases did train
    assert_same_updates(run_phases("cpu", actor=actor, compile=True), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("actor", ["gaussian", "learned_std", "layer_norm", "tanh"])
def test_compiled_adam_update_matches_eager(actor):
    """Two rounds of 3 steps: Adam divides by the root of tiny second moments, so float rounding differences
    between two correct implementations grow over many steps; a few steps compare the update rule itself."""
    eager = run_phases("cpu", "adam", actor=actor, steps=3)
    assert_same_updates(run_phases("cpu", "adam", actor=actor, steps=3, compile=True), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kind", ["sgd", "sgd_nesterov_wd", "adam", "adam_wd"])
def test_optimizer_updates_as_tensor_ops_match_torch_optim(kind, foreach):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    ours = [p.detach().clone() for p in params]
    opt = {
        "sgd": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=foreach),
        "sgd_nesterov_wd": lambda: torch.optim.SGD(
            params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, foreach=foreach
        ),
        "adam": lambda: torch.optim.Adam(params, lr=0.01, foreach=foreach),
        "adam_wd": lambda: torch.optim.Adam(params, lr=0.01, weight_decay=0.01, betas=(0.8, 0.99), foreach=foreach),
    }[kind]()
    group = opt.param_groups[0]
    shadow = torch.optim.SGD(ours, lr=0.1) if kind.startswith("sgd") else torch.optim.Adam(ours, lr=0.01)
    shadow.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
    state = init_optimizer_state(shadow)
    rule = sgd_update if kind.startswith("sgd") else adam_update
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        with torch.no_grad():
            rule(ours, grads, state, shadow.param_groups[0])
    for p, q in zip(params, ours, strict=True):
        torch.testing.assert_close(q, p.detach(), rtol=1e-6, atol=1e-7)
    if kind.startswith("adam"):
        assert float(state[0]["step"]) == 5.0


def test_compiled_phases_compile_once_for_the_run():
    """One graph per phase, no graph break and no recompilation across phase calls: the graph is compiled at the
    first compiled step and every later step of every later phase call reuses it."""
    from torch._dynamo.utils import counters

    counters.clear()
    _, critic, actor = awr_phases("cpu", "adam", compile=True)
    for _ in range(3):
        critic()
        actor()
    assert critic.compiled and actor.compiled
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_compiled_phase_runs_unroll_steps_per_graph_call():
    """Each call of the graph runs ``unroll`` update steps (the same updates as eager, step by step); a phase whose
    steps it does not divide runs one step per call; steps changed later (an offline last round) that it does not
    divide end with their remainder done eagerly, still the same updates."""
    eager = run_phases("cpu", "adam", steps=4)
    ours = awr_phases("cpu", "adam", steps=4, compile=True, unroll=4)
    shapes = []
    for phase in ours[1:]:
        graph = phase._compiled_steps.compiled

        def counted(indices, graph=graph):
            shapes.append(tuple(indices.shape))
            graph(indices)

        phase._compiled_steps.compiled = counted
    logged = [phase() for _ in range(2) for phase in ours[1:]]
    assert shapes == [(4, 32)] * 2  # per phase: its first call runs uncompiled, the second compiled
    assert_same_updates(({k: v.detach() for k, v in ours[0].named_parameters()}, logged), eager, rtol=1e-5, atol=1e-6)
    assert [phase.unroll for phase in awr_phases("cpu", "sgd", steps=3, compile=True, unroll=2)[1:]] == [1, 1]

    def with_a_cut_round(compile):
        loss, critic, actor = awr_phases("cpu", "sgd", steps=12, compile=compile)
        logged = [critic(), actor()]
        critic.steps = actor.steps = 5  # 2 calls of the two-step graph, then one eager step
        logged += [critic(), actor()]
        return {k: v.detach() for k, v in loss.named_parameters()}, logged

    assert_same_updates(with_a_cut_round(True), with_a_cut_round(False), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"critic_phase: unroll=0; it must be an integer >= 1\."):
        awr_phases("cpu", "sgd", compile=True, unroll=0)


def test_compiled_phase_resumes_from_a_loaded_optimizer_state():
    """load_state_dict replaces the optimizer's state tensors: the graph must update the loaded ones."""
    loss_a, *phases_a = awr_phases("cpu", "adam", compile=True, steps=3)
    for phase in phases_a:
        phase()
    # deep copies, as a checkpoint holds them (state_dict() returns the live state tensors)
    weights, saved = copy.deepcopy(loss_a.state_dict()), copy.deepcopy([phase.state_dict() for phase in phases_a])
    runs = []
    for compile in (True, False):  # a compiled phase that resumes, and the eager reference
        loss, *phases = awr_phases("cpu", "adam", compile=compile, steps=3)
        loss.load_state_dict(weights)
        for phase, state in zip(phases, saved, strict=True):
            phase.load_state_dict(copy.deepcopy(state))  # torch.optim keeps the loaded step tensors
            phase()
        runs.append((loss, phases))
    (resumed, phases), (reference, _) = runs
    for (name, p), (_, q) in zip(resumed.named_parameters(), reference.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert float(phases[1].optimizer.state_dict()["state"][0]["step"]) == 6.0


def test_unsupported_optimizer_warns_once_and_updates_eagerly():
    _, critic, _ = awr_phases("cpu", "sgd")
    rmsprop = torch.optim.RMSprop(critic.optimizer.param_groups[0]["params"], lr=1e-3)
    with pytest.warns(UserWarning, match=r"critic_phase: compile=True cannot express RMSprop \(supported: SGD, Adam\)"):
        phase = RegressionPhase("critic_phase", critic.loss_fn, critic.keys, critic.replay_buffer, rmsprop, 4, 32,
                                compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        phase()
    assert not phase.compiled and rmsprop.state  # it trained, eagerly


def test_a_failing_compilation_falls_back_to_eager_with_one_warning():
    """No usable C++ compiler (inductor's CPU code needs one): the run goes on eagerly, saying why once (per phase,
    and once for relabel's critic)."""
    script = textwrap.dedent(
        """
        import warnings, torch, test_update as t
        eager = t.run_phases("cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ours = t.run_phases("cpu", compile=True)
        lines = [str(w.message) for w in caught if "compiling the update step failed" in str(w.message)]
        print("RESULT", len(lines), lines[0][:80] if lines else "")
        t.assert_same_updates(ours, eager, rtol=1e-5, atol=1e-6)
        from torchrl_awr.update import CompiledCritic
        loss, critic_phase, _ = t.awr_phases("cpu", "sgd")
        critic, states = CompiledCritic(loss), critic_phase.replay_buffer.storage[:128].select("observation")
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            values = [critic(states), critic(states)]
        want = loss.value_network(states.copy())["state_value"]
        assert all(torch.equal(v, want) for v in values) and not critic.compiled
        print("CRITIC", *[str(w.message)[:38] for w in caught])
        """
    )
    env = {"CXX": "/nonexistent/c++", "PATH": "/nonexistent", "TORCHINDUCTOR_CACHE_DIR": "/tmp/awr-no-cxx-cache"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         cwd=__file__.rsplit("/", 1)[0], env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    result = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    _, count, message = result.split(" ", 2)
    assert count == "2", result  # one line per phase, then eager
    assert message.startswith("critic_phase: compiling the update step failed"), message
    critic = next(line for line in out.stdout.splitlines() if line.startswith("CRITIC "))
    assert critic == "CRITIC relabel: compiling the critic failed (", critic  # once, then eagerly


def test_compiled_step_is_one_graph_without_host_sync():
    """The whole update step (gather, loss, gradients, optimizer update) traces as one graph: nothing reads a
    tensor as a Python value or branches on data (which CUDA stream capture would refuse, too)."""
    for optimizer in ("sgd", "adam"):
        _, *phases = awr_phases("cpu", optimizer, compile=True, steps=1)
        for phase in phases:
            phase()  # loads the phase buffer and creates the optimizer state
            explained = torch._dynamo.explain(phase._graph_step)(torch.arange(32))
            assert explained.graph_count == 1 and not explained.break_reasons, (phase.name, explained.break_reasons)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("compile", [False, True])
def test_cudagraph_update_matches_eager_on_cuda(optimizer, compile):
    eager = run_phases("cuda", optimizer)
    assert_same_updates(run_phases("cuda", optimizer, compile=compile, cudagraphs=True), eager, rtol=1e-5, atol=1e-6)


def cyclic_indices(n: int, batch_size: int, steps: int, device=None):
    """Minibatches without a random permutation: CPU and CUDA generators draw different ones."""
    for step in range(steps):
        yield (torch.arange(batch_size) + step * batch_size).remainder(n).to(device)


@cuda
def test_cuda_update_matches_cpu(monkeypatch):
    monkeypatch.setattr(update, "shuffled_indices", cyclic_indices)
    assert_same_updates(run_phases("cuda"), run_phases("cpu"), rtol=1e-4, atol=1e-5)
