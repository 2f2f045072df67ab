"""The run's logger (``logger.backend``), whose history survives kills and resumes: each count logged once, in order.

A run killed and resumed from its last checkpoint redoes the iterations after that checkpoint. The killed segment
may already have logged them, so each backend keeps one history:

* ``csv`` (:class:`CSVLogger`): at resume, each ``logs/<run>/scalars/<key>.csv`` is cut back to the rows the
  checkpoint holds (as ``eval.csv`` is, by :class:`~torchrl_awr.monitoring.Evaluate`); the resumed run writes the rest.
* ``wandb`` (:class:`WandbLogger`): one history row per count (frames online, gradient steps offline: W&B's
  ``step``). W&B history is append-only, and an offline run cannot be resumed in place: each segment of a resumed run
  is its own ``wandb/offline-run-*-<id>`` directory under the same run id. A resumed segment therefore logs only the
  counts after the last row any earlier segment holds (read back from their ``.wandb`` files with
  :func:`wandb_history`), and first the rows up to its checkpoint that a kill kept W&B from writing (from
  ``wandb_history.jsonl``, the logger's own flushed copy of every value), so the segments, read or synced in order,
  hold each count once, with increasing steps. Online, W&B keeps the same rows when it resumes the run (it drops
  steps below the run's last one). Upload offline segments with ``wandb beta sync <output_dir>/wandb`` (wandb >= 0.24
  syncs a run's segments in order, as one run).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import wandb
from omegaconf import DictConfig
from torchrl.record.loggers import CSVLogger as TorchRLCSVLogger
from torchrl.record.loggers import Logger, TensorboardLogger
from torchrl.record.loggers import WandbLogger as TorchRLWandbLogger

from torchrl_awr.config import to_flat_dict

TENSORBOARD_HELP = "make install EXTRAS=tensorboard (or: pip install -e '.[tensorboard]')"


class CSVLogger(TorchRLCSVLogger):
    """TorchRL's CSV logger (``<log_dir>/<exp_name>/scalars/<key>.csv``, one ``step,value`` row per call) whose
    files go back to the rows of the checkpoint it is restored from: a resumed run does not repeat rows."""

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the logged rows from a checkpoint and rewrite every scalar file to hold exactly them."""
        super().load_state_dict(state_dict)
        for handle in self.experiment.files.values():
            handle.close()
        self.experiment.files.clear()
        scalars = Path(self.experiment.log_dir) / "scalars"
        for path in scalars.rglob("*.csv"):
            rows = self.experiment.scalars.get(path.relative_to(scalars).with_suffix("").as_posix())
            if not rows:  # first logged after the checkpoint
                path.unlink()
                continue
            tmp = path.with_suffix(".csv.tmp")
            tmp.write_text("".join(f"{step},{value}\n" for step, value in rows))
            tmp.replace(path)


class WandbLogger(TorchRLWandbLogger):
    """TorchRL's W&B logger with one history row per count, the count as W&B's ``step``, made whole across kills.

    Every value logged at one count (the trainer logs with ``step=collected_frames``) goes into that count's row.
    Offline, W&B writes its ``.wandb`` file in 32 KiB blocks and a killed run loses the block it had not written
    yet, rows from before the last checkpoint included, which the resumed run does not redo. So every value also goes
    to ``history`` (one JSON line each, flushed), and a checkpoint holds how many lines it had; restoring one cuts
    ``history`` back to those lines and logs again the ones after ``after_step``, the last count the run's earlier
    segments hold (see the module). Counts up to ``after_step`` are never logged again.
    """

    def __init__(self, *args: Any, history: Path, after_step: int = -1, **kwargs: Any) -> None:
        self.history = history
        self.after_step = after_step
        self._lines = len(history.read_text().splitlines()) if history.exists() else 0
        self._mirror = history.open("a")
        super().__init__(*args, **kwargs)

    def log_scalar(self, name: str, value: float, step: int | None = None) -> None:
        """Log ``value`` under ``name`` in the row of count ``step`` (W&B's current row when ``None``)."""
        value = float(value)
        self._mirror.write(json.dumps({"step": step, "key": name, "value": value}) + "\n")
        self._mirror.flush()
        self._lines += 1
        if step is None or step > self.after_step:
            self.experiment.log({name: value}, step=step)

    def commit_row(self) -> None:
        """Write the row under way now: W&B writes a row once a later count is logged, or at ``finish``. Call it once
        nothing more is logged at its count, before reading the run's summary (values logged at that count after
        this are dropped)."""
        self.experiment.log({}, commit=True)

    def state_dict(self) -> dict[str, Any]:
        """TorchRL's logger state and the number of ``history`` lines written so far."""
        return {**super().state_dict(), "history_lines": self._lines}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the logger state; cut ``history`` back to the checkpoint's lines and log again those that the
        run's earlier segments did not write (steps after ``after_step``)."""
        super().load_state_dict(state_dict)
        lines = self.history.read_text().splitlines()[: state_dict.get("history_lines", self._lines)]
        self._mirror.close()
        tmp = self.history.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(self.history)
        self._mirror = self.history.open("a")
        self._lines = len(lines)
        for row in map(json.loads, lines):
            if row["step"] is None or row["step"] > self.after_step:
                self.experiment.log({row["key"]: row["value"]}, step=row["step"])


