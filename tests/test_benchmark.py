"""scripts/benchmark.py --quick as CI runs it: every section reported, positive figures, ratios present.

No timing thresholds: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_quick_benchmark_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| section |" in proc.stdout  # the Markdown table
    data = json.loads(out.read_text())
    assert data["settings"]["quick"] is True
    assert data["machine"]["torch_threads"] == 1
    for section in ("update", "relabel", "collection", "iteration"):
        assert section in data, section

    update = data["update"]
    for phase in ("actor", "critic", "step"):
        for key in ("ours_ms", "plain_ms", "hook_ms", "ratio", "hook_ratio"):
            assert positive(update[phase][key]), (phase, key, update[phase][key])
    assert update["check"]["max_rel_diff"] < 1e-3  # ours and plain compute the same losses

    relabel = data["relabel"]
    assert relabel["buffer_size"] == 50_000
    assert positive(relabel["ms"])

    collection = data["collection"]
    for key in ("ours_fps", "ours_1env_fps", "raw_single_fps", "raw_vector_fps", "raw_vector_policy_fps"):
        assert positive(collection[key]), (key, collection[key])
    for key in ("ratio_vs_raw_vector", "ratio_vs_raw_single", "ratio_1env_vs_raw_single", "ratio_vs_raw_vector_policy"):
        assert positive(collection[key]), (key, collection[key])

    iteration = data["iteration"]
    for key in ("s_per_iteration", "projected_minutes_1M", "projected_minutes_1M_with_eval_ckpt", "eval_s"):
        assert positive(iteration[key]), (key, iteration[key])
    for key in ("collect_and_extend", "optim_stage", "relabel_each", "critic_phase", "actor_phase"):
        assert positive(iteration["split_s"][key]), (key, iteration["split_s"][key])
