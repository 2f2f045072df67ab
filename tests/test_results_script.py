"""scripts/results.py: the six-task table's numbers come from the runs, and a bad spec is one line, exit 2."""

from __future__ import annotations

import json

from script_runs import ROOT, run_script
from test_plot_curves import write_run

RESULTS = ROOT / "scripts" / "results.py"


def spec(tmp_path, tasks: list[dict], budget: int = 1_000_000) -> str:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"budget": budget, "tasks": tasks}))
    return str(path)


def task(env: str, runs: list[str], goal: float, ppo_zoo: float | None) -> dict:
    return {"env": env, "reference": "hopper", "goal": goal, "ppo_zoo": ppo_zoo, "settings": "s", "runs": runs}


def test_the_table_holds_each_runs_final_return_their_mean_and_the_gap_to_the_goal(tmp_path) -> None:
    write_run(tmp_path / "a0", [100.0] * 8 + [1000.0, 2000.0])  # evaluations at 100k .. 1M
    write_run(tmp_path / "a1", [100.0] * 8 + [3000.0, 4000.0])
    write_run(tmp_path / "b0", [10.0] * 10)
    tasks = [task("A-v5", [str(tmp_path / "a0"), str(tmp_path / "a1")], 3500, 2410),
             task("B-v3", [str(tmp_path / "b0")], 5, None)]
    out = tmp_path / "results.png"
    done = run_script(RESULTS, "--spec", spec(tmp_path, tasks), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in done.stdout.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert rows["A-v5"][1:7] == ["2", "2000, 4000", "**3000** ± 1414", "1700", "≥ 3500: missed by 500", "2410"]
    assert rows["B-v3"][1:7] == ["1", "10", "**10** ± 0", "10", "≥ 5: met by 5", "–"]
    assert float(rows["A-v5"][7]) > 1000  # the original's Hopper seeds at 1M (Gym -v2)
    assert out.stat().st_size > 20_000


def test_a_run_that_ends_before_the_budget_or_a_task_without_runs_is_one_line(tmp_path) -> None:
    write_run(tmp_path / "a0", [1.0] * 5)  # ends at 500k
    done = run_script(RESULTS, "--spec", spec(tmp_path, [task("A-v5", [str(tmp_path / "a0")], 1, None)]),
                      "--out", str(tmp_path / "p.png"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"results.py: error: --spec: A-v5 run {str(tmp_path / 'a0')!r} ends at 500000 frames, "
        "before the budget 1000000."
    )
    bad = spec(tmp_path, [{"env": "A-v5", "runs": []}])
    done = run_script(RESULTS, "--spec", bad, "--out", str(tmp_path / "p.png"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "results.py: error: --spec: task 'A-v5' lacks reference, goal, ppo_zoo, settings; each task needs env, "
        "reference, goal, ppo_zoo, settings, runs."
    )
    assert not (tmp_path / "p.png").exists()


def test_the_committed_spec_names_runs_that_reach_1m_frames() -> None:
    """README's Results table is this script's output over docs/results.json; its runs are committed."""
    done = run_script(RESULTS, "--out", "/dev/null")
    assert done.returncode == 0, done.stderr
    assert [line.split("|")[1].strip() for line in done.stdout.splitlines()[2:8]] == [
        "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5", "LunarLander-v3"]


def test_a_spec_that_is_not_an_object_or_names_an_unknown_reference_is_one_line(tmp_path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    done = run_script(RESULTS, "--spec", str(path), "--out", str(tmp_path / "p.png"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"results.py: error: --spec={str(path)!r} needs a positive integer 'budget' and a non-empty list 'tasks'."
    )
    write_run(tmp_path / "a0", [1.0] * 10)
    bad = task("A-v5", [str(tmp_path / "a0")], 1, None) | {"reference": "cheetah"}
    done = run_script(RESULTS, "--spec", spec(tmp_path, [bad]), "--out", str(tmp_path / "p.png"))
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "results.py: error: --spec: A-v5's reference='cheetah' is not in awr_original_curves.csv; choose one of:"
    )


def test_a_goal_that_is_not_a_number_or_runs_that_are_not_a_list_is_one_line(tmp_path) -> None:
    for key, value, message in (("goal", "high", "A-v5's goal='high' is not a number."),
                                ("runs", "docs/runs/x", "A-v5's runs='docs/runs/x' is not a list of run dirs.")):
        bad = task("A-v5", ["unused"], 1, None) | {key: value}
        done = run_script(RESULTS, "--spec", spec(tmp_path, [bad]), "--out", str(tmp_path / "p.png"))
        assert done.returncode == 2
        assert done.stderr.strip() == f"results.py: error: --spec: {message}"


def test_a_run_dir_without_eval_csv_is_one_line_naming_the_task(tmp_path) -> None:
    """It said "--runs:", a flag results.py does not have."""
    done = run_script(RESULTS, "--spec", spec(tmp_path, [task("A-v5", [str(tmp_path)], 1, None)]),
                      "--out", str(tmp_path / "p.png"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"results.py: error: --spec: A-v5's runs: {str(tmp_path)!r} holds no eval.csv; "
        "pass the output dirs of training runs."
    )