def wandb_segments(output_dir: Path, run_id: str) -> list[Path]:
    """The ``.wandb`` files of run ``run_id`` under ``output_dir/wandb``, one per segment (start of the script),
    oldest first: ``offline-run-<time>-<id>`` (or ``run-...`` online) directories."""
    files = (output_dir / "wandb").glob(f"*run-*-{run_id}*/run-{run_id}.wandb")
    return sorted(files, key=lambda path: path.parent.name.split("run-", 1)[1])


def wandb_history(wandb_file: Path) -> list[dict[str, Any]]:
    """The history rows one ``.wandb`` file holds, in order (``_step`` is the count), read with W&B's own
    ``wandb leet inspect --json``; the last record of a killed segment may be incomplete, and is left out.

    Raises:
        RuntimeError: the file cannot be read.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(wandb_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"cannot read {str(wandb_file)!r}: {reason}")
    records = (json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
    return [record["history"]["item"] for record in records if record.get("type") == "history"]


def last_logged_step(output_dir: Path, run_id: str) -> int:
    """The last step of run ``run_id``'s history over all its segments in ``output_dir``; -1 if it has none.

    A segment that cannot be read counts as empty, with one warning line: its rows may then appear twice.
    """
    for segment in reversed(wandb_segments(output_dir, run_id)):
        try:
            rows = wandb_history(segment)
        except RuntimeError as err:
            print(f"warning: W&B history: {err}; counts it holds may be logged again.", file=sys.stderr, flush=True)
            continue
        if rows:
            return max(int(row["_step"]) for row in rows)
    return -1


def logged_scalars(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run in ``output_dir`` logged, by key: ``(step, value)`` in the order logged, read back from
    the csv logger's files, else from the W&B run's segments in order; empty when it logged neither."""
    history: dict[str, list[tuple[int, float]]] = defaultdict(list)
    scalars = output_dir / "logs" / output_dir.name / "scalars"
    id_file = output_dir / "wandb_id"
    if scalars.is_dir():
        for path in sorted(scalars.rglob("*.csv")):
            key = path.relative_to(scalars).with_suffix("").as_posix()
            for line in path.read_text().splitlines():
                step, value = line.split(",")
                history[key].append((int(step), float(value)))
    elif id_file.exists():
        for segment in wandb_segments(output_dir, id_file.read_text().strip()):
            for row in wandb_history(segment):
                for key, value in row.items():
                    if not key.startswith("_"):
                        history[key].append((int(row["_step"]), value))
    return dict(history)


def check_wandb_login() -> None:
    """Raise a one-line ``ValueError`` when W&B has no API key for ``logger.mode=online`` (instead of its prompt or
    its traceback); W&B's own lines about the key it found are left out."""
    with contextlib.redirect_stderr(io.StringIO()):
        logged_in = wandb.login(prompt=False, verify=False)
    if not logged_in:
        raise ValueError(
            "logger.mode=online needs a W&B API key and none is set: run `wandb login` (or set WANDB_API_KEY), or "
            "use logger.mode=offline and upload later with `wandb beta sync <output_dir>/wandb`."
        )


def make_logger(cfg: DictConfig, output_dir: Path, tags: list[str] | None = None) -> Logger | None:
    """The logger ``cfg.logger`` names, writing under ``output_dir``; W&B runs offline unless ``logger.mode=online``.

    The W&B config holds every key under its dotted override name (as sweeps name them) and ``tags`` (the
    command line's ``key=value`` overrides: under a sweep agent, the swept values). The W&B run id is kept in
    ``output_dir/wandb_id``, so a resumed run logs into the same run, after the rows it already holds.

    Raises:
        ValueError: one line: ``logger.backend=tensorboard`` without tensorboard, or ``logger.mode=online``
            without a W&B API key.
    """
    exp_name = output_dir.name
    if cfg.logger.backend == "none":
        return None
    if cfg.logger.backend == "csv":
        return CSVLogger(exp_name, log_dir=str(output_dir / "logs"))
    if cfg.logger.backend == "tensorboard":
        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError(f"logger.backend=tensorboard needs the tensorboard package: {TENSORBOARD_HELP}.")
        return TensorboardLogger(exp_name, log_dir=str(output_dir / "logs"))
    if cfg.logger.mode == "online":
        check_wandb_login()
    id_file = output_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else None
    logger = WandbLogger(
        exp_name,
        offline=cfg.logger.mode == "offline",
        save_dir=str(output_dir),
        id=run_id,
        project=cfg.logger.project,
        group=cfg.logger.group or None,
        mode=cfg.logger.mode,
        resume="allow",
        config=to_flat_dict(cfg),
        tags=[tag[:64] for tag in tags or []],
        log_env_packages=False,
        history=output_dir / "wandb_history.jsonl",
        after_step=last_logged_step(output_dir, run_id) if run_id else -1,
    )
    id_file.write_text(logger.experiment.id)
    return logger
