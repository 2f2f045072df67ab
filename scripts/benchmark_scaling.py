"""Scale-out on this machine: collection frames/s and wall time per AWR iteration per collector backend.

    python scripts/benchmark_scaling.py                                  # single, multi x1/x2, ray x1/x2
    python scripts/benchmark_scaling.py --quick --json /tmp/scaling.json # smoke run (short phases)

For each backend (``collector.backend`` and ``collector.num_workers``) it measures, in one run:

* ``collect fps``: frames/s of the bare collector (``make_collector``, the real actor, ``env.num_envs`` envs per
  worker), batches of ``collector.frames_per_batch``;
* one AWR iteration through ``build_trainer`` at steady state (the buffer pre-filled to its 50k capacity after the
  first batch, as ``scripts/benchmark.py --sections iteration`` does), split into collection (the collector's
  ``next`` plus the buffer extension), learning (relabel, critic phase, relabel, actor phase) and the weight push
  to the workers (``UpdateWeights``).

The backends run in two rounds (forward, then reversed order) so that a neighbour's load drifting during the run
biases no backend; figures are medians over both rounds, ratios are against ``single``. The Markdown table goes to
stdout, the JSON to ``--json``. ``docs/scaling.md`` explains the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench.iteration import fill_to_capacity  # scripts/ is on sys.path when a script in it runs

from torchrl_awr.builders import make_collector, make_loss
from torchrl_awr.config import load_config
from torchrl_awr.envs import make_env
from torchrl_awr.experiment import build_trainer

BACKENDS = [("single", 1), ("multi", 1), ("multi", 2), ("ray", 1), ("ray", 2)]


def log(msg: str) -> None:
    print(f"[scaling] {msg}", file=sys.stderr, flush=True)


def config(backend: str, workers: int, args: argparse.Namespace, *extra: str):
    steps = ["optim.actor_steps=100", "optim.critic_steps=20"] if args.quick else []
    return load_config(
        [
            f"env.name={args.env}",
            "logger.backend=none",
            f"collector.backend={backend}",
            f"collector.num_workers={workers}",
            f"eval.interval={10**9}",
            f"checkpoint.interval={10**9}",
            *steps,
            *args.overrides,
            *extra,
        ]
    )


def collect_fps(backend: str, workers: int, args: argparse.Namespace) -> list[float]:
    """frames/s of the bare collector, one figure per batch after a warm-up batch."""
    cfg = config(backend, workers, args)
    env = make_env(cfg.env.name, num_envs=cfg.env.num_envs, seed=0)
    collector = make_collector(cfg, env, make_loss(cfg, env).actor_network)
    fps = []
    try:
        batches = iter(collector)
        next(batches)
        for _ in range(args.batches):
            start = time.perf_counter()
            batch = next(batches)
            fps.append(batch.numel() / (time.perf_counter() - start))
    finally:
        collector.shutdown()
    return fps


def iteration_split(backend: str, workers: int, args: argparse.Namespace, tmpdir: Path) -> dict[str, list[float]]:
    """Seconds per AWR iteration and its split, one figure per timed iteration (after a warm-up one)."""
    frames = load_config([]).collector.frames_per_batch
    cfg = config(backend, workers, args, f"collector.total_frames={(args.iterations + 1) * frames}")
    trainer, _, _ = build_trainer(cfg, tmpdir, progress_bar=False)
    buffer = trainer.replay_buffer
    marks: dict[str, list[float]] = {"batch": [], "learned": [], "pushed": []}

    def on_batch(batch) -> None:
        if not marks["batch"]:
            fill_to_capacity(buffer)  # steady state of a long run: relabel and phases over 50k transitions
        marks["batch"].append(time.perf_counter())

    trainer.register_op("batch_process", on_batch)  # after the buffer extension
    trainer.register_op("pre_optim_steps", lambda: marks["learned"].append(time.perf_counter()))  # after actor phase
    trainer.register_op("post_steps", lambda: marks["pushed"].append(time.perf_counter()))  # after UpdateWeights
    trainer.train()
    b, learned, pushed = marks["batch"], marks["learned"], marks["pushed"]
    n = len(pushed)
    return {
        "iteration_s": [pushed[i] - pushed[i - 1] for i in range(1, n)],
        "collect_s": [b[i] - pushed[i - 1] for i in range(1, n)],
        "learn_s": [learned[i] - b[i] for i in range(1, n)],
        "push_s": [pushed[i] - learned[i] for i in range(1, n)],
    }


def amdahl(collect_s: float, update_s: float, frames_per_batch: int, workers: int) -> float:
    """Minutes per 1M frames if collection scaled perfectly over ``workers`` and the update did not change.

    Examples:
        >>> round(amdahl(1.0, 1.0, 2048, 1), 2), round(amdahl(1.0, 1.0, 2048, 8), 2)
        (16.28, 9.16)
    """
    return 1e6 / frames_per_batch * (collect_s / workers + update_s) / 60


def table(results: dict) -> str:
    base = results["single x1"]
    rows = [
        "| backend | workers | collect fps | × single | s / iteration | × single | collect s | learn s | push s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        backend, workers = name.split(" x")
        rows.append(
            f"| {backend} | {workers} | {r['collect_fps']:.0f} | {r['collect_fps'] / base['collect_fps']:.2f} | "
            f"{r['iteration_s']:.2f} | {r['iteration_s'] / base['iteration_s']:.2f} | {r['collect_s']:.2f} | "
            f"{r['learn_s']:.2f} | {r['push_s']:.3f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("outputs/scaling.json"), help="where the JSON goes")
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--batches", type=int, default=None, help="timed collector batches per round (default 4)")
    parser.add_argument("--iterations", type=int, default=None, help="timed AWR iterations per round (default 3)")
    parser.add_argument("--quick", action="store_true", help="short phases and few batches: a smoke run")
    parser.add_argument("overrides", nargs="*", help="config overrides for every backend, e.g. env.num_envs=16")
    args = parser.parse_args(argv)
    args.batches = args.batches or (2 if args.quick else 4)
    args.iterations = args.iterations or (1 if args.quick else 3)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    raw: dict[str, dict[str, list[float]]] = {f"{b} x{w}": {} for b, w in BACKENDS}
    start = time.time()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for round_, order in enumerate((BACKENDS, BACKENDS[::-1])):
            for backend, workers in order:
                name = f"{backend} x{workers}"
                log(f"round {round_ + 1}: {name}")
                figures = {"collect_fps": collect_fps(backend, workers, args)}
                figures |= iteration_split(backend, workers, args, Path(tmp) / f"{round_}-{backend}-{workers}")
                for key, values in figures.items():
                    raw[name].setdefault(key, []).extend(values)
    results = {name: {k: statistics.median(v) for k, v in figs.items()} for name, figs in raw.items()}
    single = results["single x1"]
    cfg = config("single", 1, args)
    update_s = single["learn_s"] + single["push_s"]
    estimate = {
        str(n): amdahl(single["collect_s"], update_s, cfg.collector.frames_per_batch, n) for n in (1, 8, 32, 128)
    }
    out = {
        "env": args.env,
        "num_envs_per_worker": cfg.env.num_envs,
        "frames_per_batch": cfg.collector.frames_per_batch,
        "actor_steps": cfg.optim.actor_steps,
        "critic_steps": cfg.optim.critic_steps,
        "cpu_count": os.cpu_count(),
        "loadavg_start_end": [load_start, os.getloadavg()[0]],
        "wall_s": time.time() - start,
        "results": results,
        "raw": raw,
        "amdahl_minutes_per_1M": estimate,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(table(results))
    print(
        "\nAmdahl, minutes per 1M frames with N workers (collection perfectly parallel, update as measured): "
        + ", ".join(f"N={n}: {m:.1f}" for n, m in estimate.items())
    )
    print(f"load avg {load_start:.2f} -> {os.getloadavg()[0]:.2f}; wall {time.time() - start:.0f} s; json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
