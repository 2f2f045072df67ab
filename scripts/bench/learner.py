"""Section ``learner``: a whole learner phase (critic + actor steps over a full 50k buffer) per optimizer and update
variant, through ``RegressionPhase``, against the same phases in plain eager PyTorch on the same device."""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from torchrl_awr.buffers import make_replay_buffer
from torchrl_awr.builders import make_optimizers, resolve_device
from torchrl_awr.update import AWRUpdate

from .common import QUICK_STEPS, Row, Section, base_config, interleaved, log, paired
from .plain import regress
from .update import synthetic_learner

LEARNER_RECIPES = {"sgd": "recipe=original", "adam": "recipe=tuned"}  # HalfCheetah: SGD + momentum, or Adam


def synchronised(device: torch.device, fn: Callable[[], object]) -> Callable[[], float]:
    """A measurement of ``fn``'s seconds that waits for ``device`` before and after."""

    def measure() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return measure


def bench_learner(args: argparse.Namespace, tmpdir: Path) -> dict:
    """One AWR learner phase (critic_steps + actor_steps over a full 50k buffer) per optimizer and update variant.

    For each optimizer (SGD with momentum, ``recipe=original``; Adam, ``recipe=tuned``, the default) the
    ``RegressionPhase`` hooks run eager and compiled (``optim.compile``, the default: one graph per step), and on a
    GPU also CUDA-graphed; the baseline is the same phases in plain eager PyTorch on the same device. Every
    repeat times the baseline and each variant back to back, so the ratio is a median of paired ratios.
    ``--no-compile`` leaves the compiled variants out (their first call compiles, ~10 s on a CPU).
    """
    quick = QUICK_STEPS if args.quick else ()
    results: dict = {"variants": {}}
    for optimizer, recipe in LEARNER_RECIPES.items():
        cfg = base_config(recipe, *quick)
        device = resolve_device(cfg.device)
        (tmpdir / optimizer).mkdir(exist_ok=True)
        s = synthetic_learner(cfg, tmpdir / optimizer)
        variants: list[tuple[str, dict]] = [("eager", {})]
        if not args.no_compile:
            variants.append(("compiled", {"compile": True}))
        if device.type == "cuda":
            variants.append(("cudagraphs", {"cudagraphs": True}))
            if not args.no_compile:
                variants.append(("compiled+cudagraphs", {"compile": True, "cudagraphs": True}))
        plain = s.plain.to(device)
        tensors = tuple(t.to(device) for t in s.tensors())  # observation, action, advantage, value_target
        bs = cfg.optim.batch_size

        def plain_learner(plain=plain, t=tensors, o=cfg.optim) -> None:
            regress(plain.value_loss, (t[0], t[3]), plain.critic_opt, o.critic_steps, o.batch_size)
            regress(plain.actor_loss, t[:3], plain.actor_opt, o.actor_steps, o.batch_size)

        runs: dict[str, Callable[[], object]] = {"plain": plain_learner}
        for name, kwargs in variants:
            loss = copy.deepcopy(s.loss).to(device)
            vcfg = base_config(recipe, f"optim.cudagraphs={bool(kwargs.get('cudagraphs'))}", f"device={device.type}")
            actor_opt, critic_opt = make_optimizers(vcfg, loss)
            buffer = make_replay_buffer(cfg, tmpdir / optimizer, device)
            buffer.extend(s.buffer.storage.get(torch.arange(len(s.buffer))))
            update = AWRUpdate(
                loss, buffer, actor_opt, critic_opt, actor_steps=cfg.optim.actor_steps,
                critic_steps=cfg.optim.critic_steps, batch_size=bs, **kwargs,
            )
            runs[name] = lambda update=update: [update.critic_phase(), update.actor_phase()]
        for name, run in runs.items():
            log(f"learner: {optimizer}, {name} on {device}: warm-up{' (compiles)' if 'compiled' in name else ''} ...")
            run()
        times = interleaved({name: synchronised(device, run) for name, run in runs.items()}, args.repeats)
        for name in runs:
            if name != "plain":
                results["variants"][f"{optimizer} {name} ({device.type})"] = {
                    "critic_steps": cfg.optim.critic_steps,
                    "actor_steps": cfg.optim.actor_steps,
                    "s": statistics.median(times[name]),
                    "plain_s": statistics.median(times["plain"]),
                    "ratio": paired(times[name], times["plain"]),
                    "s_all": times[name],
                    "plain_s_all": times["plain"],
                }
    return results


def learner_rows(r: dict) -> list[Row]:
    """One row per variant, named with its own phase lengths (each optimizer's recipe sets them)."""
    rows: list[Row] = []
    for name, v in r["variants"].items():
        steps = f"{v['critic_steps']} critic + {v['actor_steps']} actor steps"
        rows.append(("learner", f"learner phase ({steps}), {name} vs plain PyTorch eager", v["s"], v["plain_s"],
                     v["ratio"], "s"))
    return rows


LEARNER = Section("learner", bench_learner, learner_rows)
