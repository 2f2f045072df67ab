"""Environments: any gymnasium id as a TorchRL env, with the transforms AWR expects."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import gymnasium as gym
from torchrl.envs import Compose, DoubleToFloat, GymWrapper, RewardSum, StepCounter, TransformedEnv

from torchrl_awr.errors import one_line


def check_env_id(env_name: str) -> None:
    """Raise a one-line ``ValueError`` for an id gymnasium does not know, with the closest ids.

    Examples:
        >>> check_env_id("HalfCheetah-v5")
        >>> check_env_id("HalfCheeta-v5")
        Traceback (most recent call last):
        ...
        ValueError: unknown env id 'HalfCheeta-v5'; did you mean: HalfCheetah-v5, HalfCheetah-v4, HalfCheetah-v3?
    """
    if env_name in gym.registry:
        return
    close = difflib.get_close_matches(env_name, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}?" if close else "see gymnasium.registry for the registered ids."
    raise ValueError(f"unknown env id {env_name!r}; {hint}")


# What MuJoCo >= 3.5 says when it compiles gymnasium's half_cheetah.xml (its `<compiler settotalmass="14">`), once per
# env copy: 37 lines on stdout (and in ./MUJOCO_LOG.TXT) for the default 32 training + 5 evaluation envs. The model is
# gymnasium's to change; its masses are right as they are.
MUJOCO_DEPRECATIONS = ("compiler attribute 'settotalmass' is deprecated",)


@contextmanager
def mujoco_deprecations_silenced() -> Iterator[None]:
    """Within this context, MuJoCo's warnings that start with one of :data:`MUJOCO_DEPRECATIONS` are dropped; any
    other MuJoCo warning becomes a Python ``RuntimeWarning`` (MuJoCo's own handler prints it and appends it to
    ``./MUJOCO_LOG.TXT``). The previous handler is back after."""
    import mujoco

    def warn(message: str) -> None:
        if not message.startswith(MUJOCO_DEPRECATIONS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(warn)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def make_env(env_name: str, *, num_envs: int = 1, seed: int | None = None, device: str = "cpu") -> TransformedEnv:
    """A gymnasium task as a TorchRL env: float observations, step counter, episode return.

    ``num_envs > 1`` steps that many copies in one process through gymnasium's
    synchronous vector env with its auto-reset off: TorchRL resets the copies
    whose episode ended (a ``"_reset"`` mask, gymnasium's ``reset_mask``), as it
    does any batched env, so ``("next", "observation")`` of a finished episode is
    its true last observation. (Gymnasium's same-step auto-reset gives the same
    transitions, but TorchRL then reads every step's ``info`` dict for the final
    observation, and stores its entries: evaluations took 1.33× as long,
    collection 1.12×.) The env's batch size is then ``[num_envs]`` and collectors
    return ``[num_envs, T]`` batches with per-env trajectory ids, which
    :func:`torchrl_awr.relabel` keeps apart.

    Observation normalisation is not an env transform here: it lives inside the
    networks (see :func:`torchrl_awr.make_observation_norm`), so the replay
    buffer stores raw observations, as in the original implementation.

    Examples:
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> td = env.rollout(3)
        >>> td["next", "episode_reward"].shape
        torch.Size([3, 1])
    """
    check_env_id(env_name)
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r}; it must be an integer >= 1.")
    try:
        with mujoco_deprecations_silenced():
            if num_envs == 1:
                base = gym.make(env_name)
            else:
                base = gym.make_vec(
                    env_name,
                    num_envs=num_envs,
                    vectorization_mode="sync",
                    vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.DISABLED},
                )
    except gym.error.DependencyNotInstalled as err:
        raise ValueError(
            f"env.name={env_name!r} needs a package that is not installed ({one_line(err)}); Box2D tasks: "
            "pip install -e '.[box2d]' (make install does)."
        ) from err
    space = getattr(base, "single_observation_space", base.observation_space)
    if isinstance(space, gym.spaces.Tuple | gym.spaces.Dict):
        base.close()
        raise ValueError(
            f"env.name={env_name!r} has a {type(space).__name__} observation space; AWR's networks read one flat "
            "vector: use an env with a Box observation (or wrap it in gymnasium.wrappers.FlattenObservation)."
        )
    # GymWrapper already returns a TransformedEnv for vector envs: append rather than nest.
    env = GymWrapper(base, device=device, categorical_action_encoding=False).append_transform(
        Compose(DoubleToFloat(), StepCounter(), RewardSum())
    )
    if seed is not None:
        env.set_seed(seed)
    return env
