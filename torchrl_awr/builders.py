"""Builders with one job each, from a resolved config (as in TorchRL's sota-implementations utils)."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import gymnasium as gym
import torch
from omegaconf import DictConfig
from torchrl.envs import EnvBase
from torchrl.objectives import BCLoss
from torchrl.trainers import Trainer

from torchrl_awr.collectors import make_collector  # noqa: F401 - re-exported: builders stay one import
from torchrl_awr.envs import make_env
from torchrl_awr.errors import one_line
from torchrl_awr.loss import AWRLoss
from torchrl_awr.models import make_awr_networks
from torchrl_awr.monitoring import Evaluate


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; use device=cpu or device=auto.")
    return torch.device(device)


def learner_device(cfg: DictConfig) -> torch.device:
    """The device of the networks, the buffer and the updates (``cfg.device``), checked against ``optim.cudagraphs``."""
    device = resolve_device(cfg.device)
    if cfg.optim.cudagraphs and device.type != "cuda":
        raise ValueError(f"optim.cudagraphs=true needs a CUDA device; device={cfg.device!r} resolved to {device}.")
    return device


def acting_policy(actor: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The policy that steps the (CPU) envs: the actor itself for a CPU learner, else a CPU copy of it.

    Call it before moving the actor to ``device``. The copy is refreshed from the
    learner by :class:`~torchrl.trainers.UpdateWeights` (collection) and by
    :class:`~torchrl_awr.Evaluate` ``(source=actor)`` (evaluation): a GPU policy
    would cost a transfer each way per env step.
    """
    return copy.deepcopy(actor) if device.type != "cpu" else actor


def make_loss(cfg: DictConfig, env: EnvBase) -> AWRLoss:
    """Actor, critic (sharing one observation normaliser) and the AWR loss with its TD(λ) estimator."""
    obs_spec = env.observation_spec_unbatched["observation"]
    action_spec = env.action_spec_unbatched
    value_scale = 1.0 / (1.0 - cfg.loss.gamma) if cfg.loss.gamma < 1 else 1.0
    actor, value = make_awr_networks(
        obs_spec,
        action_spec,
        hidden_sizes=cfg.model.hidden_sizes,
        activation=cfg.model.activation,
        layer_norm=cfg.model.layer_norm,
        action_std=cfg.model.action_std,
        learn_std=cfg.model.learn_std,
        tanh=cfg.model.tanh,
        value_scale=value_scale,
        observation_clip=cfg.model.observation_clip or None,
    )
    continuous = action_spec.dtype.is_floating_point
    # A tanh-squashed policy's actions never leave the bounds: the original's penalty on the mean has nothing to do.
    bounded_by_penalty = continuous and not cfg.model.tanh
    loss = AWRLoss(
        actor,
        value,
        beta=cfg.loss.beta,
        max_weight=cfg.loss.max_weight,
        normalize_advantage=cfg.loss.normalize_advantage,
        action_bound_penalty=cfg.loss.action_bound_penalty if bounded_by_penalty else 0.0,
        action_spec=action_spec if continuous else None,
        entropy_coeff=cfg.loss.entropy_coeff,
        value_scale=value_scale,
    )
    loss.make_value_estimator(gamma=cfg.loss.gamma, lmbda=cfg.loss.lmbda)
    return loss


def load_init_policy(loss: AWRLoss, path: str | Path, env_name: str) -> None:
    """Start ``loss``'s actor (and its state normaliser) from a run's ``policy.pt`` and, when the ``value.pt`` the
    runs write beside it exists, its critic.

    Raises:
        ValueError: one line when the file is missing, unreadable or holds networks of another shape.
    """
    path = Path(path)
    name = f"init_policy={str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{name} does not exist; pass the policy.pt of a train_mujoco.py or train_offline.py run.")
    value = path.with_name("value.pt")
    try:
        loss.actor_network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        if value.is_file():
            loss.value_network.load_state_dict(torch.load(value, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - any file that does not load gets the same one-line error
        raise ValueError(f"{name} does not fit env.name={env_name} with these model.* settings ({one_line(err)}).") \
            from None


def make_bc_loss(loss: AWRLoss) -> BCLoss:
    """TorchRL's :class:`~torchrl.objectives.BCLoss` on the AWR actor: the behaviour-cloning baseline."""
    with warnings.catch_warnings():  # torchrl 0.14.1's BCLoss warns about its own target_actor_network_params
        warnings.simplefilter("ignore", UserWarning)
        return BCLoss(loss.actor_network)


def make_optimizers(cfg: DictConfig, loss: AWRLoss) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """``(actor_optimizer, critic_optimizer)``: SGD with momentum (the original) or Adam.

    Both update all their tensors with one ``foreach`` call per operation (on CPU torch.optim otherwise loops over
    them in Python: ~60 µs more per eager Adam step with these networks). Adam keeps its step count on the device
    (``capturable``) when the update is captured as a CUDA graph.
    """

    def make(params, lr: float) -> torch.optim.Optimizer:
        params = [p for p in params if p.requires_grad]
        if cfg.optim.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, capturable=cfg.optim.cudagraphs, foreach=True)
        return torch.optim.SGD(params, lr=lr, momentum=cfg.optim.momentum, foreach=True)

    return make(loss.actor_network.parameters(), cfg.optim.actor_lr), make(
        loss.value_network.parameters(), cfg.optim.critic_lr
    )


def max_episode_steps(env_name: str) -> int:
    """The task's time limit (1000 where gymnasium registers none)."""
    return gym.spec(env_name).max_episode_steps or 1000


def make_eval_env(cfg: DictConfig) -> EnvBase:
    """``cfg.eval.episodes`` copies of the task stepped together, seeded apart from the training envs."""
    return make_env(cfg.env.name, num_envs=cfg.eval.episodes, seed=cfg.seed + 10_000)


def make_evaluate(
    cfg: DictConfig,
    env: EnvBase,
    policy: torch.nn.Module,
    actor: torch.nn.Module,
    trainer: Trainer,
    output_dir: Path,
    at_start: bool = False,
) -> Evaluate:
    """Deterministic evaluation of ``policy`` on ``env`` every ``cfg.eval.interval`` iterations (and, with
    ``at_start``, before the first), into ``<output_dir>/eval.csv``, registered on ``trainer``. A ``policy`` that is
    a copy of the learner's ``actor`` (see :func:`acting_policy`) takes its weights before each evaluation."""
    evaluator = Evaluate(
        env,
        policy,
        trainer.clock,
        interval=cfg.eval.interval,
        max_steps=max_episode_steps(cfg.env.name),
        csv_path=output_dir / "eval.csv",
        source=actor if policy is not actor else None,
        at_start=at_start,
    )
    evaluator.register(trainer)
    return evaluator


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
