"""Collector backends: worker processes act with the learner's current policy, frames are counted once."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from torchrl_awr.builders import make_collector, make_loss
from torchrl_awr.config import load_config
from torchrl_awr.envs import make_env
from torchrl_awr.experiment import build_trainer

MULTI = [
    "env.name=Pendulum-v1",
    "collector.backend=multi",
    "collector.num_workers=2",
    "env.num_envs=2",
    "collector.frames_per_batch=400",
    "logger.backend=none",
]


def policy_params(loss) -> TensorDict:
    return TensorDict.from_module(loss.actor_network)


def test_multi_workers_collect_with_the_learners_current_weights() -> None:
    cfg = load_config(MULTI)
    env = make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=0)
    loss = make_loss(cfg, env)
    actor = loss.actor_network
    collector = make_collector(cfg, env, actor)
    try:
        batches = iter(collector)
        first = next(batches)
        assert first.numel() == 400
        with torch.no_grad():  # the learner moves on: new weights and new normaliser statistics
            for param in actor.parameters():
                param.add_(0.1 * torch.randn_like(param))
            norm = actor.module[0][0]
            norm.loc.fill_(0.5)
            norm.scale.fill_(2.0)
        collector.update_policy_weights_(policy_params(loss))
        second = next(batches)
    finally:
        collector.shutdown()

    def learner_loc(batch):
        with torch.no_grad():
            return actor.module[0](batch.select("observation").reshape(-1).clone())["loc"]

    assert not torch.allclose(learner_loc(first), first["loc"].reshape(-1, 1), atol=1e-4)  # the check can fail
    torch.testing.assert_close(learner_loc(second), second["loc"].reshape(-1, 1))


def test_multi_backend_counts_each_frame_once(tmp_path) -> None:
    cfg = load_config([*MULTI, "collector.total_frames=1200", "optim.actor_steps=2", "optim.critic_steps=2"])
    cfg.optim.batch_size = 64
    trainer, _ = build_trainer(cfg, tmp_path, progress_bar=False)
    trainer.train()
    assert trainer.collected_frames == 1200
    assert trainer.replay_buffer.write_count == 1200
    assert len(trainer.replay_buffer) == 1200
    traj_ids = trainer.replay_buffer.storage[:1200]["collector", "traj_ids"]
    steps = trainer.replay_buffer.storage[:1200]["step_count"].squeeze(-1)
    # every (trajectory, step) pair is stored once: no worker's data is duplicated
    pairs = set(zip(traj_ids.tolist(), steps.tolist(), strict=True))
    assert len(pairs) == 1200
