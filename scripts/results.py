"""The six-task results: the default's runs at 1M frames as README's table, and their curves as one figure.

    python scripts/results.py                    # docs/results.json -> the table on stdout, docs/results.png

``--spec`` (default ``docs/results.json``) names, per task, the env id, the original's curves to draw
(``reference``: a task of ``docs/reference/awr_original_curves.csv``), the goal, rl-baselines3-zoo's PPO return at
1M (``ppo_zoo``, or null where the zoo has none), a short description of the default's settings and the default's
run dirs (each with ``eval.csv``). A run's return at the budget is its final evaluation, which must lie at or past
the budget; "last three" averages a run's final three evaluations, and the original's column its seeds' last three
logged points at or below the budget (Gym -v2), both by ``plot_curves.at_budget``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from plot_curves import REFERENCE, ROOT, at_budget, draw, plt, read_reference, read_run

SPEC = ROOT / "docs" / "results.json"
KEYS = ("env", "reference", "goal", "ppo_zoo", "settings", "runs")


def load_spec(path: Path) -> tuple[int, list[dict]]:
    """``(budget, tasks)`` from the spec; a ``ValueError`` naming what is missing or malformed."""
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--spec={str(path)!r} is not a readable JSON file ({err}).") from None
    budget, tasks = (spec.get("budget"), spec.get("tasks")) if isinstance(spec, dict) else (None, None)
    if not isinstance(budget, int) or budget <= 0 or not isinstance(tasks, list) or not tasks:
        raise ValueError(f"--spec={str(path)!r} needs a positive integer 'budget' and a non-empty list 'tasks'.")
    for task in tasks:
        if not isinstance(task, dict):
            raise ValueError(f"--spec: task {task!r} is not an object; each task needs {', '.join(KEYS)}.")
        missing = [key for key in KEYS if key not in task]
        if missing or not task["runs"]:
            raise ValueError(f"--spec: task {task.get('env', '?')!r} lacks {', '.join(missing) or 'runs'}; "
                             f"each task needs {', '.join(KEYS)}.")
        numbers = {"goal": task["goal"], **({} if task["ppo_zoo"] is None else {"ppo_zoo": task["ppo_zoo"]})}
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"--spec: {task['env']}'s {key}={value!r} is not a number.")
        if not isinstance(task["runs"], list) or not all(isinstance(run, str) for run in task["runs"]):
            raise ValueError(f"--spec: {task['env']}'s runs={task['runs']!r} is not a list of run dirs.")
    return budget, tasks


def read_runs(task: dict, budget: int) -> list[list[tuple[float, float]]]:
    """The task's runs (dirs relative to the repo root, or absolute) as ``(frames, return)`` curves; a
    ``ValueError`` for a run that ends before the budget."""
    curves = [read_run(ROOT / run, f"--spec: {task['env']}'s runs") for run in task["runs"]]
    for run, curve in zip(task["runs"], curves, strict=True):
        if not curve or curve[-1][0] < budget:
            ended = int(curve[-1][0]) if curve else 0
            raise ValueError(f"--spec: {task['env']} run {run!r} ends at {ended} frames, before the budget {budget}.")
    return curves


def row(task: dict, curves: list[list[tuple[float, float]]], reference: dict, budget: int) -> str:
    finals = np.array([curve[-1][1] for curve in curves])
    last3 = np.mean([at_budget(curve, curve[-1][0]) for curve in curves])
    original = np.mean([at_budget(curve, budget) for curve in reference.values()])
    gap = finals.mean() - task["goal"]
    verdict = f"met by {gap:.0f}" if gap >= 0 else f"missed by {-gap:.0f}"
    zoo = "–" if task["ppo_zoo"] is None else f"{task['ppo_zoo']}"
    spread = finals.std(ddof=1) if len(finals) > 1 else 0.0
    return (f"| {task['env']} | {task['settings']} | {len(curves)} | {', '.join(f'{v:.0f}' for v in finals)} | "
            f"**{finals.mean():.0f}** ± {spread:.0f} | {last3:.0f} | ≥ {task['goal']}: {verdict} | {zoo} | "
            f"{original:.0f} |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=SPEC, help=f"default: {SPEC.relative_to(ROOT)}")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help=f"default: {REFERENCE.relative_to(ROOT)}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.png")
    args = parser.parse_args(argv)
    try:
        budget, tasks = load_spec(args.spec)
        references = [read_reference(args.reference, t["reference"], f"--spec: {t['env']}'s reference") for t in tasks]
        runs = [read_runs(task, budget) for task in tasks]
    except ValueError as err:
        print(f"results.py: error: {err}", file=sys.stderr)
        return 2
    at = f"{budget / 1e6:g}M" if budget >= 1_000_000 else f"{budget / 1e3:g}k"
    print(f"| task | settings (`recipe=tuned`) | seeds | return at {at}, per seed | mean ± std | "
          f"last three evaluations | goal | zoo PPO at 1M | original AWR at {at} |")
    print("|---|---|---:|---|---:|---:|---|---:|---:|")
    columns = 3
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, task, reference, curves in zip(axes.flat, tasks, references, runs, strict=False):
        print(row(task, curves, reference, budget))
        draw(ax, reference, {"torchrl-awr defaults": curves}, budget * 1.05)
        ax.axhline(task["goal"], color="tab:red", linestyle="--", linewidth=1, label="goal")
        if task["ppo_zoo"] is not None:
            ax.axhline(task["ppo_zoo"], color="black", linestyle=":", linewidth=1, label="zoo PPO at 1M")
        ax.set_title(task["env"])
        ax.legend(loc="best", fontsize=7)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
