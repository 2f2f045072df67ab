"""Kill a short training run with SIGKILL at random moments, resume it each time, and check that nothing was lost or
repeated.

    python scripts/soak.py                             # 20 kills per logger: csv, then W&B offline
    python scripts/soak.py --kills 5 --seed 1 --backend wandb --out /tmp/soak

For each logger backend a Pendulum-v1 run (``scripts/train_mujoco.py``, 512-frame iterations, an evaluation each
iteration, a checkpoint every second one) goes into ``<out>/<backend>/run``. Each segment starts the run afresh
(``overwrite=true``) while it has no checkpoint, else resumes it, and is killed at a random moment: during start-up,
a random number of iterations into training, or while a checkpoint is being saved (as soon as a
``checkpoints/.checkpoint-*.stage-*`` directory appears). After ``--kills`` kills the run is resumed to its end, then
checked: ``summary.json`` at the total, ``eval.csv`` with every evaluation's frame count once and in order, the
logger's history (``logs/`` for csv, every ``wandb/offline-run-*`` segment for W&B) with every iteration's frame
count once and each key's steps increasing, no checkpoint stage directory left. Each segment's output goes to
``<out>/<backend>/segment-<n>.log``.

Exit status 0 when every check holds, 1 otherwise; the last line is the verdict.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_awr.integrity import damage  # noqa: E402
from torchrl_awr.loggers import logged_scalars  # noqa: E402

BATCH = 512
RUN = [
    "env.name=Pendulum-v1",
    f"collector.frames_per_batch={BATCH}",
    "env.num_envs=2",
    "optim.actor_steps=20",
    "optim.critic_steps=10",
    "optim.batch_size=64",
    "optim.compile=false",
    "eval.episodes=2",
    "eval.interval=1",
    "checkpoint.interval=2",
    "logger.mode=offline",
]
MOMENTS = ("start-up", "training", "checkpoint save")
SEGMENT_TIMEOUT = 600  # seconds: a segment that neither ends nor reaches its moment by then is a failure


def checkpoint_frames(run: Path) -> int:
    """Frames of the newest whole (sealed, undamaged) checkpoint of ``run``; 0 without one."""
    whole = [p for p in (run / "checkpoints").glob("checkpoint-*") if damage(p) is None]
    return max((int(p.name.split("-")[1]) for p in whole), default=0)


def eval_frames(run: Path) -> list[int]:
    """The frame counts of ``run``'s ``eval.csv`` rows, in file order; empty while it is missing or unreadable."""
    try:
        with (run / "eval.csv").open() as f:
            return [int(row["frames"]) for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def stage_dirs(run: Path) -> set[str]:
    """The stage directories in ``run``'s checkpoints: a save under way, or one a killed save left behind."""
    try:
        return {entry.name for entry in os.scandir(run / "checkpoints") if ".stage-" in entry.name}
    except OSError:
        return set()


def segment_args(run: Path, backend: str, total: int) -> list[str]:
    """The next segment's overrides: ``resume=`` when ``run`` has a whole checkpoint, else a fresh run of ``total``
    frames (``overwrite=true``: a run killed before its first checkpoint starts again, as its error line says)."""
    if checkpoint_frames(run):
        return [f"resume={run}"]
    return [*RUN, f"collector.total_frames={total}", f"logger.backend={backend}", f"output_dir={run}", "overwrite=true"]


def start(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``scripts/train_mujoco.py`` with ``args`` in its own process group, its output into ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train_mujoco.py"), *args],
            cwd=ROOT,
            env={**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = SEGMENT_TIMEOUT) -> bool:
    """SIGKILL ``proc`` (its main process only, as the OOM killer does) once ``ready()``; ``False`` when it ended by
    itself first. Then waits for the rest of its process group (W&B's service) to go, killing what is left after 10 s.

    Raises:
        TimeoutError: neither happened within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready():
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"segment still running after {timeout:.0f} s")
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return killed


def moment(rng: random.Random, run: Path, started: float) -> tuple[str, Callable[[], bool]]:
    """A random moment to kill the segment started at ``started``: its name and when it has come."""
    kind = rng.choice(MOMENTS)
    if kind == "start-up":
        delay = rng.uniform(0.0, 8.0)
        return kind, lambda: time.monotonic() - started > delay
    if kind == "training":  # past where the killed segment got to: the resumed one first redoes its rows
        reached_before = max([checkpoint_frames(run), *eval_frames(run)[-1:]])
        target, delay = reached_before + rng.randint(1, 3) * BATCH, rng.uniform(0.0, 1.0)
        reached: list[float] = []

        def ready() -> bool:
            if not reached and eval_frames(run)[-1:] >= [target]:
                reached.append(time.monotonic())
            return bool(reached) and time.monotonic() - reached[0] > delay

        return kind, ready
    left = stage_dirs(run)  # by the killed segment: the trainer removes them when it is built
    return kind, lambda: bool(stage_dirs(run) - left)


def problems(run: Path, total: int) -> list[str]:
    """What is wrong with the finished ``run`` of ``total`` frames (nothing: an empty list)."""
    found = []
    expected = list(range(BATCH, total + 1, BATCH))
    if not (run / "summary.json").is_file():
        found.append("no summary.json")
    frames = eval_frames(run)
    if frames != expected:
        found.append(f"eval.csv frames {frames} != {expected}")
    history = logged_scalars(run)
    steps = [step for step, _ in history.get("frames", [])]
    if steps != expected:
        found.append(f"logged frames {steps} != {expected}")
    for key, rows in history.items():
        keyed = [step for step, _ in rows]
        if any(b <= a for a, b in zip(keyed, keyed[1:], strict=False)):
            found.append(f"logged {key!r} steps not increasing: {keyed}")
    if stage_dirs(run):
        found.append(f"stage directories left: {sorted(stage_dirs(run))}")
    return found


def soak(out: Path, backend: str, kills: int, rng: random.Random) -> tuple[Counter, list[str]]:
    """Kill the run in ``out/run`` ``kills`` times and resume it to its end; returns the kills by moment and the
    problems found."""
    out.mkdir(parents=True, exist_ok=True)
    run = out / "run"
    total = (4 * kills + 8) * BATCH  # room for every kill: a segment gains about one iteration on average
    done: Counter = Counter()
    for segment in itertools.count(1):
        started = time.monotonic()
        log = out / f"segment-{segment}.log"
        proc = start(segment_args(run, backend, total), log)
        kind, ready = moment(rng, run, started) if done.total() < kills else ("end", lambda: False)
        if not kill_when(proc, ready):
            if proc.returncode != 0:
                return done, [f"segment {segment} exited with {proc.returncode}: {log.read_text().strip()[-300:]}"]
            break
        done[kind] += 1
        print(
            f"[{backend}] kill {done.total()}/{kills} during {kind}: newest checkpoint {checkpoint_frames(run)} "
            f"frames, eval.csv at {(eval_frames(run) or [0])[-1]} ({time.monotonic() - started:.1f} s)",
            flush=True,
        )
    found = problems(run, total)
    if done.total() < kills:
        found.append(f"the run ended after {done.total()} of {kills} kills")
    return done, found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kills per run (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--backend", choices=("csv", "wandb", "both"), default="both", help="logger (default both)")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a new temporary directory)")
    args = parser.parse_args(argv)
    if args.kills < 1:
        print(f"soak.py: error: --kills={args.kills}; it must be an integer >= 1.", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="awr-soak-"))
    started = time.monotonic()
    rng = random.Random(args.seed)
    kills: Counter = Counter()
    found = []
    for backend in ("csv", "wandb") if args.backend == "both" else (args.backend,):
        done, problems_found = soak(out / backend, backend, args.kills, rng)
        kills += done
        found += [f"{backend}: {problem}" for problem in problems_found]
    minutes = (time.monotonic() - started) / 60
    moments = ", ".join(f"{n} during {kind}" for kind, n in sorted(kills.items()))
    if found:
        print(f"soak: FAIL after {minutes:.1f} min, {moments} ({out}): {'; '.join(found)}")
        return 1
    print(f"soak: PASS in {minutes:.1f} min: {kills.total()} kills ({moments}) of {args.backend} logger runs, "
          f"every frame once in eval.csv and the logger history, no stage directory left ({out})")
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
