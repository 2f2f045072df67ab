"""relabel(): buffer-wide TD(lambda) targets against a plain Python reference (torchrl_awr/targets.py)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.objectives import ValueEstimators

from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value, relabel

OBS = 3
W = (0.5, -1.0, 0.25)
B = 0.3
GAMMA, LMBDA = 0.9, 0.8


# ------------------------------------------------------------------ set-up
def linear_value(out_key: str = "state_value") -> TensorDictModule:
    lin = nn.Linear(OBS, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([W]))
        lin.bias.fill_(B)
    return TensorDictModule(lin, in_keys=["observation"], out_keys=[out_key])


def make_loss(gamma: float = GAMMA, lmbda: float = LMBDA, value_type=ValueEstimators.TDLambda) -> AWRLoss:
    loss = AWRLoss(make_awr_actor(OBS, Bounded(-1.0, 1.0, shape=(1,))), linear_value())
    hyper = (
        {"gamma": gamma}
        if value_type in (ValueEstimators.TD0, ValueEstimators.TD1)
        else {
            "gamma": gamma,
            "lmbda": lmbda,
        }
    )
    loss.make_value_estimator(value_type, **hyper)
    return loss


def v(obs) -> float:
    """V(s) of `linear_value`, by hand."""
    return sum(w * float(x) for w, x in zip(W, obs, strict=True)) + B


def steps_to_td(rows: list[dict], keys: dict | None = None) -> TensorDict:
    """Flat [n] TensorDict of transitions from a list of Python step records."""
    keys = {"reward": "reward", "done": "done", "terminated": "terminated", **(keys or {})}
    n = len(rows)
    td = TensorDict(
        observation=torch.stack([r["obs"] for r in rows]),
        action=torch.zeros(n, 1),
        step_id=torch.tensor([r["id"] for r in rows]),
        next=TensorDict(
            {
                "observation": torch.stack([r["next_obs"] for r in rows]),
                keys["reward"]: torch.tensor([[r["reward"]] for r in rows]),
                keys["done"]: torch.tensor([[r["done"]] for r in rows]),
                keys["terminated"]: torch.tensor([[r["terminated"]] for r in rows]),
            },
            batch_size=[n],
        ),
        batch_size=[n],
    )
    if "traj" in rows[0]:
        td["collector", "traj_ids"] = torch.tensor([r["traj"] for r in rows])
    return td


def single_stream(n: int, ends: dict[int, str], start_id: int = 0) -> list[dict]:
    """One env's steps; `ends` maps a step index to 'terminated' or 'truncated'."""
    rows, obs = [], torch.randn(OBS)
    for i in range(n):
        nxt = torch.randn(OBS)
        end = ends.get(i)
        rows.append(
            {
                "id": start_id + i,
                "obs": obs,
                "next_obs": nxt,
                "reward": float(torch.randn(())),
                "done": end is not None,
                "terminated": end == "terminated",
            }
        )
        obs = torch.randn(OBS) * 2 if end else nxt
    return rows


def collector_batches(num_envs: int, t: int, n_batches: int, p_end: float = 0.3) -> list[list[dict]]:
    """Collector-style data: per batch, a [num_envs, t] grid flattened env-major, with per-env traj ids."""
    obs = torch.randn(num_envs, OBS)
    traj = list(range(num_envs))
    next_traj, step_id = num_envs, 0
    batches = []
    for _ in range(n_batches):
        grid = [[None] * t for _ in range(num_envs)]
        for s in range(t):
            for e in range(num_envs):
                nxt = torch.randn(OBS)
                u = float(torch.rand(()))
                terminated, done = u < p_end / 2, u < p_end
                grid[e][s] = {
                    "id": step_id,
                    "obs": obs[e].clone(),
                    "next_obs": nxt,
                    "reward": float(torch.randn(())),
                    "done": done,
                    "terminated": terminated,
                    "traj": traj[e],
                }
                step_id += 1
                if done:
                    obs[e] = torch.randn(OBS) * 2
                    traj[e], next_traj = next_traj, next_traj + 1
                else:
                    obs[e] = nxt
        batches.append([row for env_rows in grid for row in env_rows])  # reshape(-1) of [num_envs, t]
    return batches


