"""W&B sweep files, read and expanded the way ``wandb agent`` does, for running a grid locally.

A sweep file (``sweeps/*.yaml``) names ``scripts/train_mujoco.py`` as its
program and passes parameters with ``${args_no_hyphens}``, i.e. as the
script's ``key=value`` overrides. :func:`agent_command` builds the exact
command line an agent would run for one parameter set (with W&B's own macro
expansion), and :func:`grid_points` expands a grid sweep, so a grid can run
here with no W&B server (``scripts/sweep_local.py``).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a sweep file; one-line ``ValueError`` if it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} does not exist.")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or "parameters" not in config:
        raise ValueError(f"sweep file {str(path)!r} has no 'parameters' mapping.")
    return config


def grid_points(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every parameter set of a grid sweep, in W&B's order (the last parameter varies fastest).

    Examples:
        >>> grid_points({"method": "grid", "parameters": {"a": {"values": [1, 2]}, "b": {"value": 0}}})
        [{'a': 1, 'b': 0}, {'a': 2, 'b': 0}]
    """
    if config.get("method") != "grid":
        raise ValueError(f"method={config.get('method')!r}: only grid sweeps expand locally (others need W&B).")
    names, choices = [], []
    for name, spec in config["parameters"].items():
        if "values" in spec:
            choices.append(list(spec["values"]))
        elif "value" in spec:
            choices.append([spec["value"]])
        else:
            raise ValueError(f"parameter {name!r}: a grid needs 'value' or 'values', got {sorted(spec)}.")
        names.append(name)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)]


def agent_command(config: dict[str, Any], params: dict[str, Any], python: str = sys.executable) -> list[str]:
    """The command line ``wandb agent`` runs for ``params``, its ``${...}`` macros expanded as W&B does.

    ``python`` stands for the interpreter the agent finds on ``PATH``.

    Examples:
        >>> config = {"program": "scripts/train_mujoco.py", "command": ["${env}", "python", "${program}",
        ...           "${args_no_hyphens}"]}
        >>> agent_command(config, {"loss.beta": 0.5}, python="python")
        ['/usr/bin/env', 'python', 'scripts/train_mujoco.py', 'loss.beta=0.5']
    """
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    command: list[str] = []
    for chunk in config.get("command", ["${env}", "${interpreter}", "${program}", "${args}"]):
        if chunk == "${env}":
            command.append("/usr/bin/env")
        elif chunk in ("python", "${interpreter}"):
            command.append(python)
        elif chunk == "${program}":
            command.append(config["program"])
        elif chunk.startswith("${") and chunk[2:-1] in args:
            command += args[chunk[2:-1]]
        else:
            command.append(chunk)
    return command
