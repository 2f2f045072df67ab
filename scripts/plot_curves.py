"""Plot our eval curves against the original AWR's logged curves and print the comparison table.

    python scripts/plot_curves.py --task half_cheetah --runs docs/runs/halfcheetah-v5-seed0 \\
        --out docs/halfcheetah_vs_original.png

``--runs`` takes output dirs (each with ``eval.csv``); ``--reference`` (default
``docs/reference/awr_original_curves.csv``) is the original implementation's curves (columns env, seed,
samples, test_return, wall_hours; 10 seeds per task, Gym -v2). The table gives the mean of the last three
logged points at or below each budget, as in the original's paper tables.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BUDGETS = (300_000, 1_000_000, 3_000_000)
ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference" / "awr_original_curves.csv"  # from the xbpeng/awr logs (its README)


def read_reference(path: Path, task: str, name: str = "--task") -> dict[str, list[tuple[float, float]]]:
    """The original's curves of ``task``, per seed; a ``ValueError`` naming ``name=task`` and the tasks there when
    it has none."""
    if not path.is_file():
        raise ValueError(f"--reference={str(path)!r} does not exist; pass the original's curves CSV.")
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    tasks = set()
    with path.open() as f:
        for row in csv.DictReader(f):
            tasks.add(row["env"])
            if row["env"] == task:
                curves[row["seed"]].append((float(row["samples"]), float(row["test_return"])))
    if not curves:
        raise ValueError(f"{name}={task!r} is not in {path.name}; choose one of: {', '.join(sorted(tasks))}.")
    return curves


def read_run(path: Path, name: str = "--runs") -> list[tuple[float, float]]:
    """A run's evaluations as ``(frames, return)``; a ``ValueError`` naming ``name`` and ``path`` when it holds no
    ``eval.csv``."""
    if not (path / "eval.csv").is_file():
        raise ValueError(f"{name}: {str(path)!r} holds no eval.csv; pass the output dirs of training runs.")
    with (path / "eval.csv").open() as f:
        return [(float(r["frames"]), float(r["eval_return_mean"])) for r in csv.DictReader(f)]


def at_budget(curve: list[tuple[float, float]], budget: float) -> float | None:
    """Mean of the last three logged points at or below ``budget``."""
    values = [ret for frames, ret in curve if frames <= budget]
    return float(np.mean(values[-3:])) if values else None


def table(named_curves: dict[str, list[list[tuple[float, float]]]]) -> str:
    lines = ["| curve | " + " | ".join(f"{b // 1000}k" for b in BUDGETS) + " |", "|---" * (len(BUDGETS) + 1) + "|"]
    for name, curves in named_curves.items():
        cells = []
        for budget in BUDGETS:
            values = [v for v in (at_budget(c, budget) for c in curves) if v is not None]
            if not values or max(frames for c in curves for frames, _ in c) < budget * 0.95:
                cells.append("–")
            elif len(values) > 1:
                cells.append(f"{np.mean(values):.0f} ± {np.std(values):.0f}")
            else:
                cells.append(f"{values[0]:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw(
    ax: plt.Axes,
    reference: dict[str, list[tuple[float, float]]],
    ours: dict[str, list[list[tuple[float, float]]]],
    max_frames: float,
) -> None:
    """The original's seeds (gray, mean ± std) and each of our labels' runs (their mean ± std, or the one curve)."""
    ax.set_prop_cycle(color=[c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7] + ["black"])  # 7: gray
    grid = np.linspace(0, max_frames, 200)
    ref = np.stack([np.interp(grid, *zip(*sorted(c), strict=True)) for c in reference.values()])
    ax.plot(grid, ref.mean(0), color="gray", label=f"original AWR, Gym -v2 ({len(reference)} seeds)")
    ax.fill_between(grid, ref.mean(0) - ref.std(0), ref.mean(0) + ref.std(0), color="gray", alpha=0.25)
    for label, curves in ours.items():  # runs sharing a label: their mean, and ± one std shaded
        if len(curves) == 1:
            ax.plot(*zip(*curves[0], strict=True), label=label)
            continue
        end = min(c[-1][0] for c in curves)
        span = grid[grid <= end]
        runs = np.stack([np.interp(span, *zip(*c, strict=True)) for c in curves])
        (line,) = ax.plot(span, runs.mean(0), label=f"{label} ({len(curves)} seeds)")
        ax.fill_between(span, runs.mean(0) - runs.std(0), runs.mean(0) + runs.std(0), color=line.get_color(), alpha=0.2)
    ax.set_xlim(0, max_frames)
    ax.set_xlabel("environment frames")
    ax.set_ylabel("deterministic eval return")
    ax.grid(alpha=0.3)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="task name in the reference CSV, e.g. half_cheetah")
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="our output dirs (with eval.csv)")
    parser.add_argument("--labels", nargs="*", help="legend labels for --runs; runs with the same label are averaged")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help=f"default: {REFERENCE.relative_to(ROOT)}")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-frames", type=float, default=3e6)
    args = parser.parse_args(argv)
    labels = args.labels or [p.name for p in args.runs]
    try:
        if len(labels) != len(args.runs):
            raise ValueError(f"--labels: {len(labels)} labels for {len(args.runs)} runs; give one per run.")
        reference = read_reference(args.reference, args.task)
        runs = [read_run(path) for path in args.runs]
    except ValueError as err:
        print(f"plot_curves.py: error: {err}", file=sys.stderr)
        return 2
    ours: dict[str, list[list[tuple[float, float]]]] = {}
    for run, label in zip(runs, labels, strict=True):
        ours.setdefault(label, []).append(run)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw(ax, reference, ours, args.max_frames)
    ax.set_title(f"AWR on {args.task}: torchrl-awr vs the original")
    ax.legend(loc="upper left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(table({f"original (-v2, {len(reference)} seeds)": list(reference.values()), **ours}))
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