def reference_returns(rows: list[dict], gamma: float, lmbda: float, use_traj: bool) -> list[float]:
    """TD(lambda) returns over chronologically ordered stored rows, written as a plain loop.

    Each trajectory (traj id, or the whole stream) is walked backwards; its last stored row is cut
    (bootstrapped from V(s') like a time-limit truncation); termination bootstraps 0.
    """
    groups: dict = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["traj"] if use_traj else 0, []).append(i)
    returns = [0.0] * len(rows)
    for members in groups.values():
        ret_next = None
        for j, i in enumerate(reversed(members)):
            row = rows[i]
            if row["terminated"]:
                ret = row["reward"]
            elif j == 0 or row["done"]:
                ret = row["reward"] + gamma * v(row["next_obs"])
            else:
                ret = row["reward"] + gamma * ((1 - lmbda) * v(row["next_obs"]) + lmbda * ret_next)
            returns[i] = ret
            ret_next = ret
    return returns


def fill(capacity: int, batches: list[list[dict]], keys: dict | None = None) -> TensorDictReplayBuffer:
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(capacity))
    for rows in batches:
        rb.extend(steps_to_td(rows, keys))
    return rb


def stored(rb: TensorDictReplayBuffer, key="value_target") -> dict[int, float]:
    """Stored value per step id."""
    data = rb.storage.get(torch.arange(len(rb)))
    return dict(zip(data["step_id"].tolist(), data[key].reshape(-1).tolist(), strict=True))


def assert_matches(rb, rows_in_buffer, expected_returns, key="value_target", atol=1e-4):
    got = stored(rb, key)
    assert sorted(got) == sorted(r["id"] for r in rows_in_buffer)
    for row, exp in zip(rows_in_buffer, expected_returns, strict=True):
        assert got[row["id"]] == pytest.approx(exp, abs=atol, rel=1e-5), f"step {row['id']}"


def naive_storage_order(rb, gamma, lmbda):
    """What a relabel that ignored the cursor and traj ids would compute (storage order, one stream)."""
    data = rb.storage.get(torch.arange(len(rb)))
    rows = [
        {
            "id": int(data["step_id"][i]),
            "next_obs": data["next", "observation"][i],
            "reward": float(data["next", "reward"][i]),
            "done": bool(data["next", "done"][i]),
            "terminated": bool(data["next", "terminated"][i]),
        }
        for i in range(len(rb))
    ]
    return rows, reference_returns(rows, gamma, lmbda, use_traj=False)


# ------------------------------------------------------------------- tests
def test_termination_bootstraps_zero():
    rows = single_stream(12, {4: "terminated", 9: "terminated"})
    rb = fill(32, [rows])
    relabel(rb, make_loss())
    expected = reference_returns(rows, GAMMA, LMBDA, use_traj=False)
    assert_matches(rb, rows, expected)
    got = stored(rb)
    assert got[4] == pytest.approx(rows[4]["reward"], abs=1e-6)  # R = r exactly: no V(s') at a termination
    assert got[9] == pytest.approx(rows[9]["reward"], abs=1e-6)


def test_time_limit_truncation_bootstraps_next_value():
    rows = single_stream(12, {4: "truncated", 8: "terminated"})
    rb = fill(32, [rows])
    relabel(rb, make_loss())
    assert_matches(rb, rows, reference_returns(rows, GAMMA, LMBDA, use_traj=False))
    got = stored(rb)
    assert got[4] == pytest.approx(rows[4]["reward"] + GAMMA * v(rows[4]["next_obs"]), abs=1e-5)
    # the step before a truncation blends V(s_5) with the truncated return, not with step 5's return
    r3 = rows[3]["reward"] + GAMMA * ((1 - LMBDA) * v(rows[3]["next_obs"]) + LMBDA * got[4])
    assert got[3] == pytest.approx(r3, abs=1e-5)
    # the last stored step of the stream is cut and bootstrapped as well
    assert got[11] == pytest.approx(rows[11]["reward"] + GAMMA * v(rows[11]["next_obs"]), abs=1e-5)


