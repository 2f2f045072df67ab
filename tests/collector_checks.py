"""Checks shared by the collector-backend tests (multi processes, Ray actors)."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from torchrl_awr.builders import make_collector, make_loss
from torchrl_awr.config import load_config
from torchrl_awr.envs import make_env


def assert_workers_act_with_the_learners_weights(overrides: list[str], lag: int = 0) -> None:
    """Collect a batch, move the learner (weights and normaliser), push its weights as ``UpdateWeights`` does,
    and check that every worker's next batch was collected with exactly the learner's policy; with ``lag``,
    the batch after ``lag`` more (an asynchronous collector's workers have a batch under way)."""
    cfg = load_config(overrides)
    env = make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=0)
    actor = make_loss(cfg, env).actor_network
    collector = make_collector(cfg, env, actor)
    try:
        batches = iter(collector)
        first = next(batches)
        assert first.numel() == cfg.collector.frames_per_batch
        with torch.no_grad():  # the learner moves on: new weights and new normaliser statistics
            for param in actor.parameters():
                param.add_(0.1 * torch.randn_like(param))
            norm = actor.module[0][0]
            norm.loc.fill_(0.5)
            norm.scale.fill_(2.0)
        collector.update_policy_weights_(TensorDict.from_module(actor))
        for _ in range(lag):
            next(batches)
        second = next(batches)
    finally:
        collector.shutdown()

    def learner_loc(batch):
        with torch.no_grad():
            return actor.module[0](batch.select("observation").reshape(-1).clone())["loc"]

    assert not torch.allclose(learner_loc(first), first["loc"].reshape(-1, 1), atol=1e-4)  # the check can fail
    torch.testing.assert_close(learner_loc(second), second["loc"].reshape(-1, 1))  # every worker, exactly
