"""scripts/benchmark.py as CI runs it, its end-to-end section run tiny, and its plain-PyTorch baseline's math.

No timing thresholds: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"
sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark's package, as scripts/benchmark.py imports it

from bench.common import layers_with_weights, linears, plain_copy  # noqa: E402
from bench.learner import learner_rows  # noqa: E402
from bench.plain import td_lambda  # noqa: E402
from bench.update import synthetic_learner  # noqa: E402
from tensordict import TensorDict  # noqa: E402

from torchrl_awr import make_env, relabel  # noqa: E402
from torchrl_awr.buffers import make_replay_buffer  # noqa: E402
from torchrl_awr.builders import make_loss  # noqa: E402
from torchrl_awr.config import load_config  # noqa: E402


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def run_benchmark(tmp_path: Path, *args: str, timeout: int) -> dict:
    """``scripts/benchmark.py --quick --json <tmp> *args`` as a user runs it; its JSON."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| section |" in proc.stdout  # the Markdown table
    data = json.loads(out.read_text())
    assert data["settings"]["quick"] is True
    assert data["machine"]["torch_threads"] == 1
    return data


def test_quick_benchmark_writes_every_section(tmp_path: Path) -> None:
    data = run_benchmark(tmp_path, timeout=180)
    for section in ("update", "learner", "relabel", "collection", "iteration"):
        assert section in data, section
    assert "end_to_end" not in data  # only when named

    update = data["update"]
    for phase in ("actor", "critic", "step"):
        for key in ("ours_ms", "plain_ms", "hook_ms", "ratio", "hook_ratio"):
            assert positive(update[phase][key]), (phase, key, update[phase][key])

    for name, variant in data["learner"]["variants"].items():
        for key in ("s", "plain_s", "ratio"):
            assert positive(variant[key]), (name, key, variant[key])
        assert (variant["critic_steps"], variant["actor_steps"]) == (20, 100), name  # --quick's phases

    relabel = data["relabel"]
    assert relabel["buffer_size"] == 50_000
    for key in ("ms", "compiled_ms", "compiled_ratio"):
        assert positive(relabel[key]), (key, relabel.get(key))

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