def test_advantage_is_target_minus_value_and_stats():
    rows = single_stream(20, {6: "terminated", 13: "truncated"})
    rb = fill(32, [rows])
    stats = relabel(rb, make_loss())
    ret = torch.tensor(reference_returns(rows, GAMMA, LMBDA, use_traj=False), dtype=torch.float64)
    adv = ret - torch.tensor([v(r["obs"]) for r in rows], dtype=torch.float64)
    assert_matches(rb, rows, adv.tolist(), key="advantage")
    assert stats["advantage_mean"] == pytest.approx(adv.mean().item(), abs=1e-5)
    assert stats["advantage_std"] == pytest.approx(adv.std(unbiased=False).item(), abs=1e-5)
    assert stats["value_target_mean"] == pytest.approx(ret.mean().item(), abs=1e-5)
    ev = 1 - adv.var(unbiased=False) / ret.var(unbiased=False)
    assert stats["explained_variance"] == pytest.approx(ev.item(), abs=1e-5)
    # the rest of the storage is untouched
    data = rb.storage.get(torch.arange(20))
    assert torch.equal(data["observation"], torch.stack([r["obs"] for r in rows]))
    assert torch.equal(data["next", "reward"].squeeze(-1), torch.tensor([r["reward"] for r in rows]))


@pytest.mark.parametrize("chunks", [(4, 4, 4, 3), (7, 8), (3, 3, 3, 3, 3, 3, 3)])
def test_write_cursor_is_a_cut_single_stream(chunks):
    """15+ steps of one never-ending episode in a 10-slot buffer: the newest step sits right before the
    oldest in storage; its return must be bootstrapped from V(s'), not glued to the oldest step."""
    capacity = 10
    rows = single_stream(sum(chunks), {})
    batches, k = [], 0
    for c in chunks:
        batches.append(rows[k : k + c])
        k += c
    rb = fill(capacity, batches)
    loss = make_loss()
    relabel(rb, loss)
    kept = rows[-capacity:]
    expected = reference_returns(kept, GAMMA, LMBDA, use_traj=False)
    assert_matches(rb, kept, expected)
    newest = kept[-1]
    assert stored(rb)[newest["id"]] == pytest.approx(newest["reward"] + GAMMA * v(newest["next_obs"]), abs=1e-5)
    # the case is a real trap: storage order would give other numbers
    naive_rows, naive = naive_storage_order(rb, GAMMA, LMBDA)
    assert max(abs(n - stored(rb)[r["id"]]) for r, n in zip(naive_rows, naive, strict=True)) > 1e-2


def test_write_cursor_with_traj_ids_separates_unrelated_episodes():
    """Two unfinished episodes (traj 0 then traj 1) in an 8-slot buffer after 13 writes: traj 1's newest
    step (slot 4) sits next to traj 0's oldest surviving step (slot 5); both are cut, neither leaks."""
    capacity = 8
    old = [{**r, "traj": 0} for r in single_stream(6, {}, start_id=0)]
    new = [{**r, "traj": 1} for r in single_stream(7, {}, start_id=100)]
    rb = fill(capacity, [old, new])
    relabel(rb, make_loss())
    kept = (old + new)[-capacity:]
    assert [r["id"] for r in kept] == [5, 100, 101, 102, 103, 104, 105, 106]
    assert_matches(rb, kept, reference_returns(kept, GAMMA, LMBDA, use_traj=True))
    got = stored(rb)
    for row in (old[5], new[6]):  # the last stored step of each trajectory: a truncation
        assert got[row["id"]] == pytest.approx(row["reward"] + GAMMA * v(row["next_obs"]), abs=1e-5)
    naive_rows, naive = naive_storage_order(rb, GAMMA, LMBDA)
    assert max(abs(n - got[r["id"]]) for r, n in zip(naive_rows, naive, strict=True)) > 1e-2


