"""One AWR run from a config: build, train, evaluate, checkpoint, summarise.

:func:`run` trains online (``scripts/train_mujoco.py``) or, with ``offline=True``, from a dataset
(``scripts/train_offline.py``), both built by :func:`build_trainer`. The output directory holds ``config.yaml`` (the
resolved config), ``eval.csv`` (one row per evaluation), ``checkpoints/``, ``policy.pt`` (the final actor's state
dict, observation normaliser included), ``value.pt`` (the critic's), ``summary.json``, the logger's files (``logs/``;
W&B: ``wandb/``, ``wandb_id``, ``wandb_history.jsonl``), online from a dataset ``pretrain/`` (the pre-training stage,
a whole offline run) and, online with ``buffer.save=true``, ``replay_buffer/`` (the final buffer,
``ReplayBuffer.dumps``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_awr.buffers import make_offline_buffer, make_replay_buffer
from torchrl_awr.builders import (
    acting_policy,
    learner_device,
    load_init_policy,
    make_bc_loss,
    make_collector,
    make_eval_env,
    make_evaluate,
    make_loss,
    make_optimizers,
    write_json,
)
from torchrl_awr.compat import advance_progress_bar
from torchrl_awr.config import CollectorConfig, load_config
from torchrl_awr.datasets import PATH_HELP, DatasetError, DatasetIdentity, fit_to_env, load_dataset
from torchrl_awr.envs import check_env_id, make_env
from torchrl_awr.integrity import has_checkpoint
from torchrl_awr.loggers import make_logger
from torchrl_awr.models import UpdateObservationNorm, observation_norm_of
from torchrl_awr.monitoring import Evaluate
from torchrl_awr.targets import TRAJ_KEY
from torchrl_awr.trainer import AWRTrainer


def default_output_dir(cfg: DictConfig, root: Path = Path("outputs")) -> Path:
    """``<root>/<env>/<UTC timestamp>-s<seed>-<host>-<pid>``: unique per run, also for sweep agents running at
    the same time on one machine or on several that share the file system."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run = f"{stamp}-s{cfg.seed}-{socket.gethostname().split('.')[0]}-{os.getpid()}"
    return root / cfg.env.name.replace("/", "_") / run


# What may change when a run is continued: how long it runs, where its dataset lies (checked by digest), how it is
# logged and evaluated, threads.
PRETRAIN_DIR = "pretrain"  # an online run's offline pre-training stage, inside its output dir

RESUME_OVERRIDES = ("collector.total_frames", "offline.steps", "dataset.path", "logger.", "eval.", "threads")


class Finished(Exception):
    """``resume=`` of a run that already reached its total; the message says so and how to train more."""


def resolve_run(overrides: list[str], *, offline: bool = False) -> tuple[DictConfig, Path]:
    """The run's config and output directory (by default under ``outputs/`` or, ``offline``, ``outputs/offline/``);
    with ``resume=<dir>``, the saved config of that run.

    Raises:
        ValueError: bad overrides, a resume dir without a readable ``config.yaml``, or offline no ``dataset.path``.
    """
    cfg = load_config(overrides)
    if offline and not cfg.dataset.path and not cfg.resume:
        raise ValueError(
            f"dataset.path is required: with dataset.source={cfg.dataset.source}, pass "
            f"dataset.path=<{PATH_HELP[cfg.dataset.source]}>."
        )
    if offline and cfg.offline.steps == 0:
        raise ValueError("offline.steps=0 is invalid for train_offline.py; it must be > 0.")
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ValueError(f"resume={cfg.resume!r}: no config.yaml there; pass the output dir of a run.")
        try:
            base = OmegaConf.load(saved)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line error
            raise ValueError(f"resume={cfg.resume!r}: config.yaml is unreadable ({type(err).__name__}).") from None
        if not has_checkpoint(run_dir / "checkpoints") and not (run_dir / PRETRAIN_DIR).is_dir():
            raise ValueError(
                f"resume={cfg.resume!r}: no checkpoint in {str(run_dir / 'checkpoints')!r} to resume from."
            )
        changes = [o for o in overrides if not o.startswith("resume=")]
        refused = [o for o in changes if not o.split("=", 1)[0].startswith(RESUME_OVERRIDES)]
        if refused:
            raise ValueError(
                f"resume={cfg.resume!r}: {refused[0]!r} would change the run being continued; at resume only "
                f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUME_OVERRIDES)} may change."
            )
        cfg = load_config(changes, base=base)
        cfg.resume = str(run_dir)
        if changes:
            OmegaConf.save(cfg, saved)  # the run now goes on with these
        return cfg, run_dir
    check_env_id(cfg.env.name)
    root = Path("outputs") / "offline" if offline else Path("outputs")
    output_dir = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg, root)
    prepare_output_dir(output_dir, cfg.overwrite)
    return cfg, output_dir


