"""Trainer hooks, each on its own: normaliser, evaluation, buffer, episode returns, clock."""

import copy
import csv

import gymnasium as gym
import pytest
import torch
from fakes import DummyTrainer
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs.utils import ExplorationType, exploration_type

from torchrl_awr import make_awr_actor, make_env, make_observation_norm
from torchrl_awr.buffers import ExtendBuffer
from torchrl_awr.models import UpdateObservationNorm
from torchrl_awr.monitoring import Evaluate, LogEpisodeReturn, RunClock


def obs_batch(obs: torch.Tensor, mask: torch.Tensor | None = None) -> TensorDict:
    td = TensorDict(observation=obs, batch_size=obs.shape[:-1])
    if mask is not None:
        td.set(("collector", "mask"), mask)
    return td


# ------------------------------------------------------------------------------ UpdateObservationNorm


def test_observation_norm_stats_then_frozen():
    norm = make_observation_norm(3)
    hook = UpdateObservationNorm(norm, max_samples=10, min_std=1e-2)
    data = torch.randn(5, 4, 3, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.0]) + torch.tensor([2.0, -1.0, 5.0])
    for k in range(3):  # 4 + 4 + 4 samples: the third batch crosses max_samples and is still counted
        hook(obs_batch(data[k].float()))
    seen = data[:3].reshape(-1, 3)
    assert hook.count == 12
    torch.testing.assert_close(norm.loc, seen.mean(0).float())
    expected_std = seen.std(0, unbiased=False).clamp_min(1e-2).float()
    torch.testing.assert_close(norm.scale, expected_std, rtol=1e-4, atol=1e-6)
    assert norm.scale[2].item() == pytest.approx(1e-2)  # constant dimension: the std floor
    frozen = (norm.loc.clone(), norm.scale.clone())
    for k in range(3, 5):
        hook(obs_batch(data[k].float() + 100.0))
    assert hook.count == 12
    torch.testing.assert_close(norm.loc, frozen[0])
    torch.testing.assert_close(norm.scale, frozen[1])


def test_observation_norm_uses_valid_transitions_only():
    norm = make_observation_norm(1)
    hook = UpdateObservationNorm(norm, max_samples=1000)
    obs = torch.tensor([[[1.0], [3.0], [999.0]], [[5.0], [-999.0], [7.0]]])  # [envs=2, T=3, 1]
    mask = torch.tensor([[True, True, False], [True, False, True]])
    hook(obs_batch(obs, mask))
    assert hook.count == 4
    assert norm.loc.item() == pytest.approx(4.0)  # mean of 1, 3, 5, 7
    assert norm.scale.item() == pytest.approx(torch.tensor([1.0, 3.0, 5.0, 7.0]).std(unbiased=False).item())


def test_observation_norm_normalises_what_networks_read():
    norm = make_observation_norm(2)
    UpdateObservationNorm(norm, max_samples=100)(obs_batch(torch.tensor([[1.0, 10.0], [3.0, 30.0]])))
    out = norm(TensorDict(observation=torch.tensor([[3.0, 10.0]]), batch_size=[1]))
    torch.testing.assert_close(out["observation_norm"], torch.tensor([[1.0, -1.0]]))


def test_observation_norm_state_dict_round_trip():
    data = torch.randn(6, 8, 3)
    norm_a, norm_b = make_observation_norm(3), make_observation_norm(3)
    hook_a = UpdateObservationNorm(norm_a, max_samples=30)
    hook_b = UpdateObservationNorm(norm_b, max_samples=30)
    for k in range(2):
        hook_a(obs_batch(data[k]))
    state = copy.deepcopy(hook_a.state_dict())  # as a checkpoint would hold it
    hook_b.load_state_dict(state)
    assert hook_b.count == 16
    torch.testing.assert_close(hook_b.total, hook_a.total)
    torch.testing.assert_close(hook_b.total_sq, hook_a.total_sq)
    for k in range(2, 6):  # both continue identically (and freeze at the same batch)
        hook_a(obs_batch(data[k]))
        hook_b(obs_batch(data[k]))
        torch.testing.assert_close(norm_b.loc, norm_a.loc)
        torch.testing.assert_close(norm_b.scale, norm_a.scale)
    assert hook_a.count == hook_b.count == 32
    torch.testing.assert_close(norm_a.loc, data[:4].reshape(-1, 3).mean(0))
    # loading must not alias the source tensors
    hook_b.total.add_(1.0)
    assert not torch.equal(hook_b.total, state["total"])


# ------------------------------------------------------------------------------------------- Evaluate


