"""Section ``end_to_end``: the default training command for a fixed frame budget against a plain-PyTorch AWR loop
with the same settings.

Both run as the user runs them, each as a process of its own, timed from start to exit:

* ours: ``python scripts/train_mujoco.py env.name=HalfCheetah-v5 collector.total_frames=<frames>`` with the
  project's defaults (``recipe=tuned``, ``optim.compile=true``, ``threads=1``, W&B offline), plus the command
  line's ``key=value`` overrides: imports, compilation (a fresh inductor cache per run, as on a first run),
  evaluations, checkpoints and the final outputs included;
* plain: ``python -m bench.plain`` (:mod:`bench.plain`: torch + gymnasium, no TorchRL or tensordict, eager) with
  every setting taken from the same resolved config (:func:`bench.common.plain_args`).

Each repeat runs both back to back (the order reversed on odd repeats); figures are medians over repeats, the
ratio a median of per-repeat ratios. Each run's own final evaluation return shows that both learn.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from torchrl_awr.builders import resolve_device
from torchrl_awr.config import load_config

from .common import CONFIG_OVERRIDES, ENV_NAME, QUICK_STEPS, Row, Section, interleaved, log, paired, plain_args
from .plain import to_argv

SCRIPTS = Path(__file__).resolve().parents[1]
ROOT = SCRIPTS.parent
TRAIN_SCRIPT = SCRIPTS / "train_mujoco.py"
ITERATIONS = 100  # the frame budget without --frames: 100 batches (204,800 frames with the default 2048)
QUICK_ITERATIONS = 2


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` list of our command: env, frame budget, ``--quick``'s shorter phases, then the command
    line's overrides; a key given twice keeps its first place and its last value."""
    quick = QUICK_STEPS if args.quick else ()
    batch = load_config([f"env.name={ENV_NAME}", *CONFIG_OVERRIDES]).collector.frames_per_batch
    frames = args.frames or (QUICK_ITERATIONS if args.quick else ITERATIONS) * batch
    merged: dict[str, str] = {}
    for item in (f"env.name={ENV_NAME}", f"collector.total_frames={frames}", *quick, *CONFIG_OVERRIDES):
        merged[item.split("=", 1)[0]] = item
    return list(merged.values())


def run_process(cmd: list[str], env: dict[str, str], log_path: Path) -> float:
    """Seconds from start to exit of ``cmd`` (its output goes to ``log_path``).

    Raises:
        RuntimeError: a non-zero exit status, with the end of its output.
    """
    with log_path.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=False)
        seconds = time.perf_counter() - start
    if proc.returncode:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} exited with status {proc.returncode}:\n{tail}")
    return seconds


def eval_history(run_dir: Path) -> list[dict[str, float]]:
    """A run's ``eval.csv`` (both write one): frames and the deterministic evaluation return after them."""
    with (run_dir / "eval.csv").open() as f:
        return [
            {"frames": int(row["frames"]), "eval_return_mean": float(row["eval_return_mean"])}
            for row in csv.DictReader(f)
        ]


def timed_runs(
    name: str, command: Callable[[Path], list[str]], env: Callable[[int], dict[str, str]], tmpdir: Path
) -> tuple[list[dict], Callable[[], float]]:
    """A list of run records and a measurement that runs ``command(output_dir)`` once more, appends its record and
    returns its seconds. A record: process seconds, the run's own wall time, frames, final return, eval history."""
    runs: list[dict] = []

    def measure() -> float:
        rep = len(runs)
        out = tmpdir / f"{name}-{rep}"
        log(f"end_to_end: {name}, repeat {rep + 1} ...")
        seconds = run_process(command(out), env(rep), tmpdir / f"{name}-{rep}.log")
        summary = json.loads((out / "summary.json").read_text())
        runs.append(
            {
                "s": seconds,
                "train_s": summary["wall_time_s"],
                "frames": summary["frames"],
                "final_eval_return_mean": summary["final_eval_return_mean"],
                "final_eval_return_std": summary["final_eval_return_std"],
                "eval_history": eval_history(out),
            }
        )
        log(f"end_to_end: {name} took {seconds:.1f} s, final return {summary['final_eval_return_mean']:.1f}")
        return seconds

    return runs, measure


