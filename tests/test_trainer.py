"""AWRTrainer: hook order, one short training run, checkpoint and resume."""

import copy
import os
import pathlib
import shutil
import signal

import pytest
import torch
from tensordict import TensorDict
from torchrl.checkpoint import CheckpointRotation
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.trainers import UpdateWeights

import torchrl_awr.update as update_module
from torchrl_awr import AWRLoss, AWRTrainer, make_awr_actor, make_awr_value, make_env, make_observation_norm
from torchrl_awr.buffers import ExtendBuffer
from torchrl_awr.integrity import SEAL, damage
from torchrl_awr.models import UpdateObservationNorm
from torchrl_awr.monitoring import LogEpisodeReturn, RunClock
from torchrl_awr.targets import relabel
from torchrl_awr.trainer import Interrupted
from torchrl_awr.update import AWRUpdate, RegressionPhase

FRAMES_PER_BATCH = 256
TOTAL_FRAMES = 512


def build(
    seed: int = 0,
    total_frames: int = TOTAL_FRAMES,
    value_estimator: bool = True,
    hidden_sizes: tuple[int, ...] = (128, 64),
    acting_copy: bool = False,
    **kwargs,
) -> AWRTrainer:
    """The docstring example of AWRTrainer (Pendulum-v1, tiny phases).

    ``value_estimator=True`` also builds the loss's TD(λ) estimator up front, as
    ``builders.make_loss`` does; the docstring example leaves it to be made lazily.
    ``acting_copy=True`` collects with a copy of the actor, as a run with ``device=cuda`` does.
    """
    torch.manual_seed(seed)
    env = make_env("Pendulum-v1", seed=seed)
    norm = make_observation_norm(3)
    actor = make_awr_actor(3, env.action_spec, hidden_sizes=hidden_sizes, observation_norm=norm)
    loss = AWRLoss(actor, make_awr_value(3, hidden_sizes=hidden_sizes, observation_norm=norm))
    if value_estimator:
        loss.make_value_estimator(gamma=0.99, lmbda=0.95)
    return AWRTrainer(
        collector=Collector(
            env, copy.deepcopy(actor) if acting_copy else actor, frames_per_batch=FRAMES_PER_BATCH, total_frames=-1
        ),
        loss_module=loss,
        replay_buffer=TensorDictReplayBuffer(storage=LazyTensorStorage(1024)),
        actor_optimizer=torch.optim.SGD(actor.parameters(), lr=1e-4, momentum=0.9),
        critic_optimizer=torch.optim.SGD(loss.value_network.parameters(), lr=1e-2, momentum=0.9),
        total_frames=total_frames,
        actor_steps=4,
        critic_steps=2,
        batch_size=64,
        observation_norm=norm,
        frames_per_batch=FRAMES_PER_BATCH,
        progress_bar=False,
        seed=seed,
        **kwargs,
    )


def ops(op_list) -> list:
    """The hooks behind a trainer op list (register_op wraps each in a timing closure)."""
    return [getattr(op, "__wrapped__", op) for op, _ in op_list]