class PushRight:
    """Deterministic CartPole policy: always action 1 (one-hot)."""

    def __call__(self, td):
        action = torch.zeros(*td.batch_size, 2, dtype=torch.int64)
        action[..., 1] = 1
        td.set("action", action)
        return td


class ConstantTorque:
    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, td):
        td.set("action", torch.full((*td.batch_size, 1), self.value))
        return td


def make_evaluate(env, policy, max_steps: int, **kwargs) -> Evaluate:
    return Evaluate(env, policy, RunClock(), interval=1, max_steps=max_steps, **kwargs)


def first_episode_returns(env, policy, max_steps: int) -> list[float]:
    """Manual reference: per env, the sum of rewards up to and including its first done."""
    rollout = env.rollout(max_steps, policy, break_when_any_done=False)
    returns = []
    for reward, done in zip(rollout["next", "reward"].squeeze(-1), rollout["next", "done"].squeeze(-1), strict=True):
        end = int(done.nonzero()[0]) + 1 if done.any() else max_steps
        returns.append(reward[:end].sum().item())
    return returns


def test_evaluate_first_episode_return_per_env():
    """CartPole envs fall at different steps; later episodes must not leak into the score."""
    num_envs, seed, max_steps = 3, 11, 60
    evaluator = make_evaluate(make_env("CartPole-v1", num_envs=num_envs, seed=seed), PushRight(), max_steps)
    returns = evaluator.episode_returns()
    assert returns.shape == torch.Size([num_envs])
    expected = first_episode_returns(make_env("CartPole-v1", num_envs=num_envs, seed=seed), PushRight(), max_steps)
    assert returns.tolist() == pytest.approx(expected)
    # independent check: the episode length of each seeded gymnasium twin (CartPole pays 1 per step)
    lengths = []
    for i in range(num_envs):
        ref = gym.make("CartPole-v1")
        ref.reset(seed=seed + i)
        ref.reset()
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = ref.step(1)
            steps, done = steps + 1, terminated or truncated
        lengths.append(float(steps))
    assert returns.tolist() == pytest.approx(lengths)
    assert max(lengths) < max_steps and len(set(lengths)) > 1  # the setup really ends episodes unevenly


def test_evaluate_stops_once_every_env_has_ended_its_first_episode():
    """Each CartPole copy falls within ~10 steps under PushRight: the evaluation stops at the last first fall, not
    at max_steps (the copies that fell first are reset by TorchRL and stepped on, and do not count)."""
    calls = []

    def counting(td):
        calls.append(1)
        return PushRight()(td)

    returns = make_evaluate(make_env("CartPole-v1", num_envs=3, seed=11), counting, 500).episode_returns()
    assert len(calls) == max(returns.tolist())  # CartPole pays 1 per step: the longest first episode's length
    assert len(calls) < 30


@pytest.mark.parametrize("max_steps", [30, 250])
def test_evaluate_pendulum_cut_or_complete(max_steps):
    """Cut by max_steps: the return so far; otherwise the full 200-step episode."""
    policy = ConstantTorque(0.5)
    evaluator = make_evaluate(make_env("Pendulum-v1", num_envs=2, seed=0), policy, max_steps)
    returns = evaluator.episode_returns()
    rollout = make_env("Pendulum-v1", num_envs=2, seed=0).rollout(min(max_steps, 200), policy)
    expected = rollout["next", "reward"].squeeze(-1).sum(-1)
    torch.testing.assert_close(returns, expected, rtol=1e-5, atol=1e-3)


def test_evaluate_runs_the_policy_deterministically():
    env = make_env("Pendulum-v1", num_envs=2, seed=0)
    actor = make_awr_actor(3, env.action_spec, action_std=1.0)
    seen = []

    def policy(td):
        seen.append(exploration_type())
        return actor(td)

    a = make_evaluate(env, policy, 20).episode_returns()
    b = make_evaluate(make_env("Pendulum-v1", num_envs=2, seed=0), actor, 20).episode_returns()
    torch.testing.assert_close(a, b)  # a sampling policy would give different returns
    assert seen and all(t == ExplorationType.DETERMINISTIC for t in seen)