def bench_end_to_end(args: argparse.Namespace, tmpdir: Path) -> dict:
    ours_overrides = overrides(args)
    cfg = load_config(ours_overrides)
    if resolve_device(cfg.device).type != "cpu" or cfg.collector.backend != "single":
        raise ValueError(
            "end_to_end: the plain loop runs on the CPU in one process: keep device=cpu and collector.backend=single"
        )
    batch = cfg.collector.frames_per_batch
    frames = -(-cfg.collector.total_frames // batch) * batch  # both round up to whole batches
    train = str(TRAIN_SCRIPT.relative_to(ROOT))
    python_path = os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))
    ours_runs, ours = timed_runs(
        "ours",
        lambda out: [sys.executable, train, *ours_overrides, f"output_dir={out}"],
        lambda rep: {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmpdir / f"inductor-{rep}")},  # a cold compile
        tmpdir,
    )
    plain_runs, plain = timed_runs(
        "plain",
        lambda out: [sys.executable, "-m", "bench.plain", *to_argv(plain_args(cfg, str(out)))],
        lambda rep: {**os.environ, "PYTHONPATH": python_path},
        tmpdir,
    )
    seconds = interleaved({"ours": ours, "plain": plain}, args.e2e_repeats)
    for run in (*ours_runs, *plain_runs):
        if run["frames"] != frames:
            raise RuntimeError(f"end_to_end: a run trained {run['frames']} frames, not {frames}")
    ours_s, plain_s = seconds["ours"], seconds["plain"]
    ours_train, plain_train = [r["train_s"] for r in ours_runs], [r["train_s"] for r in plain_runs]
    return {
        "command": shlex.join(["python", train, *ours_overrides]),
        "plain_command": shlex.join(["python", "-m", "bench.plain", *to_argv(plain_args(cfg, "<out>"))]),
        "frames": frames,
        "repeats": args.e2e_repeats,
        "inductor_cache": "a fresh one for every run of ours: it compiles from scratch, as a first run does",
        "settings": {
            **dataclasses.asdict(plain_args(cfg)),
            "recipe": cfg.recipe,
            "optim.compile": cfg.optim.compile,
            "logger.backend": cfg.logger.backend,
        },
        "ours_s": statistics.median(ours_s),
        "plain_s": statistics.median(plain_s),
        "ratio": paired(ours_s, plain_s),
        "ours_fps": statistics.median(frames / s for s in ours_s),
        "plain_fps": statistics.median(frames / s for s in plain_s),
        "fps_ratio": paired(plain_s, ours_s),  # frames/s ours / plain, repeat by repeat
        "ours_train_s": statistics.median(ours_train),
        "plain_train_s": statistics.median(plain_train),
        "train_ratio": paired(ours_train, plain_train),
        "ours_return": statistics.median(r["final_eval_return_mean"] for r in ours_runs),
        "plain_return": statistics.median(r["final_eval_return_mean"] for r in plain_runs),
        "runs": {"ours": ours_runs, "plain": plain_runs},
    }


def end_to_end_rows(r: dict) -> list[Row]:
    what = f"default command vs plain-PyTorch AWR loop, {r['frames']:,} frames, process start to exit"
    inside = "↳ of which the run itself (ours: from building the trainer; plain: from train())"
    episodes = r["settings"]["eval_episodes"]
    return [
        ("end_to_end", what, r["ours_s"], r["plain_s"], r["ratio"], "s"),
        ("end_to_end", inside, r["ours_train_s"], r["plain_train_s"], r["train_ratio"], "s"),
        ("end_to_end", "frames/s, process start to exit", r["ours_fps"], r["plain_fps"], r["fps_ratio"], "frames/s"),
        (
            "end_to_end",
            f"final evaluation return ({episodes} episodes, deterministic)",
            r["ours_return"],
            r["plain_return"],
            None,
            "return",
        ),
    ]


END_TO_END = Section("end_to_end", bench_end_to_end, end_to_end_rows)
