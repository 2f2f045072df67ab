"""Checkpoint integrity: a file list with sizes and SHA-256 digests, written last and checked before loading.

:class:`torchrl.checkpoint.Checkpoint` publishes a checkpoint with one rename, but nothing checks its
payload files when loading: a truncated or zeroed tensor file loads silently (a memmap is even grown back to
its size). :func:`seal` writes ``integrity.json`` into a published checkpoint (itself atomically, so a
checkpoint is whole only once its seal exists); :func:`damage` says what is wrong with one, if anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from torchrl.checkpoint import CheckpointRotation

SEAL = "integrity.json"
# The names torchrl 0.14's Checkpoint.save / CheckpointRotation give their temporary siblings of a checkpoint
# (``.<name>.stage-<hex>``, ``.backup-``, ``.archive-``, ``.delete-``): left behind only by a killed process.
STALE_MARKERS = (".stage-", ".backup-", ".archive-", ".delete-")


def _digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _payload(checkpoint: Path) -> list[Path]:
    return sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != SEAL)


def seal(checkpoint: Path) -> Path:
    """Write ``<checkpoint>/integrity.json`` (size and SHA-256 of every other file); returns its path."""
    files = {p.relative_to(checkpoint).as_posix(): [p.stat().st_size, _digest(p)] for p in _payload(checkpoint)}
    target = checkpoint / SEAL
    tmp = target.with_name(f".{SEAL}.tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    os.replace(tmp, target)
    return target


class SealedRotation(CheckpointRotation):
    """A :class:`~torchrl.checkpoint.CheckpointRotation` that seals each checkpoint it publishes."""

    def save(self, *args: Any, **kwargs: Any) -> Path:
        destination = super().save(*args, **kwargs)
        seal(destination)
        return destination


def damage(checkpoint: Path) -> str | None:
    """What makes ``checkpoint`` unsafe to load (``None``: whole): no seal, or a file missing, resized or changed."""
    try:
        files = json.loads((checkpoint / SEAL).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {SEAL} (its save did not finish)"
    for name, (size, digest) in sorted(files.items()):
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} saved"
        if _digest(path) != digest:
            return f"{name} does not match its checksum"
    return None


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a published checkpoint (``checkpoint-*``; a killed save's temporary siblings
    do not count)."""
    return any(directory.glob("checkpoint-*"))


def remove_stale(directory: Path) -> list[Path]:
    """Remove the temporary directories and files a killed save left in ``directory``; returns them."""
    stale = [p for p in directory.glob(".*") if any(m in p.name for m in STALE_MARKERS)] if directory.is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


class ResumeRefused(ValueError):
    """A checkpoint that loads, but belongs with other inputs than the run being resumed (one line saying which)."""