def test_end_to_end_section_runs_both_loops(tmp_path: Path) -> None:
    """Three 1024-frame iterations on Pendulum-v1: evaluations and checkpoints every 2 (so also the final ones).

    Eager updates: a cold compilation (the section gives every run of ours a fresh inductor cache) alone takes
    20-40 s on a loaded 2-core machine; tests/test_update.py covers the compiled update.
    """
    overrides = [
        "env.name=Pendulum-v1",
        "collector.frames_per_batch=1024",
        "eval.interval=2",
        "checkpoint.interval=2",
        "logger.backend=none",
        "optim.compile=false",
    ]
    data = run_benchmark(tmp_path, "--sections", "end_to_end", "--frames", "3072", *overrides, timeout=120)
    assert list(data) == ["machine", "settings", "section_wall_s", "end_to_end"]
    e2e = data["end_to_end"]
    assert e2e["frames"] == 3072 and e2e["repeats"] == 1
    assert e2e["command"].startswith("python scripts/train_mujoco.py env.name=Pendulum-v1 collector.total_frames=3072")
    assert e2e["settings"]["env_id"] == "Pendulum-v1" and e2e["settings"]["optim.compile"] is False
    for side in ("ours", "plain"):
        for key in ("s", "fps", "train_s"):
            assert positive(e2e[f"{side}_{key}"]), (side, key, e2e[f"{side}_{key}"])
    for key in ("ratio", "fps_ratio", "train_ratio"):
        assert positive(e2e[key]), (key, e2e[key])
    for key in ("ours_return", "plain_return"):  # Pendulum's returns are negative
        assert math.isfinite(e2e[key]), (key, e2e[key])
    for side in ("ours", "plain"):
        (run,) = e2e["runs"][side]
        assert [row["frames"] for row in run["eval_history"]] == [2048, 3072], side
        assert run["eval_history"][-1]["eval_return_mean"] == run["final_eval_return_mean"]
        assert run["train_s"] < run["s"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["env.name=HalfCheetah-v5", "loss.normalize_advantage=batch"],  # the update section: per minibatch
        ["env.name=HalfCheetah-v5"],  # the defaults: LayerNorm and ELU, advantages standardised over the buffer
        ["env.name=HalfCheetah-v5", "recipe=original"],  # SGD, action_std 0.4, beta 1
        ["env.name=Pendulum-v1", "loss.normalize_advantage=batch"],  # action bounds of ±2: the mean is rescaled
    ],
    ids=["batch-stats", "defaults", "original", "pendulum"],
)
def test_plain_baseline_computes_our_losses_and_gradients(tmp_path: Path, overrides: list[str]) -> None:
    """Ours and the plain-PyTorch baseline (loaded with our weights) agree on both losses and their gradients, on a
    minibatch of the benchmark's synthetic buffer, with the action-bound penalty active (actions past the bounds)."""
    cfg = load_config(["logger.backend=none", *overrides])
    s = synthetic_learner(cfg, tmp_path)
    loss, plain = s.loss, s.plain
    with torch.no_grad():  # push some means past the bounds, so that the penalty counts
        linears(loss.actor_network)[-1].bias.add_(1.5)
        linears(plain.actor)[-1].bias.add_(1.5)
    idx = torch.randperm(s.full.shape[0])[: cfg.optim.batch_size]
    batch = s.full[idx]
    obs, action, advantage, value_target = (t[idx] for t in s.tensors())
    pairs = (
        (
            loss.actor_loss(batch.select(*s.actor_keys))[0],
            plain.actor_loss(obs, action, advantage),
            loss.actor_network,
            plain.actor,
        ),
        (
            loss.value_loss(batch.select(*s.critic_keys))[0],
            plain.value_loss(obs, value_target),
            loss.value_network,
            plain.critic,
        ),
    )
    for ours, theirs, our_net, plain_net in pairs:
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        ours.backward()
        theirs.backward()
        for our_layer, plain_layer in zip(layers_with_weights(our_net), layers_with_weights(plain_net), strict=True):
            torch.testing.assert_close(our_layer.weight.grad, plain_layer.weight.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(our_layer.bias.grad, plain_layer.bias.grad, rtol=1e-4, atol=1e-6)


def test_plain_td_lambda_matches_relabel(tmp_path: Path) -> None:
    """The plain loop's TD(λ) over a time-major ``[T, envs]`` buffer gives the targets and advantages that
    ``torchrl_awr.relabel`` writes into our buffer of the same transitions (env-major, with trajectory ids), with
    terminations, truncations and the newest step bootstrapped from V(s')."""
    steps, num_envs = 40, 4
    cfg = load_config(["env.name=Pendulum-v1", "logger.backend=none", f"buffer.size={steps * num_envs}",
                       "loss.normalize_advantage=none"])  # raw advantages stored, as the plain loop computes them
    env = make_env(cfg.env.name)
    loss = make_loss(cfg, env)
    space = env.action_spec_unbatched.space
    plain = plain_copy(loss, cfg, space.low.float(), space.high.float())
    gen = torch.Generator().manual_seed(0)
    terminated = torch.rand(steps, num_envs, generator=gen) < 0.05
    done = terminated | (torch.rand(steps, num_envs, generator=gen) < 0.05)
    data = {
        "obs": torch.randn(steps, num_envs, 3, generator=gen),
        "next_obs": torch.randn(steps, num_envs, 3, generator=gen),
        "reward": torch.randn(steps, num_envs, generator=gen),
        "terminated": terminated,
        "done": done,
    }
    episode = torch.cat([torch.zeros(1, num_envs, dtype=torch.long), done[:-1].long().cumsum(0)])
    traj_ids = torch.arange(num_envs) + num_envs * episode

    def env_major(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).reshape(steps * num_envs, *x.shape[2:])

    n = steps * num_envs
    batch = TensorDict(
        {
            "observation": env_major(data["obs"]),
            "next": {
                "observation": env_major(data["next_obs"]),
                "reward": env_major(data["reward"]).unsqueeze(-1),
                "done": env_major(done).unsqueeze(-1),
                "terminated": env_major(terminated).unsqueeze(-1),
            },
            "collector": {"traj_ids": env_major(traj_ids)},
        },
        batch_size=[n],
    )
    buffer = make_replay_buffer(cfg, tmp_path, torch.device("cpu"))
    buffer.extend(batch)
    relabel(buffer, loss)
    stored = buffer.storage.get(torch.arange(n))
    target, advantage = td_lambda(plain, data, cfg.loss.gamma, cfg.loss.lmbda)
    torch.testing.assert_close(env_major(target), stored.get("value_target").squeeze(-1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(env_major(advantage), stored.get("advantage").squeeze(-1), rtol=1e-5, atol=1e-4)


def test_learner_rows_name_each_variants_own_phase_lengths() -> None:
    # SGD runs recipe=original (1000 actor steps), Adam the default (HalfCheetah: 500): each row says its own
    timing = {"s": 1.0, "plain_s": 2.0, "ratio": 0.5}
    rows = learner_rows({"variants": {
        "sgd eager (cpu)": {"critic_steps": 200, "actor_steps": 1000, **timing},
        "adam eager (cpu)": {"critic_steps": 200, "actor_steps": 500, **timing},
    }})
    assert [row[1] for row in rows] == [
        "learner phase (200 critic + 1000 actor steps), sgd eager (cpu) vs plain PyTorch eager",
        "learner phase (200 critic + 500 actor steps), adam eager (cpu) vs plain PyTorch eager",
    ]
    assert [row[2:5] for row in rows] == [(1.0, 2.0, 0.5)] * 2
