"""Section ``iteration``: full AWR iterations through ``build_trainer`` at the steady state of a long run (a full 50k
buffer), split into their stages, and the projected wall time for 1M frames."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from torchrl.data import ReplayBuffer

from torchrl_awr import relabel
from torchrl_awr.experiment import build_trainer

from .common import QUICK_STEPS, Row, Section, base_config, log, timed

REFERENCE_MINUTES_1M = 30.0  # original AWR, HalfCheetah, its own hardware (the paper's training logs, docs/reference)


def fill_to_capacity(buffer: ReplayBuffer) -> None:
    """Extend ``buffer`` with copies of its content (fresh trajectory ids) until it is full and its cursor has wrapped.

    The steady state of a long run: relabel and both phases then work over the buffer's whole capacity.
    """
    first = buffer.storage.get(torch.arange(len(buffer)))
    ids = first.get(("collector", "traj_ids"))
    span = int(ids.max()) + 1
    for k in range(1, math.ceil(buffer.storage.max_size / len(first)) + 1):
        chunk = first.clone()
        chunk.set(("collector", "traj_ids"), ids + k * span)
        buffer.extend(chunk)


def bench_iteration(args: argparse.Namespace, tmpdir: Path) -> dict:
    """Full AWR iterations through build_trainer, timed with marks registered at the trainer's stages.

    The first iteration is a warm-up: after the buffer takes its first batch, copies of it (with
    fresh trajectory ids) fill the buffer to capacity with the write cursor wrapped, so the timed
    iterations run at the steady state of a long run (relabel and snapshot over 50k transitions).
    """
    iterations = args.iterations
    extra = QUICK_STEPS if args.quick else ()
    defaults = base_config()
    cfg = base_config(
        f"eval.interval={10**9}",
        f"checkpoint.interval={10**9}",
        f"collector.total_frames={(iterations + 1) * defaults.collector.frames_per_batch}",
        *extra,
    )
    trainer, evaluator, _ = build_trainer(cfg, tmpdir / "run", progress_bar=False)
    buffer = trainer.replay_buffer
    marks: dict[str, list[float]] = {"batch": [], "optim_start": [], "optim_end": [], "iter_end": []}

    def mark(name: str) -> None:
        marks[name].append(time.perf_counter())

    def on_batch(batch: object) -> None:
        if not marks["batch"]:
            fill_to_capacity(buffer)
        mark("batch")

    trainer.register_op("batch_process", on_batch)
    trainer.register_op("pre_steps_log", lambda batch: mark("optim_start"))
    trainer.register_op("pre_optim_steps", lambda: mark("optim_end"))
    ckpt: dict[str, float] = {}

    def on_iter_end(batch: object) -> None:
        mark("iter_end")
        if len(marks["iter_end"]) == iterations + 1:  # last one: time a checkpoint while the collector is up
            try:
                ckpt["s"] = timed(lambda: trainer.save_trainer(force_save=True))
            except Exception as err:  # noqa: BLE001 - an optional figure; report why it is missing
                log(f"checkpoint timing skipped: {type(err).__name__}: {err}")

    trainer.register_op("post_steps_log", on_iter_end)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    n = len(marks["iter_end"])
    it = [marks["iter_end"][i] - marks["iter_end"][i - 1] for i in range(1, n)]
    collect = [marks["batch"][i] - marks["iter_end"][i - 1] for i in range(1, n)]
    optim = [marks["optim_end"][i] - marks["optim_start"][i] for i in range(1, n)]
    other = [t - c - o for t, c, o in zip(it, collect, optim, strict=True)]
    s_iter = statistics.median(it)

    # The optimisation stage split into its hooks, by separate calls on the trainer's own full buffer.
    loss = trainer.loss_module
    critic = trainer.update.critic_pass  # compiled with optim.compile (the default), as the trainer relabels
    relabel_s = statistics.median(timed(lambda: relabel(buffer, loss, critic=critic)) for _ in range(args.repeats))
    phases = {}
    for hook in (trainer.update.critic_phase, trainer.update.actor_phase):  # the trainer's own phases
        repeats = args.repeats if hook.name == "critic_phase" else min(args.repeats, 3)  # the actor phase: ~2 s
        phases[hook.name] = statistics.median(timed(hook) for _ in range(repeats))
    eval_s = timed(evaluator.evaluate)
    ckpt_s = ckpt.get("s")
    iters_1m = 1e6 / cfg.collector.frames_per_batch
    with_extras = s_iter * iters_1m + eval_s * iters_1m / defaults.eval.interval
    if ckpt_s is not None:
        with_extras += ckpt_s * iters_1m / defaults.checkpoint.interval
    return {
        "quick_reduced_steps": bool(args.quick),
        "frames_per_batch": cfg.collector.frames_per_batch,
        "critic_steps": cfg.optim.critic_steps,
        "actor_steps": cfg.optim.actor_steps,
        "buffer_size": len(buffer),
        "iterations_timed": len(it),
        "s_per_iteration": s_iter,
        "s_per_iteration_all": it,
        "split_s": {
            "collect_and_extend": statistics.median(collect),
            "optim_stage": statistics.median(optim),
            "other": statistics.median(other),
            "relabel_each": relabel_s,
            "critic_phase": phases["critic_phase"],
            "actor_phase": phases["actor_phase"],
        },
        "eval_s": eval_s,
        "checkpoint_s": ckpt_s,
        "train_call_s": total,
        "projected_minutes_1M": s_iter * iters_1m / 60,
        "projected_minutes_1M_with_eval_ckpt": with_extras / 60,
        "reference_minutes_1M": REFERENCE_MINUTES_1M,
    }


def iteration_rows(r: dict) -> list[Row]:
    sp = r["split_s"]
    note = " (quick: reduced steps)" if r["quick_reduced_steps"] else ""
    steps = f"{r['frames_per_batch']} frames + {r['critic_steps']} critic + {r['actor_steps']} actor steps"
    what = f"one iteration ({steps}, 50k buffer; median of {r['iterations_timed']}){note}"
    rows: list[Row] = [("iteration", what, r["s_per_iteration"], None, None, "s")]
    for label, value in (
        ("↳ collect + state normaliser + extend buffer", sp["collect_and_extend"]),
        ("↳ optimisation stage (2 relabels + both phases)", sp["optim_stage"]),
        ("↳ of which: relabel, each of 2 (separate call)", sp["relabel_each"]),
        ("↳ of which: critic phase (separate call)", sp["critic_phase"]),
        ("↳ of which: actor phase (separate call)", sp["actor_phase"]),
        ("↳ other (weight update, logging)", sp["other"]),
        ("evaluation (eval.episodes, deterministic)", r["eval_s"]),
        ("checkpoint save (50k buffer)", r["checkpoint_s"]),
    ):
        rows.append(("iteration", label, value, None, None, "s"))
    projected, reference = r["projected_minutes_1M"], r["reference_minutes_1M"]
    what = "projected 1M frames, training only vs original AWR (its hardware)"
    rows.append(("iteration", what, projected, reference, projected / reference, "min"))
    what = "projected 1M frames incl. default eval + checkpoint intervals"
    rows.append(("iteration", what, r["projected_minutes_1M_with_eval_ckpt"], None, None, "min"))
    return rows


ITERATION = Section("iteration", bench_iteration, iteration_rows)