def test_evaluate_writes_csv_and_restores_history(tmp_path):
    path = tmp_path / "eval.csv"
    evaluator = make_evaluate(make_env("Pendulum-v1", num_envs=2, seed=0), ConstantTorque(0.0), 5, csv_path=path)
    evaluator._trainer = DummyTrainer(collected_frames=64)
    row = evaluator.evaluate()
    expected = first_episode_returns(make_env("Pendulum-v1", num_envs=2, seed=0), ConstantTorque(0.0), 5)
    assert row["frames"] == 64
    assert row["eval_return_mean"] == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert row["eval_return_std"] == pytest.approx(abs(expected[0] - expected[1]) / 2, rel=1e-4)
    evaluator._trainer.collected_frames = 128
    evaluator.evaluate()
    rows = list(csv.DictReader(path.open()))
    assert [int(r["frames"]) for r in rows] == [64, 128]
    assert float(rows[0]["eval_return_mean"]) == pytest.approx(row["eval_return_mean"])
    # resuming from a state taken after the first row drops the second
    state = {"last_frames": 64, "history": evaluator.history[:1]}
    evaluator.load_state_dict(state)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["frames"]) for r in rows] == [64]
    assert evaluator.last_frames == 64


def test_evaluate_interval():
    clock = RunClock()
    evaluator = Evaluate(make_env("Pendulum-v1", seed=0), ConstantTorque(0.0), clock, interval=2, max_steps=3)
    evaluator._trainer = DummyTrainer()
    clock.iteration = 1
    assert evaluator(None) is None
    clock.iteration = 2
    out = evaluator(None)
    assert set(out) == {"eval/return_mean", "eval/return_std", "log_pbar"}
    assert len(evaluator.history) == 1


# ----------------------------------------------------------------------------------------- ExtendBuffer


def test_extend_buffer_drops_masked_entries_and_excluded_keys():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
    hook = ExtendBuffer(rb)
    idx = torch.arange(8.0).reshape(2, 4)
    batch = TensorDict(
        observation=idx.unsqueeze(-1),
        loc=torch.zeros(2, 4, 1),
        scale=torch.ones(2, 4, 1),
        next=TensorDict(reward=idx.unsqueeze(-1) * 10, batch_size=[2, 4]),
        collector=TensorDict(
            mask=torch.tensor([[True, True, False, False], [True, False, True, True]]), batch_size=[2, 4]
        ),
        batch_size=[2, 4],
    )
    hook(batch)
    assert len(rb) == 5
    stored = rb.storage[:5]
    assert stored["observation"].squeeze(-1).tolist() == [0.0, 1.0, 4.0, 6.0, 7.0]
    assert stored["next", "reward"].squeeze(-1).tolist() == [0.0, 10.0, 40.0, 60.0, 70.0]
    keys = set(stored.keys(True, True))
    assert "loc" not in keys and "scale" not in keys
    assert "observation" in keys


def test_extend_buffer_without_mask_keeps_everything_env_major():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
    ExtendBuffer(rb)(TensorDict(observation=torch.arange(6.0).reshape(2, 3, 1), batch_size=[2, 3]))
    ExtendBuffer(rb)(TensorDict(observation=torch.arange(6.0, 8.0).reshape(2, 1, 1), batch_size=[2, 1]))
    assert rb.storage[: len(rb)]["observation"].squeeze(-1).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_extend_buffer_state_dict_round_trip():
    rb_a = TensorDictReplayBuffer(storage=LazyTensorStorage(10))
    rb_b = TensorDictReplayBuffer(storage=LazyTensorStorage(10))
    ExtendBuffer(rb_a)(TensorDict(x=torch.arange(13.0), batch_size=[13]))
    hook_b = ExtendBuffer(rb_b)
    hook_b.load_state_dict(copy.deepcopy(ExtendBuffer(rb_a).state_dict()))
    assert len(rb_b) == 10
    assert rb_b.write_count == 13
    torch.testing.assert_close(rb_b.storage[:10]["x"], rb_a.storage[:10]["x"])



# ------------------------------------------------------------------------------------ logging helpers


def test_log_episode_return_means_finished_episodes():
    hook = LogEpisodeReturn()
    done = torch.tensor([[False, True, False], [True, False, True]]).unsqueeze(-1)
    ret = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).unsqueeze(-1)
    batch = TensorDict(next=TensorDict(done=done, episode_reward=ret, batch_size=[2, 3]), batch_size=[2, 3])
    assert hook(batch) == {"train/return": pytest.approx(4.0), "log_pbar": True}
    batch["next", "done"] = torch.zeros_like(done)
    assert hook(batch) is None


def test_run_clock_counts_iterations_and_restores():
    clock = RunClock()
    clock._trainer = DummyTrainer(collected_frames=100)
    out = clock(None)
    assert out["iteration"] == 1 and out["frames"] == 100
    state = clock.state_dict()
    restored = RunClock()
    restored._trainer = DummyTrainer(collected_frames=100)
    restored.load_state_dict(state)
    assert restored.iteration == 1
    assert restored.wall_time >= state["elapsed"]