def test_partially_filled_buffer_cuts_at_newest():
    rows = single_stream(7, {2: "truncated"})
    rb = fill(50, [rows[:4], rows[4:]])
    relabel(rb, make_loss())
    assert_matches(rb, rows, reference_returns(rows, GAMMA, LMBDA, use_traj=False))


@pytest.mark.parametrize("capacity", [200, 50])
def test_interleaved_envs_are_kept_apart(capacity):
    batches = collector_batches(num_envs=3, t=8, n_batches=4)
    rb = fill(capacity, batches)
    relabel(rb, make_loss())
    all_rows = [row for rows in batches for row in rows]
    kept = all_rows[-capacity:]
    expected = reference_returns(kept, GAMMA, LMBDA, use_traj=True)
    assert_matches(rb, kept, expected)
    assert any(r["terminated"] for r in kept) and any(r["done"] and not r["terminated"] for r in kept)
    # treating the flattened batch as one stream would be wrong here
    naive_rows, naive = naive_storage_order(rb, GAMMA, LMBDA)
    got = stored(rb)
    assert max(abs(n - got[r["id"]]) for r, n in zip(naive_rows, naive, strict=True)) > 1e-2


def test_interleaved_envs_with_traj_ids_shaped_like_a_collector():
    """traj ids stored as in a collector's [num_envs, T] batch reshaped with reshape(-1)."""
    batches = collector_batches(num_envs=2, t=6, n_batches=3)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
    for rows in batches:
        flat = steps_to_td(rows)
        grid = flat.reshape(2, 6)  # what a collector hands out ...
        assert grid["collector", "traj_ids"].shape == (2, 6)
        rb.extend(grid.reshape(-1))  # ... flattened for a transition buffer
    relabel(rb, make_loss())
    all_rows = [row for rows in batches for row in rows]
    assert_matches(rb, all_rows, reference_returns(all_rows, GAMMA, LMBDA, use_traj=True))


def test_without_traj_ids_storage_order_is_one_stream():
    rows = single_stream(16, {3: "terminated", 10: "truncated"})
    rb = fill(64, [rows[:9], rows[9:]])
    relabel(rb, make_loss())
    assert_matches(rb, rows, reference_returns(rows, GAMMA, LMBDA, use_traj=False))


def test_traj_key_none_ignores_stored_traj_ids():
    batches = collector_batches(num_envs=2, t=5, n_batches=2)
    rb = fill(100, batches)
    relabel(rb, make_loss(), traj_key=None)
    all_rows = [row for rows in batches for row in rows]
    assert_matches(rb, all_rows, reference_returns(all_rows, GAMMA, LMBDA, use_traj=False))


@pytest.mark.parametrize(
    "value_type, lmbda",
    [(ValueEstimators.GAE, LMBDA), (ValueEstimators.TD0, 0.0), (ValueEstimators.TD1, 1.0)],
)
def test_relabel_uses_the_loss_estimator(value_type, lmbda):
    # consistent trajectories (next_obs of a step is the next step's obs): GAE's target equals TD(lambda)
    batches = collector_batches(num_envs=2, t=7, n_batches=2)
    rb = fill(100, batches)
    relabel(rb, make_loss(value_type=value_type))
    all_rows = [row for rows in batches for row in rows]
    assert_matches(rb, all_rows, reference_returns(all_rows, GAMMA, lmbda, use_traj=True))


def test_relabel_honours_renamed_keys():
    keys = {"reward": "rew", "done": "d", "terminated": "t"}
    rows = single_stream(10, {3: "terminated", 6: "truncated"})
    rb = fill(20, [rows], keys)
    loss = make_loss()
    loss.set_keys(advantage="adv", value_target="ret", **keys)
    relabel(rb, loss)
    data = rb.storage.get(torch.arange(10))
    assert "advantage" not in data.keys() and "value_target" not in data.keys()
    assert_matches(rb, rows, reference_returns(rows, GAMMA, LMBDA, use_traj=False), key="ret")


