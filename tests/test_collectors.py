"""Collector backends: worker processes act with the learner's current policy, frames are counted once."""

from __future__ import annotations

import pytest
from collector_checks import assert_workers_act_with_the_learners_weights

from torchrl_awr.config import load_config
from torchrl_awr.experiment import build_trainer

MULTI = [
    "env.name=Pendulum-v1",
    "collector.backend=multi",
    "collector.num_workers=2",
    "env.num_envs=2",
    "collector.frames_per_batch=400",
    "logger.backend=none",
]
# one worker collecting the next batch while the learner updates: on 2 cores, collection and update overlap
ASYNC = [*MULTI, "collector.num_workers=1", "collector.sync=false", "collector.frames_per_batch=200"]


def test_multi_workers_collect_with_the_learners_current_weights() -> None:
    assert_workers_act_with_the_learners_weights(MULTI)


def test_async_workers_collect_with_the_learners_weights_one_batch_later() -> None:
    assert_workers_act_with_the_learners_weights(ASYNC, lag=1)


@pytest.mark.parametrize("overrides", [MULTI, ASYNC], ids=["sync", "async"])
def test_multi_backend_counts_each_frame_once(overrides, tmp_path) -> None:
    cfg = load_config([*overrides, "collector.total_frames=1200", "optim.actor_steps=2", "optim.critic_steps=2",
                       "optim.compile=false"])
    cfg.optim.batch_size = 64
    trainer, _, _ = build_trainer(cfg, tmp_path, progress_bar=False)
    trainer.train()
    assert trainer.collected_frames == 1200
    assert trainer.replay_buffer.write_count == 1200
    assert len(trainer.replay_buffer) == 1200
    traj_ids = trainer.replay_buffer.storage[:1200]["collector", "traj_ids"]
    steps = trainer.replay_buffer.storage[:1200]["step_count"].squeeze(-1)
    # every (trajectory, step) pair is stored once: no worker's data is duplicated
    pairs = set(zip(traj_ids.tolist(), steps.tolist(), strict=True))
    assert len(pairs) == 1200
