"""scripts/plot_curves.py: runs sharing a label are averaged, in the plot and in the table."""

from __future__ import annotations

import csv

from script_runs import ROOT, run_script

PLOT = ROOT / "scripts" / "plot_curves.py"


def write_run(path, returns: list[float]) -> None:
    path.mkdir()
    with open(path / "eval.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frames", "wall_time_s", "eval_return_mean", "eval_return_std"])
        for i, value in enumerate(returns):
            writer.writerow([(i + 1) * 100_000, i, value, 0.0])


def test_runs_with_one_label_are_one_mean_curve(tmp_path) -> None:
    for name, returns in {"a0": [100.0] * 10, "a1": [300.0] * 10, "b0": [50.0] * 10}.items():
        write_run(tmp_path / name, returns)
    out = tmp_path / "plot.png"
    done = run_script(PLOT, "--task", "half_cheetah", "--max-frames", "1e6", "--out", str(out), "--runs",
                      *(str(tmp_path / n) for n in ("a0", "a1", "b0")), "--labels", "A", "A", "B")
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert rows["A"].split("|")[2].strip() == "200 ± 100" and rows["B"].split("|")[2].strip() == "50"  # at 300k
    assert out.stat().st_size > 10_000


def test_a_label_count_that_does_not_match_the_runs_is_one_line(tmp_path) -> None:
    write_run(tmp_path / "a0", [1.0, 2.0])
    done = run_script(PLOT, "--task", "half_cheetah", "--out", str(tmp_path / "p.png"), "--runs",
                      str(tmp_path / "a0"), "--labels", "A", "B")
    assert done.returncode == 2
    assert done.stderr.strip() == "plot_curves.py: error: --labels: 2 labels for 1 runs; give one per run."


def test_an_unknown_task_or_a_dir_without_eval_csv_is_one_line_naming_it(tmp_path) -> None:
    """Both ended in a traceback before."""
    write_run(tmp_path / "a0", [1.0, 2.0])
    done = run_script(PLOT, "--task", "halfcheetah", "--out", str(tmp_path / "p.png"), "--runs", str(tmp_path / "a0"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "plot_curves.py: error: --task='halfcheetah' is not in awr_original_curves.csv; choose one of: ant, "
        "half_cheetah, hopper, humanoid, lunarlander, walker."
    )
    done = run_script(PLOT, "--task", "half_cheetah", "--out", str(tmp_path / "p.png"), "--runs", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"plot_curves.py: error: --runs: {str(tmp_path)!r} holds no eval.csv; pass the output dirs of training runs."
    )
    assert not (tmp_path / "p.png").exists()
