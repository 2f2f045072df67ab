"""Environments: specs and, above all, what a vectorised env reports when an episode ends.

The reference for every check is a plain ``gymnasium.make`` env seeded and
stepped like the sub-env it mirrors (``make_env(..., seed=s)`` seeds sub-env
``i`` with ``s + i``; the first rollout reset is the second reset of that RNG).
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import RandomPolicy

from torchrl_awr import make_env

PENDULUM_LIMIT = 200  # gymnasium's time limit for Pendulum-v1


class ReplayActions:
    """A policy that plays a fixed ``[T, *batch, *action]`` action sequence."""

    def __init__(self, actions: torch.Tensor) -> None:
        self.actions = actions
        self.t = 0

    def __call__(self, td):
        td.set("action", self.actions[self.t])
        self.t += 1
        return td


def reference_env(env_name: str, seed: int) -> tuple[gym.Env, np.ndarray]:
    """A single gymnasium env in the state sub-env ``seed`` of ``make_env`` starts a rollout in."""
    env = gym.make(env_name)
    env.reset(seed=seed)
    obs, _ = env.reset()
    return env, obs


def pendulum_step_from(obs: torch.Tensor, action: torch.Tensor) -> np.ndarray:
    """Pendulum-v1 dynamics applied to the state that ``obs`` = (cos θ, sin θ, θ') encodes."""
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    cos, sin, thetadot = obs.double().tolist()
    env.unwrapped.state = np.array([math.atan2(sin, cos), thetadot])
    next_obs, *_ = env.step(action.numpy())
    return next_obs


# ------------------------------------------------------------------------------------------------ specs


def test_single_env_specs_and_entries():
    env = make_env("Pendulum-v1", seed=0)
    assert env.batch_size == torch.Size([])
    assert env.observation_spec["observation"].dtype == torch.float32
    assert "step_count" in env.observation_spec.keys()
    assert "episode_reward" in env.observation_spec.keys()
    td = env.rollout(5)
    assert td.batch_size == torch.Size([5])
    assert td["observation"].dtype == torch.float32
    assert td["next", "observation"].dtype == torch.float32
    assert td["next", "step_count"].squeeze(-1).tolist() == [1, 2, 3, 4, 5]
    torch.testing.assert_close(td["next", "episode_reward"].squeeze(-1), td["next", "reward"].squeeze(-1).cumsum(0))


def test_vector_env_batch_size():
    env = make_env("Pendulum-v1", num_envs=4, seed=0)
    assert env.batch_size == torch.Size([4])
    assert env.action_spec.shape == torch.Size([4, 1])
    td = env.rollout(3)
    assert td.batch_size == torch.Size([4, 3])
    assert td["next", "observation"].shape == torch.Size([4, 3, 3])
    assert td["next", "observation"].dtype == torch.float32
    # the 4 copies are seeded differently
    assert len({tuple(row.tolist()) for row in td["observation"][:, 0]}) == 4


def test_make_env_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'Pendulum-v99'"):
        make_env("Pendulum-v99")
    with pytest.raises(ValueError, match="num_envs=0"):
        make_env("Pendulum-v1", num_envs=0)


def test_seeding_is_reproducible():
    a = make_env("Pendulum-v1", num_envs=2, seed=5).reset()["observation"]
    b = make_env("Pendulum-v1", num_envs=2, seed=5).reset()["observation"]
    c = make_env("Pendulum-v1", num_envs=2, seed=6).reset()["observation"]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


# ------------------------------------------------------------------------------- time-limit truncation


@pytest.mark.parametrize("num_envs", [1, 2])
def test_truncated_step_keeps_the_true_final_observation(num_envs):
    """At the time limit, ("next", "observation") is the last state of the finished episode."""
    seed, steps = 0, PENDULUM_LIMIT + 3
    env = make_env("Pendulum-v1", num_envs=num_envs, seed=seed)
    g = torch.Generator().manual_seed(1)
    actions = torch.rand(steps, num_envs, 1, generator=g) * 4 - 2
    if num_envs == 1:
        actions = actions[:, 0]
    rollout = env.rollout(steps, ReplayActions(actions), break_when_any_done=False)
    rollout = rollout.reshape(num_envs, steps)
    actions = actions.reshape(steps, num_envs, 1)
    last = PENDULUM_LIMIT - 1

    for i in range(num_envs):
        ref, obs = reference_env("Pendulum-v1", seed + i)
        np.testing.assert_allclose(rollout["observation"][i, 0].numpy(), obs, atol=1e-6)
        total = 0.0
        for t in range(PENDULUM_LIMIT):
            obs, reward, terminated, truncated, _ = ref.step(actions[t, i].numpy())
            total += reward
            np.testing.assert_allclose(rollout["next", "observation"][i, t].numpy(), obs, atol=1e-5)
            assert rollout["next", "reward"][i, t].item() == pytest.approx(reward, abs=1e-4)
        assert truncated and not terminated

        # flags: only the time-limit step is done, and it is a truncation
        done = rollout["next", "done"][i].squeeze(-1)
        assert done.nonzero().squeeze(-1).tolist() == [last]
        assert rollout["next", "truncated"][i, last].item() is True
        assert rollout["next", "terminated"][i, last].item() is False
        assert not rollout["next", "terminated"][i].any()
        assert rollout["next", "step_count"][i, last].item() == PENDULUM_LIMIT
        assert rollout["next", "episode_reward"][i, last].item() == pytest.approx(total, rel=1e-4)

        # the final observation is the one gymnasium returned for step 200, not a reset
        final = rollout["next", "observation"][i, last]
        np.testing.assert_allclose(final.numpy(), obs, atol=1e-5)

        # the step after starts the next episode from a reset observation
        restart = rollout["observation"][i, last + 1]
        assert rollout["step_count"][i, last + 1].item() == 0
        assert rollout["episode_reward"][i, last + 1].item() == 0.0
        assert not torch.allclose(restart, final)
        assert abs(restart[2].item()) <= 1.0  # Pendulum resets θ' in [-1, 1]
        assert restart[0].item() ** 2 + restart[1].item() ** 2 == pytest.approx(1.0, abs=1e-5)
        # and the transition out of it follows the dynamics from that reset state
        np.testing.assert_allclose(
            rollout["next", "observation"][i, last + 1].numpy(),
            pendulum_step_from(restart, actions[last + 1, i]),
            atol=1e-4,
        )
        assert rollout["next", "step_count"][i, last + 1].item() == 1


def test_collector_batch_across_the_time_limit():
    """What the trainer sees: a collector batch spanning the truncation of both sub-envs."""
    num_envs, per_env = 2, PENDULUM_LIMIT + 10
    env = make_env("Pendulum-v1", num_envs=num_envs, seed=0)
    collector = Collector(env, RandomPolicy(env.action_spec), frames_per_batch=num_envs * per_env, total_frames=-1)
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    assert batch.batch_size == torch.Size([num_envs, per_env])
    last = PENDULUM_LIMIT - 1
    for i in range(num_envs):
        ref, _ = reference_env("Pendulum-v1", i)
        for t in range(PENDULUM_LIMIT):
            obs, *_ = ref.step(batch["action"][i, t].numpy())
        np.testing.assert_allclose(batch["next", "observation"][i, last].numpy(), obs, atol=1e-5)
        assert batch["next", "truncated"][i, last].item() is True
        assert batch["next", "terminated"][i, last].item() is False
        assert batch["next", "done"][i].squeeze(-1).nonzero().squeeze(-1).tolist() == [last]
        assert batch["step_count"][i, last + 1].item() == 0
        assert not torch.allclose(batch["observation"][i, last + 1], batch["next", "observation"][i, last])
        # a new trajectory id starts with the new episode, so relabelling never joins the two
        traj = batch["collector", "traj_ids"][i]
        assert (traj[: last + 1] == traj[0]).all()
        assert (traj[last + 1 :] == traj[last + 1]).all()
        assert traj[last + 1] != traj[last]
    assert batch["collector", "traj_ids"][:, 0].unique().numel() == num_envs


# ------------------------------------------------------------------------------ terminations (partial)


def test_partial_resets_match_independent_envs():
    """CartPole sub-envs terminate at different steps: each must follow its own gymnasium twin.

    Checks the final observation and flags of every finished episode, the reset observation that
    follows, and that the other sub-envs are not disturbed by a neighbour's reset.
    """
    num_envs, steps, seed = 3, 60, 3
    env = make_env("CartPole-v1", num_envs=num_envs, seed=seed)
    g = torch.Generator().manual_seed(0)
    choices = torch.randint(0, 2, (steps, num_envs), generator=g)
    actions = torch.nn.functional.one_hot(choices, 2).to(env.action_spec.dtype)
    rollout = env.rollout(steps, ReplayActions(actions), break_when_any_done=False)
    episodes_ended = 0
    for i in range(num_envs):
        ref, obs = reference_env("CartPole-v1", seed + i)
        np.testing.assert_allclose(rollout["observation"][i, 0].numpy(), obs, atol=1e-6)
        for t in range(steps):
            obs, _, terminated, truncated, _ = ref.step(int(choices[t, i]))
            np.testing.assert_allclose(rollout["next", "observation"][i, t].numpy(), obs, atol=1e-6)
            assert rollout["next", "terminated"][i, t].item() is terminated
            assert rollout["next", "truncated"][i, t].item() is truncated
            assert rollout["next", "done"][i, t].item() is (terminated or truncated)
            if terminated or truncated:
                episodes_ended += 1
                obs, _ = ref.reset()
                if t + 1 < steps:
                    np.testing.assert_allclose(rollout["observation"][i, t + 1].numpy(), obs, atol=1e-6)
                    assert rollout["step_count"][i, t + 1].item() == 0
    # the check is only meaningful if episodes ended at different steps of different sub-envs
    done = rollout["next", "done"].squeeze(-1)
    assert episodes_ended >= num_envs
    assert not (done == done[0]).all()


def test_tuple_observation_env_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"env.name='Blackjack-v1' has a Tuple observation space; .* flat") as info:
        make_env("Blackjack-v1")
    assert "\n" not in str(info.value)


def test_missing_env_extra_is_refused_in_one_line(monkeypatch):
    def make(*args, **kwargs):
        raise gym.error.DependencyNotInstalled('Box2D is not installed, run `pip install "gymnasium[box2d]"`')

    monkeypatch.setattr(gym, "make", make)
    missing = r"env.name='LunarLander-v3' needs a package that is not installed \(DependencyNotInstalled: Box2D"
    with pytest.raises(ValueError, match=missing):
        make_env("LunarLander-v3")