def phases(trainer: AWRTrainer) -> dict[str, RegressionPhase]:
    return {phase.name: phase for phase in (trainer.update.critic_phase, trainer.update.actor_phase)}


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def buffer_content(trainer: AWRTrainer) -> TensorDict:
    return trainer.replay_buffer.storage[: len(trainer.replay_buffer)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run shared by the tests below: 2 iterations of 256 frames, checkpointed every iteration."""
    ckpt = tmp_path_factory.mktemp("run") / "checkpoints"
    trainer = build(checkpoint_dir=ckpt, checkpoint_interval=1)
    actor_before = params(trainer.loss_module.actor_network)
    critic_before = params(trainer.loss_module.value_network)
    events: list[str] = []
    real_relabel = update_module.relabel

    def spy_relabel(buffer, loss, **kwargs):
        events.append("relabel")
        return real_relabel(buffer, loss, **kwargs)

    for name, phase in phases(trainer).items():
        loss_fn = phase.loss_fn

        def spy(batch, _name=name, _fn=loss_fn):
            events.append(_name)
            return _fn(batch)

        phase.loss_fn = spy
    update = trainer.collector.update_policy_weights_

    def spy_update(*args, **kwargs):
        events.append("update_weights")
        return update(*args, **kwargs)

    trainer.collector.update_policy_weights_ = spy_update
    update_module.relabel = spy_relabel
    try:
        trainer.train()
    finally:
        update_module.relabel = real_relabel
    return {
        "trainer": trainer,
        "dir": ckpt,
        "actor_before": actor_before,
        "critic_before": critic_before,
        "events": events,
    }


# ------------------------------------------------------------------------------------------ hook order


def test_hook_order_is_the_awr_iteration():
    trainer = build()
    batch_ops = ops(trainer._batch_process_ops)
    assert [type(op) for op in batch_ops] == [UpdateObservationNorm, ExtendBuffer]
    assert batch_ops[1].replay_buffer is trainer.replay_buffer
    assert [type(op) for op in ops(trainer._pre_steps_log_ops)] == [LogEpisodeReturn]

    pre_optim = ops(trainer._pre_optim_ops)
    assert pre_optim == [trainer.update] and isinstance(trainer.update, AWRUpdate)
    critic_phase, actor_phase = trainer.update.critic_phase, trainer.update.actor_phase
    assert critic_phase.name == "critic_phase" and actor_phase.name == "actor_phase"
    loss = trainer.loss_module
    assert critic_phase.loss_fn == loss.value_loss
    assert actor_phase.loss_fn == loss.actor_loss
    critic_params = {id(p) for p in loss.value_network.parameters()}
    actor_params = {id(p) for p in loss.actor_network.parameters()}
    assert {id(p) for p in critic_phase.params} <= critic_params
    assert {id(p) for p in actor_phase.params} <= actor_params
    assert (critic_phase.steps, actor_phase.steps) == (2, 4)
    assert critic_phase.batch_size == actor_phase.batch_size == 64
    assert critic_phase.replay_buffer is actor_phase.replay_buffer is trainer.replay_buffer
    assert trainer.update.replay_buffer is trainer.replay_buffer and trainer.update.loss_module is loss

    assert [type(op) for op in ops(trainer._post_steps_ops)] == [UpdateWeights]
    assert ops(trainer._post_steps_log_ops) == [trainer.update.log, trainer.clock]
    assert isinstance(trainer.clock, RunClock)
    # AWR's phases replace the generic optimisation loop
    assert trainer.optim_steps_per_batch == 0
    assert trainer._optimizer_ops == [] and trainer._process_optim_batch_ops == []
    assert set(trainer._modules) >= {
        "update_observation_norm",
        "replay_buffer",
        "awr_update",
        "clock",
    }


def test_without_observation_norm_no_norm_hook():
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", seed=0)
    actor = make_awr_actor(3, env.action_spec)
    loss = AWRLoss(actor, make_awr_value(3))
    trainer = AWRTrainer(
        collector=Collector(env, actor, frames_per_batch=FRAMES_PER_BATCH, total_frames=-1),
        loss_module=loss,
        replay_buffer=TensorDictReplayBuffer(storage=LazyTensorStorage(1024)),
        actor_optimizer=torch.optim.SGD(actor.parameters(), lr=1e-4),
        critic_optimizer=torch.optim.SGD(loss.value_network.parameters(), lr=1e-2),
        total_frames=TOTAL_FRAMES,
        progress_bar=False,
    )
    assert [type(op) for op in ops(trainer._batch_process_ops)] == [ExtendBuffer]
    assert "update_observation_norm" not in trainer._modules


def test_iteration_runs_in_awr_order(trained):
    one_iteration = ["relabel", *["critic_phase"] * 2, "relabel", *["actor_phase"] * 4, "update_weights"]
    assert trained["events"] == one_iteration * 2


# --------------------------------------------------------------------------------------------- training


def test_train_collects_fills_and_updates(trained):
    trainer = trained["trainer"]
    assert trainer.collected_frames == TOTAL_FRAMES
    assert len(trainer.replay_buffer) == TOTAL_FRAMES
    assert trainer.replay_buffer.write_count == TOTAL_FRAMES
    assert trainer.clock.iteration == 2
    for name in ("actor_before", "critic_before"):
        network = trainer.loss_module.actor_network if name == "actor_before" else trainer.loss_module.value_network
        after = params(network)
        changed = [k for k, v in trained[name].items() if not torch.equal(v, after[k])]
        assert changed, f"{name}: no parameter changed"
    for name, phase in phases(trainer).items():
        state = phase.optimizer.state_dict()["state"]
        assert state and all("momentum_buffer" in s for s in state.values()), name


def test_a_separate_acting_policy_gets_the_learned_weights():
    """A learner on a GPU collects through a CPU copy of its actor: UpdateWeights refreshes it every iteration."""
    trainer = build(acting_copy=True)
    actor = trainer.loss_module.actor_network
    acting = trainer.collector.policy
    assert acting is not actor
    before = params(actor)
    trainer.train()
    after = params(actor)
    assert any(not torch.equal(before[k], after[k]) for k in after)
    for key, value in params(acting).items():
        assert torch.equal(value, after[key]), key
    learned_buffers = dict(actor.named_buffers())  # the state normaliser, fitted during the first iteration
    assert learned_buffers and not torch.equal(learned_buffers["module.0.module.0.loc"], torch.zeros(3))
    for key, value in acting.named_buffers():
        assert torch.equal(value, learned_buffers[key]), key


def test_buffer_holds_targets_of_the_final_critic(trained):
    trainer = trained["trainer"]
    data = buffer_content(trainer)
    keys = trainer.loss_module.tensor_keys
    for key in (keys.value_target, keys.advantage):
        assert key in data.keys()
        assert data[key].shape == torch.Size([TOTAL_FRAMES, 1])
        assert torch.isfinite(data[key]).all()
        assert data[key].std() > 0
    assert "loc" not in data.keys() and "scale" not in data.keys()
    # the second relabel ran after the critic phase and nothing changed the critic since: relabelling
    # again now reproduces the stored targets and advantages
    stored = data.select(keys.value_target, keys.advantage).clone()
    relabel(trainer.replay_buffer, trainer.loss_module)
    fresh = buffer_content(trainer).select(keys.value_target, keys.advantage)
    torch.testing.assert_close(fresh, stored)


def test_observation_norm_fitted_on_the_collected_data(trained):
    trainer = trained["trainer"]
    norm = trainer.loss_module.actor_network.module[0][0]
    obs = buffer_content(trainer)["observation"].double()
    torch.testing.assert_close(norm.loc.double(), obs.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.scale.double(), obs.std(0, unbiased=False), rtol=1e-4, atol=1e-5)
    assert norm is trainer.loss_module.value_network[0]  # one normaliser shared by both networks


# ------------------------------------------------------------------------------------ checkpoint/resume


def test_checkpoint_written(trained):
    rotation = CheckpointRotation(trained["dir"], keep_last=2)
    assert rotation.latest() is not None
    assert len(rotation.checkpoints()) == 2  # one per iteration (interval 1), kept 2


def test_resume_restores_the_whole_state(trained):
    trainer = trained["trainer"]
    fresh = build(seed=1, checkpoint_dir=trained["dir"], checkpoint_interval=1)
    assert fresh.collected_frames == 0
    assert not torch.equal(
        next(iter(fresh.loss_module.actor_network.parameters())),
        next(iter(trainer.loss_module.actor_network.parameters())),
    )
    path = fresh.resume(trained["dir"])
    assert path == CheckpointRotation(trained["dir"], keep_last=2).latest()

    assert fresh.collected_frames == trainer.collected_frames == TOTAL_FRAMES
    torch.testing.assert_close(fresh.loss_module.state_dict(), trainer.loss_module.state_dict())
    norm_fresh = fresh.loss_module.actor_network.module[0][0]
    norm_old = trainer.loss_module.actor_network.module[0][0]
    torch.testing.assert_close(norm_fresh.loc, norm_old.loc)
    torch.testing.assert_close(norm_fresh.scale, norm_old.scale)
    for name, phase in phases(trainer).items():
        torch.testing.assert_close(phases(fresh)[name].optimizer.state_dict(), phase.optimizer.state_dict())
    assert len(fresh.replay_buffer) == len(trainer.replay_buffer)
    assert fresh.replay_buffer.write_count == trainer.replay_buffer.write_count
    torch.testing.assert_close(buffer_content(fresh), buffer_content(trainer))
    hook_fresh, hook_old = fresh._modules["update_observation_norm"], trainer._modules["update_observation_norm"]
    assert hook_fresh.count == hook_old.count == TOTAL_FRAMES
    torch.testing.assert_close(hook_fresh.total, hook_old.total)
    assert fresh.clock.iteration == trainer.clock.iteration == 2


def test_resumed_run_continues_counting(trained, tmp_path):
    fresh = build(seed=1, total_frames=TOTAL_FRAMES + FRAMES_PER_BATCH)
    fresh.resume(trained["dir"])
    fresh.train()
    assert fresh.collected_frames == TOTAL_FRAMES + FRAMES_PER_BATCH
    assert len(fresh.replay_buffer) == TOTAL_FRAMES + FRAMES_PER_BATCH
    assert fresh.clock.iteration == 3


def test_resume_with_the_docstring_build(trained):
    fresh = build(seed=1, value_estimator=False)
    fresh.resume(trained["dir"])
    assert fresh.collected_frames == TOTAL_FRAMES


def test_resume_incompatible_checkpoint_raises_value_error(trained):
    fresh = build(seed=1, hidden_sizes=(16,))
    with pytest.raises(ValueError, match="is unreadable") as info:
        fresh.resume(trained["dir"])
    assert str(CheckpointRotation(trained["dir"], keep_last=2).latest()) in str(info.value)


def test_resume_error_message_is_one_line(trained):
    fresh = build(seed=1, hidden_sizes=(16,))
    with pytest.raises(ValueError) as info:
        fresh.resume(trained["dir"])
    assert "\n" not in str(info.value)


def test_frames_per_s_after_resume_counts_only_new_frames(trained):
    fresh = build(seed=1)
    fresh.resume(trained["dir"])
    assert fresh.collected_frames == TOTAL_FRAMES
    # no frame was collected since the resume: the clock must report none
    assert fresh.clock(None)["frames_per_s"] == 0.0


def test_resume_from_empty_dir_raises(tmp_path):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    trainer = build()
    with pytest.raises(ValueError) as info:
        trainer.resume(empty)
    assert str(empty) in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="missing-dir"):
        trainer.resume(tmp_path / "missing-dir")


# ------------------------------------------------------------------------------ integrity and signals


def copy_run(trained, tmp_path) -> tuple[pathlib.Path, list[pathlib.Path]]:
    """A copy of the shared run's checkpoints (oldest first), safe to damage."""
    target = tmp_path / "checkpoints"
    shutil.copytree(trained["dir"], target)
    return target, list(CheckpointRotation(target, keep_last=2).checkpoints())


def test_every_checkpoint_is_sealed(trained):
    for checkpoint in CheckpointRotation(trained["dir"], keep_last=2).checkpoints():
        assert (checkpoint / SEAL).is_file()
        assert damage(checkpoint) is None


WEIGHTS = "components/*-loss_module/state/tensor_*.memmap"  # the loss module's parameters (torchrl 0.14 layout)
BUFFER = "components/*-replay_buffer/storage/observation.memmap"


def _largest(checkpoint: pathlib.Path, pattern: str) -> pathlib.Path:
    return max((p for p in checkpoint.glob(pattern) if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path: pathlib.Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


@pytest.mark.parametrize(
    ("pattern", "spoil"),
    [(WEIGHTS, _truncate), (WEIGHTS, _zero), (BUFFER, _truncate), ("**/*", _zero)],
    ids=["truncated-weight", "zeroed-weight", "truncated-buffer-memmap", "zeroed-largest-file"],
)
def test_damaged_newest_checkpoint_falls_back_with_one_line(trained, tmp_path, capsys, pattern, spoil):
    directory, (older, newest) = copy_run(trained, tmp_path)
    spoilt = _largest(newest, pattern)
    spoil(spoilt)
    size = spoilt.stat().st_size
    fresh = build(seed=1)
    assert fresh.resume(directory) == older
    assert fresh.collected_frames == TOTAL_FRAMES - FRAMES_PER_BATCH
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "damaged" in lines[0] and str(newest) in lines[0]
    assert spoilt.stat().st_size == size  # the evidence is left as it was


def test_unsealed_checkpoint_is_not_loaded(trained, tmp_path):
    directory, (older, newest) = copy_run(trained, tmp_path)
    (newest / SEAL).unlink()
    assert "no readable" in damage(newest)
    assert build(seed=1).resume(directory) == older


def test_no_whole_checkpoint_is_one_line_error(trained, tmp_path):
    directory, checkpoints = copy_run(trained, tmp_path)
    for checkpoint in checkpoints:
        _zero(_largest(checkpoint, "**/*"))
    with pytest.raises(ValueError, match="no whole checkpoint") as info:
        build(seed=1).resume(directory)
    assert "\n" not in str(info.value)


def test_stale_save_leftovers_removed_when_built(trained, tmp_path):
    directory, _ = copy_run(trained, tmp_path)
    stage = directory / ".checkpoint-000000000768.stage-1a2b3c"
    stage.mkdir()
    (stage / "payload.bin").write_bytes(b"x" * 10)
    (directory / ".checkpoint-000000000768.delete-99").mkdir()
    build(seed=1, checkpoint_dir=directory, checkpoint_interval=1)
    assert sorted(p.name for p in directory.iterdir()) == [
        p.name for p in CheckpointRotation(directory, keep_last=2).checkpoints()
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_checkpoints_the_iteration_then_raises(tmp_path, signum):
    """A signal in the first iteration, long before the periodic checkpoint, still leaves one to resume from."""
    directory = tmp_path / "checkpoints"
    trainer = build(total_frames=4 * FRAMES_PER_BATCH, checkpoint_dir=directory, checkpoint_interval=100)
    trainer.register_op("post_steps", lambda: os.kill(os.getpid(), signum))
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as info:
        trainer.train()
    assert info.value.signum == signum
    assert signal.getsignal(signum) is before
    assert trainer.collected_frames == FRAMES_PER_BATCH  # stopped after the iteration under way
    fresh = build(seed=1, total_frames=4 * FRAMES_PER_BATCH)
    fresh.resume(directory)
    assert fresh.collected_frames == FRAMES_PER_BATCH
    fresh.train()
    assert fresh.collected_frames == 4 * FRAMES_PER_BATCH