def test_relabel_twice_follows_the_current_critic():
    rows = single_stream(10, {5: "terminated"})
    rb = fill(20, [rows])
    loss = make_loss()
    relabel(rb, loss)
    first = stored(rb)
    with torch.no_grad():
        loss.value_network.module.bias.add_(1.0)
    relabel(rb, loss)
    second = stored(rb)
    # with V + 1 every bootstrap grows by 1: R_5 (terminated) is unchanged, the rest strictly larger
    assert second[5] == pytest.approx(first[5], abs=1e-6)
    assert all(second[i] > first[i] + 0.05 for i in range(10) if i != 5)


def test_relabel_with_the_awr_value_network():
    """With the package's own critic, targets use that network's V (checked on the stored advantage)."""
    value = make_awr_value(OBS)
    loss = AWRLoss(make_awr_actor(OBS, Bounded(-1.0, 1.0, shape=(1,))), value)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    rows = single_stream(9, {4: "terminated"})
    rb = fill(20, [rows])
    relabel(rb, loss)
    data = rb.storage.get(torch.arange(9))
    with torch.no_grad():
        v_s = value(data.select("observation").clone())["state_value"]
        v_next = value(data["next"].select("observation").clone())["state_value"]
    not_term = (~data["next", "terminated"]).float()
    ret = data["next", "reward"] + GAMMA * not_term * v_next
    torch.testing.assert_close(data["value_target"], ret, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(data["advantage"], ret - v_s, rtol=1e-5, atol=1e-5)


def test_relabel_runs_the_critic_once_per_state_and_on_next_states_only_where_they_are_not_the_next_row():
    """V(s') is read from the next row where s' is that row's s: 24 critic rows instead of 40, the extra 4 after
    the termination, the truncation, a gap in the stream with no done flag and the last row; every target right."""
    rows = single_stream(20, {6: "terminated", 13: "truncated"})
    rows[9]["next_obs"] = rows[10]["obs"] + 1.0  # a row whose s' is not the next row's s, with done unset
    rb = fill(20, [rows])
    loss = make_loss()
    seen = []
    loss.value_network.module.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    names = [name for name, _ in loss.named_parameters()]
    relabel(rb, loss, traj_key=None)
    assert [name for name, _ in loss.named_parameters()] == names  # the critic is not re-registered anywhere
    assert sum(seen) == 20 + 4  # all states; s' after the termination, the truncation, the gap and the last row
    assert_matches(rb, rows, reference_returns(rows, GAMMA, LMBDA, use_traj=False))


def test_compiled_critic_relabels_as_the_eager_one_with_one_graph_for_every_buffer_size():
    """AWRUpdate(compile=True)'s critic for relabel: the same targets and advantages as the eager network (the
    AWR critic with LayerNorm and ELU, in chunks of 100 rows) at every fill of a circular buffer, and one graph
    for all chunk sizes, no graph break: the buffer is first one chunk, then several (views of a larger tensor,
    which compiled a second graph before the critic detached its input)."""
    from torch._dynamo.utils import counters

    from torchrl_awr.update import CompiledCritic

    def awr_loss() -> AWRLoss:
        torch.manual_seed(0)
        layers = {"layer_norm": True, "activation": "elu"}
        loss = AWRLoss(make_awr_actor(OBS, Bounded(-1.0, 1.0, shape=(1,)), **layers), make_awr_value(OBS, **layers))
        loss.make_value_estimator(ValueEstimators.TDLambda, gamma=GAMMA, lmbda=LMBDA, value_chunk_size=100)
        return loss

    eager, ours = awr_loss(), awr_loss()
    critic = CompiledCritic(ours)
    counters.clear()
    batches = collector_batches(num_envs=3, t=30, n_batches=6)  # 90 rows per batch into 200 slots: 90 ... 200
    rb_eager, rb_ours = fill(200, []), fill(200, [])
    for rows in batches:
        for rb in (rb_eager, rb_ours):
            rb.extend(steps_to_td(rows))
        want, got = relabel(rb_eager, eager), relabel(rb_ours, ours, critic=critic)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
        n = len(rb_eager)
        for key in ("value_target", "advantage"):
            torch.testing.assert_close(rb_ours.storage[:n][key], rb_eager.storage[:n][key], rtol=1e-5, atol=1e-5)
    assert critic.compiled
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_relabel_real_collector_output():
    """Trajectory ids and flags as a TorchRL collector writes them (2 envs, time limit 7)."""
    from torchrl.collectors import Collector
    from torchrl.envs import Compose, DoubleToFloat, GymEnv, SerialEnv, StepCounter, TransformedEnv

    def make():
        return TransformedEnv(GymEnv("Pendulum-v1"), Compose(DoubleToFloat(), StepCounter(max_steps=7)))

    env = SerialEnv(2, make)
    env.set_seed(0)
    actor = make_awr_actor(OBS, env.action_spec_unbatched)
    collector = Collector(env, actor, frames_per_batch=20, total_frames=60)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(48))
    flat_all = []
    for batch in collector:
        assert batch.batch_size == (2, 10)
        flat = batch.reshape(-1)
        flat_all.append(flat)
        rb.extend(flat)
    collector.shutdown()
    loss = make_loss()
    relabel(rb, loss)

    flat = torch.cat(flat_all)[-48:]  # what the buffer keeps, oldest first
    rows = [
        {
            "id": i,
            "next_obs": flat["next", "observation"][i],
            "reward": float(flat["next", "reward"][i]),
            "done": bool(flat["next", "done"][i]),
            "terminated": bool(flat["next", "terminated"][i]),
            "traj": int(flat["collector", "traj_ids"][i]),
        }
        for i in range(48)
    ]
    assert any(r["done"] and not r["terminated"] for r in rows)  # the time limit hit inside the data
    expected = reference_returns(rows, GAMMA, LMBDA, use_traj=True)
    write_count = 60
    positions = [(write_count - 48 + i) % 48 for i in range(48)]
    got = rb.storage.get(torch.tensor(positions))["value_target"].reshape(-1)
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-4)


