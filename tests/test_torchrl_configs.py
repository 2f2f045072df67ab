"""AWR selected by name in TorchRL's Hydra trainer configs (torchrl_awr/torchrl_configs.py)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate

import torchrl_awr  # noqa: F401 - registers loss=awr and trainer=awr
from torchrl_awr import AWRLoss, AWRTrainer
from torchrl_awr.torchrl_configs import make_awr_trainer

OVERRIDES = [
    "+env=gym",
    "env.env_name=Pendulum-v1",
    "+collector=sync",
    "collector.create_env_fn=${env}",
    "collector.frames_per_batch=128",
    "collector._partial_=true",
    "+replay_buffer=tensordict",
    "+storage@replay_buffer.storage=lazy_tensor",
    "replay_buffer.storage.max_size=512",
    "+loss=awr",
    "loss.beta=0.5",
    "loss.hidden_sizes=[16,16]",
    "+optimizer@actor_optimizer=sgd",
    "actor_optimizer._partial_=true",
    "actor_optimizer.lr=1e-4",
    "+optimizer@critic_optimizer=sgd",
    "critic_optimizer._partial_=true",
    "critic_optimizer.lr=1e-2",
    "+trainer=awr",
    "trainer.collector=${collector}",
    "trainer.loss_module=${loss}",
    "trainer.replay_buffer=${replay_buffer}",
    "trainer.actor_optimizer=${actor_optimizer}",
    "trainer.critic_optimizer=${critic_optimizer}",
    "trainer.total_frames=384",
    "trainer.actor_steps=3",
    "trainer.critic_steps=2",
    "trainer.batch_size=32",
    "trainer.normalizer_samples=128",
    "trainer.progress_bar=false",
    "trainer.seed=0",
]


@pytest.fixture
def hydra_ctx():
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path=None):
        yield
    GlobalHydra.instance().clear()


def test_compose_full_config_and_train_a_few_iterations(hydra_ctx):
    cfg = compose(config_name=None, overrides=OVERRIDES)
    assert cfg.loss._target_.endswith("make_awr_loss") and cfg.trainer._target_.endswith("make_awr_trainer")
    trainer = instantiate(cfg.trainer)
    assert isinstance(trainer, AWRTrainer) and isinstance(trainer.loss_module, AWRLoss)
    assert trainer.loss_module.beta == 0.5
    trainer.train()
    assert trainer.collected_frames == 384


@pytest.mark.parametrize(
    "override, error",
    [
        ("trainer.batch_size=4096", "exceeds"),
        ("trainer.actor_steps=-1", "actor_steps"),
        ("collector._partial_=false", "partial"),
        ("loss.beta=0", "beta"),
        ("loss.lmbda=1.5", "lmbda"),
    ],
)
def test_factories_validate_their_inputs(hydra_ctx, override, error):
    cfg = compose(config_name=None, overrides=[*OVERRIDES, override])
    with pytest.raises(InstantiationException, match=error):  # Hydra wraps the factory's ValueError/TypeError
        instantiate(cfg.trainer)


def test_trainer_factory_rejects_wrong_parts():
    with pytest.raises(TypeError, match="partial"):
        make_awr_trainer(collector=None, loss_module=None, replay_buffer=None, actor_optimizer=None,
                         critic_optimizer=None, total_frames=10)
