"""Run a grid sweep file here, without a W&B server, with the exact command lines `wandb agent` would run.

    python scripts/sweep_local.py sweeps/grid_beta_seed.yaml --out docs/beta_study \\
        --set logger.backend=none --plot loss.beta loss.normalize_advantage

Each grid point runs ``scripts/train_mujoco.py`` as a subprocess (the sweep's
own ``command``, followed by the ``--set`` overrides), one after another, into
``<out>/runs/<n>``; a point whose ``summary.json`` exists is skipped (one line
says how many), so an interrupted study resumes; a fresh ``--out`` runs every
point again. ``<out>/results.csv`` gets one row per point: the swept values,
the final eval return and the mean of the last three evaluations. ``--plot X
HUE`` draws that return against ``X`` (log scale), mean ± std over the other
swept keys (seeds), one line per ``HUE`` value.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_awr.sweeps import agent_command, grid_points, load_sweep  # noqa: E402


def last_evals(run_dir: Path, n: int = 3) -> float:
    with (run_dir / "eval.csv").open() as f:
        returns = [float(row["eval_return_mean"]) for row in csv.DictReader(f)]
    tail = returns[-n:]
    return sum(tail) / len(tail)


def plot(rows: list[dict], x: str, hue: str, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[str(row[hue])][float(row[x])].append(float(row[metric]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, by_x in sorted(groups.items()):
        xs = sorted(by_x)
        mean = np.array([np.mean(by_x[v]) for v in xs])
        std = np.array([np.std(by_x[v]) for v in xs])
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=f"{hue}={label}")
    ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a grid sweep file (sweeps/*.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="study directory")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides after the swept values")
    parser.add_argument("--plot", nargs=2, metavar=("X", "HUE"), help="plot the return against X, one line per HUE")
    args = parser.parse_args(argv)
    try:
        config = load_sweep(args.sweep)
        points = grid_points(config)
    except ValueError as err:
        print(f"sweep_local.py: error: {err}", file=sys.stderr)
        return 2
    rows = []
    env = {**os.environ, "WANDB_SILENT": "true"}
    runs = args.out / "runs"
    done = [n for n in range(len(points)) if (runs / f"{n:03d}" / "summary.json").exists()]
    if done:
        print(
            f"{len(done)} of {len(points)} points already done in {runs} (they have a summary.json): skipped; "
            "to run them again, pass a fresh --out.",
            flush=True,
        )
    for n, params in enumerate(points):
        run_dir = runs / f"{n:03d}"
        if n not in done:
            # a point killed before its summary starts again from nothing
            command = [*agent_command(config, params), *args.set, f"output_dir={run_dir}", "overwrite=true"]
            print(f"[{n + 1}/{len(points)}] {' '.join(command[2:])}", flush=True)
            proc = subprocess.run(
                command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            if proc.returncode != 0:
                print(
                    f"sweep_local.py: error: point {n} failed: {proc.stderr.strip().splitlines()[-1]}", file=sys.stderr
                )
                return 1
        summary = json.loads((run_dir / "summary.json").read_text())
        rows.append(
            {**params, "final_eval_return": summary["final_eval_return_mean"], "last3_eval_return": last_evals(run_dir)}
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"results: {args.out / 'results.csv'}")
    if args.plot:
        figure = args.out / f"return_vs_{args.plot[0]}.png"
        plot(rows, *args.plot, "last3_eval_return", figure)
        print(f"plot: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