def prepare_output_dir(output_dir: Path, overwrite: bool = False) -> None:
    """Make ``output_dir`` for a new run: refuse a file, an unwritable place, or a dir that holds a run.

    A dir holds a run when it has a ``config.yaml`` or a ``checkpoints`` dir; with ``overwrite`` it is
    emptied instead (a new run's checkpoints among an old run's would be rotated away, keeping the old ones).

    Raises:
        ValueError: one line naming the dir and what to do.
    """
    name = f"output_dir={str(output_dir)!r}"
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"{name} is a file, not a directory; pass a directory.")
    if (output_dir / "config.yaml").exists() or (output_dir / "checkpoints").exists():
        if not overwrite:
            raise ValueError(
                f"{name} already holds a run; continue it with resume={output_dir}, pick another output_dir, "
                "or pass overwrite=true to empty it first."
            )
        for path in output_dir.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{name} cannot be written ({reason}); pick a writable directory.") from None


def check_not_finished(cfg: DictConfig, output_dir: Path) -> None:
    """Raise :class:`Finished` when the run in ``output_dir`` wrote its summary at ``cfg``'s total or beyond."""
    try:
        done = json.loads((output_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return
    offline = "gradient_steps" in done
    unit, key = ("gradient_steps", "offline.steps") if offline else ("frames", "collector.total_frames")
    if done.get(unit, 0) >= OmegaConf.select(cfg, key):
        raise Finished(
            f"the run in {str(output_dir)!r} is finished ({done[unit]} {unit.replace('_', ' ')}); raise {key} to "
            "train it further."
        )


def check_batches(cfg: DictConfig) -> None:
    """Refuse a buffer smaller than a batch; round ``collector.total_frames`` up to whole batches, with one warning
    line unless it is the default (1M frames: 1,001,472 with 2048-frame batches)."""
    size, batch, total = cfg.buffer.size, cfg.collector.frames_per_batch, cfg.collector.total_frames
    if size < batch:
        raise ValueError(
            f"buffer.size={size} is smaller than collector.frames_per_batch={batch}: each batch would lose "
            f"{batch - size} frames; use buffer.size >= {batch}."
        )
    if total % batch:
        rounded = -(-total // batch) * batch
        cfg.collector.total_frames = rounded
        if total == CollectorConfig.total_frames:  # the default "1M" is whole batches by design: no warning
            return
        print(
            f"warning: collector.total_frames={total} is not a multiple of collector.frames_per_batch={batch}; "
            f"training {rounded} frames.",
            file=sys.stderr,
            flush=True,
        )


def build_trainer(
    cfg: DictConfig,
    output_dir: Path,
    progress_bar: bool = True,
    tags: list[str] | None = None,
    *,
    offline: bool = False,
    init_policy: str = "",
) -> tuple[AWRTrainer, Evaluate, dict[str, Any]]:
    """Every part of one AWR run, wired into an :class:`~torchrl_awr.AWRTrainer`.

    Online (the default) it collects on ``cfg.env``; with ``cfg.dataset.path`` the update also reads that
    dataset, mixed with the new experience by ``dataset.mix``. With ``offline`` it learns from ``cfg.dataset``
    alone (the env only evaluates). The state normaliser is fitted on the dataset (or comes with ``init_policy``,
    a run's ``policy.pt``: then the critic starts from the ``value.pt`` beside it, if any) and stays frozen;
    otherwise it takes the first ``model.normalizer_samples`` online samples.

    Returns the trainer, its evaluation hook and what the run summary adds (the dataset, if any).

    Raises:
        ValueError: ``buffer.size`` below ``collector.frames_per_batch``, or an ``init_policy`` that does not fit.
        DatasetError: the dataset is missing, malformed or does not fit the env.
    """
    if not offline:
        check_batches(cfg)
    torch.manual_seed(cfg.seed)
    device = learner_device(cfg)
    data, label = None, f"dataset {cfg.dataset.path!r}"
    if cfg.dataset.path:  # bad data fails before the env is made
        data = load_dataset(cfg.dataset.source, cfg.dataset.path, cfg.dataset.name)
    env = make_eval_env(cfg) if offline else make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=cfg.seed)
    if data is not None:
        data = fit_to_env(data, env, label)
        if data.shape[0] < cfg.optim.batch_size:
            raise DatasetError(
                f"the dataset holds {data.shape[0]} transitions, fewer than optim.batch_size={cfg.optim.batch_size}."
            )
    loss = make_loss(cfg, env)
    norm = observation_norm_of(loss.actor_network)
    if init_policy:
        load_init_policy(loss, init_policy, cfg.env.name)
    elif data is not None:
        UpdateObservationNorm(norm, max_samples=data.shape[0])(data)  # state statistics of the whole dataset, frozen
    policy = acting_policy(loss.actor_network, device)
    loss = loss.to(device)
    actor_optim, critic_optim = make_optimizers(cfg, loss)
    keys = loss.tensor_keys
    if data is not None and not offline:  # TD(λ) must never join a dataset path with an online one
        data.set(TRAJ_KEY, -1 - data.get(TRAJ_KEY))
    trainer = AWRTrainer(
        collector=None if offline else make_collector(cfg, env, policy),
        loss_module=loss,
        replay_buffer=(
            make_offline_buffer(data, device, (keys.advantage, keys.value_target))
            if offline
            else make_replay_buffer(cfg, output_dir, device)
        ),
        actor_optimizer=actor_optim,
        critic_optimizer=critic_optim,
        total_frames=cfg.offline.steps if offline else cfg.collector.total_frames,
        actor_steps=cfg.optim.actor_steps,
        critic_steps=cfg.optim.critic_steps,
        batch_size=cfg.optim.batch_size,
        relabel=cfg.offline.relabel if offline else "refresh",
        observation_norm=None if offline or init_policy or data is not None else norm,
        normalizer_samples=cfg.model.normalizer_samples,
        frames_per_batch=None if offline else cfg.collector.frames_per_batch,
        bc_loss=make_bc_loss(loss) if offline and cfg.offline.algo == "bc" else None,
        dataset=None if offline or data is None else data.to(device),
        dataset_mix=cfg.dataset.mix,
        anneal_frames=cfg.dataset.anneal_frames,
        checkpoint_dir=output_dir / "checkpoints",
        checkpoint_interval=cfg.checkpoint.interval,
        keep_checkpoints=cfg.checkpoint.keep_last,
        logger=make_logger(cfg, output_dir, tags),
        progress_bar=progress_bar,
        seed=cfg.seed,
        device=device,
        compile=cfg.optim.compile,
        cudagraphs=cfg.optim.cudagraphs,
        unroll=cfg.optim.unroll,
    )
    eval_env = env if offline else make_eval_env(cfg)
    starts_trained = bool(init_policy) and not offline  # eval.csv's first row: the policy it starts from
    evaluator = make_evaluate(cfg, eval_env, policy, loss.actor_network, trainer, output_dir, at_start=starts_trained)
    if data is None:
        return trainer, evaluator, {}
    trainer.register_module("dataset", DatasetIdentity(data, label))  # the data stays out of the checkpoints
    dataset = {"source": cfg.dataset.source, "path": cfg.dataset.path, "name": cfg.dataset.name}
    extra = {"dataset": dataset, "transitions": data.shape[0]}
    return trainer, evaluator, {"algo": cfg.offline.algo, **extra} if offline else {"mix": cfg.dataset.mix, **extra}


def pretrain(cfg: DictConfig, output_dir: Path, progress_bar: bool = True, tags: list[str] | None = None) -> Path:
    """Stage 1 of an online run from a dataset: ``offline.steps`` of offline AWR in ``<output_dir>/pretrain``.

    The stage is a whole offline run of its own (checkpoints, ``eval.csv`` in gradient steps, summary), resumed
    where it was killed and skipped once finished; returns its ``policy.pt``.
    """
    stage_dir = output_dir / PRETRAIN_DIR
    if not (stage_dir / "summary.json").is_file():
        stage = cfg.copy()
        stage.output_dir = str(stage_dir)
        stage.resume = str(stage_dir) if has_checkpoint(stage_dir / "checkpoints") else ""
        run(stage, stage_dir, progress_bar, tags, offline=True)
    return stage_dir / "policy.pt"


def run(
    cfg: DictConfig,
    output_dir: Path,
    progress_bar: bool = True,
    tags: list[str] | None = None,
    *,
    offline: bool = False,
) -> dict:
    """Build with :func:`build_trainer`, train (or resume, with ``cfg.resume``) one run and write its outputs;
    returns the summary.

    ``tags`` label the W&B run (the scripts pass their ``key=value`` overrides). Online with a dataset and
    ``offline.steps > 0``, :func:`pretrain` runs first and the online stage starts from its networks.

    Raises:
        FloatingPointError: the final evaluation return is not finite.
    """
    torch.set_num_threads(cfg.threads)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume:
        check_not_finished(cfg, output_dir)
    init_policy = cfg.init_policy
    if not offline and cfg.dataset.path and cfg.offline.steps > 0:
        if not cfg.resume:
            OmegaConf.save(cfg, output_dir / "config.yaml")  # a kill during pre-training leaves a run to resume
        try:
            init_policy = str(pretrain(cfg, output_dir, progress_bar, tags))
        except ValueError:  # bad input: the run never started, leave nothing behind to be refused
            if not cfg.resume and not (output_dir / PRETRAIN_DIR / "checkpoints").is_dir():
                shutil.rmtree(output_dir / PRETRAIN_DIR, ignore_errors=True)
                (output_dir / "config.yaml").unlink()
            raise
    trainer, evaluator, extra = build_trainer(
        cfg, output_dir, progress_bar, tags, offline=offline, init_policy=init_policy
    )
    if not cfg.resume:  # only once the build worked: a start that failed leaves no run behind to be refused
        OmegaConf.save(cfg, output_dir / "config.yaml")
    if has_checkpoint(output_dir / "checkpoints"):  # resumed (a run killed in pre-training has none)
        trainer.resume(output_dir / "checkpoints")
    trainer.register_op("setup", lambda: advance_progress_bar(trainer, trainer.collected_frames, trainer.clock.unit))
    if trainer.collected_frames < trainer.total_frames:
        trainer.train()
    else:  # killed after its last checkpoint, before the end: only the final evaluation is left to do
        evaluator.final()
    torch.save(trainer.loss_module.actor_network.state_dict(), output_dir / "policy.pt")
    torch.save(trainer.loss_module.value_network.state_dict(), output_dir / "value.pt")  # for init_policy=
    if cfg.buffer.save and not offline:  # for train_offline.py dataset.source=buffer
        trainer.replay_buffer.dumps(output_dir / "replay_buffer")
    final = evaluator.history[-1]
    summary = {
        "env": cfg.env.name,
        "seed": cfg.seed,
        **extra,
        "final_eval_return_mean": final["eval_return_mean"],
        "final_eval_return_std": final["eval_return_std"],
        trainer.clock.unit: trainer.collected_frames,
        "wall_time_s": trainer.clock.wall_time,
        "output_dir": str(output_dir),
    }
    if not math.isfinite(summary["final_eval_return_mean"]):
        raise FloatingPointError("the final evaluation return is not finite")
    if cfg.logger.backend == "wandb":
        trainer.logger.commit_row()  # the final row, into the summary read below
        wandb_run = trainer.logger.experiment
        wandb_run.summary.update(summary)
        # What W&B itself recorded (its offline files are binary): lets a sweep's user or test check it locally.
        summary["wandb"] = {
            "run_id": wandb_run.id,
            "sweep_id": os.environ.get("WANDB_SWEEP_ID"),
            "tags": list(wandb_run.tags),
            "config": dict(wandb_run.config),
            "summary": {k: v for k, v in dict(wandb_run.summary).items() if isinstance(v, (int, float, str))},
        }
        wandb_run.finish()
    write_json(output_dir / "summary.json", summary)
    return summary
