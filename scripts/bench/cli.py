"""``python scripts/benchmark.py``: the command line, the sections in order, the printed table and the JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

import bench

from . import common
from .collection import COLLECTION
from .common import Section, base_config, log, machine_info, table
from .end_to_end import END_TO_END
from .iteration import ITERATION
from .learner import LEARNER
from .update import RELABEL, UPDATE

SECTIONS: dict[str, Section] = {s.name: s for s in (UPDATE, LEARNER, RELABEL, COLLECTION, ITERATION, END_TO_END)}
DEFAULT_SECTIONS = ("update", "learner", "relabel", "collection", "iteration")  # end_to_end only when named


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=bench.__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("outputs/benchmark.json"), help="where the JSON goes")
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats per measurement (default 5, quick 2; end_to_end 1)"
    )
    parser.add_argument("--steps", type=int, default=None, help="update steps per timed block (default 200)")
    parser.add_argument("--collect-batches", type=int, default=None, help="2048-frame batches per collection repeat")
    parser.add_argument("--iterations", type=int, default=None, help="timed AWR iterations after the warm-up one")
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="end_to_end: collector.total_frames of each run (default 100 batches, 204,800 frames; quick 2 batches)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument(
        "--sections",
        default=",".join(DEFAULT_SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all but end_to_end)",
    )
    parser.add_argument("--quick", action="store_true", help="few repeats and steps: a smoke run under 60 s")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile our update step, relabel and collector; print the top N functions",
    )
    parser.add_argument("--no-compile", action="store_true", help="learner, relabel: leave out the compiled variants")
    parser.add_argument("overrides", nargs="*", help="config overrides for every section, e.g. env.num_envs=16")
    args = parser.parse_args(argv)
    args.e2e_repeats = args.repeats or 1  # one end-to-end pair takes minutes
    defaults = {"repeats": (2, 5), "steps": (20, 200), "collect_batches": (1, 2), "iterations": (1, 3)}
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be >= 1")
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown or not args.sections:
        parser.error(f"unknown --sections {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    common.CONFIG_OVERRIDES[:] = args.overrides
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # keep its INFO lines out of the printed table
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = machine_info(args.threads)
    print(
        f"CPU: {info['cpu']} ({info['cpu_count']} cores) | torch {info['torch']} ({args.threads} thread(s)) | "
        f"torchrl {info['torchrl']} | tensordict {info['tensordict']} | gymnasium {info['gymnasium']} | "
        f"mujoco {info['mujoco']} | load avg at start {info['loadavg_start'][0]:.2f}",
        flush=True,
    )
    results: dict = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="awr-bench-") as tmp:
        for name, section in SECTIONS.items():
            if name not in args.sections:
                continue
            log(f"{name} ...")
            start = time.perf_counter()
            section_dir = Path(tmp) / name
            section_dir.mkdir()
            results[name] = section.run(args, section_dir)
            timings[name] = time.perf_counter() - start
            log(f"{name} done in {timings[name]:.1f} s")
    info["loadavg_end"] = list(os.getloadavg())
    report = {
        "machine": info,
        "settings": {
            "quick": args.quick,
            "repeats": args.repeats,
            "end_to_end_repeats": args.e2e_repeats,
            "steps_per_block": args.steps,
            "collect_batches": args.collect_batches,
            "iterations": args.iterations,
            "frames": args.frames,
            "threads": args.threads,
            "sections": args.sections,
            "overrides": args.overrides,
        },
        "section_wall_s": timings,
        **results,
    }
    print()
    repeats = f"{args.repeats} repeats" + (f", end_to_end {args.e2e_repeats}" if "end_to_end" in results else "")
    print(f"AWR benchmark ({base_config().env.name}; medians over {repeats}; ratios are medians of per-repeat ratios)")
    print()
    print(table([row for name, result in results.items() for row in SECTIONS[name].rows(result)]))
    if "update" in results:
        u = results["update"]
        print(
            f"\nupdate: batch {u['batch_size']}, nets {tuple(u['hidden_sizes'])}, {u['steps_per_block']} steps per "
            f"block; advantages standardised per minibatch: {u['advantage_standardised_per_minibatch']}"
        )
    if "end_to_end" in results:
        e = results["end_to_end"]
        print(f"\nend_to_end ({e['repeats']} repeat(s), {e['inductor_cache']}):\n  ours:  {e['command']}")
        print(f"  plain: {e['plain_command']}")
    print(
        f"\nload avg at end {info['loadavg_end'][0]:.2f}; wall time per section (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
    for name in ("update", "relabel", "collection"):
        if "profile" in results.get(name, {}):
            print(f"\ncProfile of {name}:\n{results[name]['profile']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0