def test_empty_buffer_raises():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(10))
    with pytest.raises(ValueError, match="empty"):
        relabel(rb, make_loss())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_reward_raises(bad):
    rows = single_stream(6, {})
    rows[2]["reward"] = bad
    rb = fill(10, [rows])
    with pytest.raises(ValueError, match="reward"):
        relabel(rb, make_loss())
    assert "value_target" not in rb.storage.get(torch.arange(6)).keys()  # nothing half-written


def test_missing_flag_raises():
    rows = single_stream(6, {})
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(10))
    rb.extend(steps_to_td(rows).exclude(("next", "terminated")))
    with pytest.raises(ValueError, match="terminated"):
        relabel(rb, make_loss())


def test_relabel_can_standardise_advantages_over_the_whole_buffer():
    from tensordict import TensorDict
    from torchrl.data import Bounded, LazyTensorStorage, TensorDictReplayBuffer

    from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value, relabel

    torch.manual_seed(0)
    loss = AWRLoss(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(1,))), make_awr_value(3))
    n = 300
    data = TensorDict(
        observation=torch.randn(n, 3),
        action=torch.zeros(n, 1),
        next=TensorDict(
            observation=torch.randn(n, 3),
            reward=torch.randn(n, 1) * 5 + 2,
            done=torch.zeros(n, 1, dtype=torch.bool),
            terminated=torch.zeros(n, 1, dtype=torch.bool),
            batch_size=[n],
        ),
        batch_size=[n],
    )
    raw_rb, norm_rb = (TensorDictReplayBuffer(storage=LazyTensorStorage(n)) for _ in range(2))
    raw_rb.extend(data.clone())
    norm_rb.extend(data.clone())
    loss.normalize_advantage = False
    raw_stats = relabel(raw_rb, loss)
    loss.normalize_advantage = "buffer"
    norm_stats = relabel(norm_rb, loss)
    raw = raw_rb.storage[:n]["advantage"]
    normed = norm_rb.storage[:n]["advantage"]
    assert raw_stats == norm_stats  # stats describe the raw advantages either way
    torch.testing.assert_close(normed, (raw - raw.mean()) / (raw.std(unbiased=False) + 1e-5))
    torch.testing.assert_close(norm_rb.storage[:n]["value_target"], raw_rb.storage[:n]["value_target"])
