"""Datasets for AWR: three sources, one TensorDict layout (the buffer that holds one: :mod:`torchrl_awr.buffers`).

AWR learns from a fixed pile of past experience (the paper's static-dataset
setting). Each source is read with TorchRL's / tensordict's own data classes
and turned into flat ``[N]`` transitions in TorchRL's TED layout, the layout
collectors write and :class:`~torchrl_awr.AWRLoss` and
:func:`~torchrl_awr.relabel` read:

``observation``, ``action``, ``("next", "observation" | "reward" | "done" |
"terminated" | "truncated")`` and ``("collector", "traj_ids")``, stored path
after path. The trajectory ids keep TD(λ) inside an episode; ``terminated``
bootstraps 0 and a time-limit truncation (or a path cut by the end of the data)
bootstraps ``V(s')``, as online.

Sources (``dataset.source``):

* ``buffer``: a replay buffer dumped by ``train_mujoco.py buffer.save=true``
  (:meth:`~torchrl.data.ReplayBuffer.dumps`), read back with
  :meth:`~torchrl.data.ReplayBuffer.loads` in write order;
* ``minari``: a dataset under a local Minari root, through TorchRL's
  :class:`~torchrl.data.datasets.MinariExperienceReplay` (``load_from_local_minari=True``: no download);
* ``hdf5``: a D4RL-style file (``observations``, ``actions``, ``rewards``,
  ``terminals``, ``timeouts``, optionally ``next_observations``), read with
  :class:`~tensordict.PersistentTensorDict`. TorchRL's ``D4RLExperienceReplay``
  only fetches named D4RL datasets (by URL or the ``d4rl`` package), not a file
  given by path, so the conversion to TED is done here, as that class does it.

Every problem with a dataset (missing file or key, mismatched lengths, NaN,
no transitions, data that does not fit the env) is a :class:`DatasetError`, a
``ValueError`` with one line naming it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import tempfile
from contextlib import redirect_stderr
from pathlib import Path
from unittest.mock import patch

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, OneHot, TensorDictReplayBuffer
from torchrl.envs import EnvBase

from torchrl_awr.compat import memmap_like_keeps_content
from torchrl_awr.errors import one_line
from torchrl_awr.integrity import ResumeRefused
from torchrl_awr.targets import TRAJ_KEY, chronological_indices

SOURCES = ("buffer", "minari", "hdf5")
TED_KEYS: tuple = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
    TRAJ_KEY,
)
BUFFER_DIR = "replay_buffer"  # where train_mujoco.py buffer.save=true dumps the buffer inside a run's output dir
D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message is one line naming the problem."""


def _require(package: str, source: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise DatasetError(f"dataset.source={source} needs the {package} package: pip install -e '.[offline]'.")


# --------------------------------------------------------------------------------------------------- sources


def load_buffer_dataset(path: str | Path) -> TensorDict:
    """Transitions of a buffer saved with :meth:`~torchrl.data.ReplayBuffer.dumps`, oldest first.

    ``path`` is a ``train_mujoco.py buffer.save=true`` run's output dir or the
    dumped buffer dir itself (``<output_dir>/replay_buffer``). The collectors'
    trajectory ids travel with the transitions.

    Examples:
        >>> import tempfile, torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(4))
        >>> _ = rb.extend(TensorDict(x=torch.arange(6.0), batch_size=[6]))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     rb.dumps(tmp)
        ...     load_buffer_dataset(tmp)["x"]
        tensor([2., 3., 4., 5.])
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset.path={str(path)!r} does not exist.")
    if (path / BUFFER_DIR).is_dir():
        path = path / BUFFER_DIR
    if not (path / "storage").is_dir():
        raise DatasetError(
            f"dataset.path={str(path)!r} holds no dumped replay buffer (no storage/ dir); pass the output dir of a "
            "train_mujoco.py run with buffer.save=true."
        )
    try:
        # The dump does not record the storage's capacity: read it from the memory-mapped storage's shape.
        capacity = TensorDict.load_memmap(path / "storage").shape[0]
        buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(max(capacity, 1)))
        buffer.loads(path)
    except Exception as err:  # noqa: BLE001 - any unreadable dump gets the same one-line error
        raise DatasetError(f"dataset.path={str(path)!r}: the replay buffer is unreadable ({one_line(err)}).") from None
    if len(buffer) == 0:
        raise DatasetError(f"dataset.path={str(path)!r}: the replay buffer is empty (0 transitions).")
    return buffer.storage.get(chronological_indices(buffer)).to_tensordict()


def load_minari_dataset(root: str | Path, dataset_id: str) -> TensorDict:
    """A Minari dataset from a local Minari root (``<root>/<dataset_id>/data/main_data.hdf5``), never downloaded.

    Read through TorchRL's :class:`~torchrl.data.datasets.MinariExperienceReplay`
    (``load_from_local_minari=True``; its memory-mapped copy goes to a temporary
    dir); Minari's episode numbers become the trajectory ids.
    """
    _require("minari", "minari")
    from torchrl.data.datasets import MinariExperienceReplay

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset.path={str(root)!r} does not exist or is not a Minari datasets root dir.")
    if not dataset_id:
        raise DatasetError("dataset.source=minari needs dataset.name=<dataset id> (a dir under dataset.path).")
    main = root / dataset_id / "data" / "main_data.hdf5"
    if not main.is_file():
        found = sorted(str(p.parent.parent.relative_to(root)) for p in root.rglob("data/main_data.hdf5"))
        hint = f"found: {', '.join(found)}" if found else "it holds no Minari dataset"
        raise DatasetError(f"dataset.name={dataset_id!r}: no {main.relative_to(root)} under {str(root)!r}; {hint}.")
    with (
        tempfile.TemporaryDirectory() as cache,
        patch.dict(os.environ, {"MINARI_DATASETS_PATH": str(root)}),
        memmap_like_keeps_content(),
    ):
        try:
            with redirect_stderr(io.StringIO()):  # its tqdm bar: errors must stay one line
                replay = MinariExperienceReplay(
                    dataset_id, batch_size=1, root=cache, download=False, load_from_local_minari=True
                )
            data = replay.storage.get(torch.arange(len(replay))).to_tensordict()  # a copy: the cache goes away
        except Exception as err:  # noqa: BLE001 - minari/h5py raise many kinds; all get one line
            reason = one_line(err)
            raise DatasetError(f"Minari dataset {dataset_id!r} in {str(root)!r} is unreadable ({reason}).") from None
    if "episode" not in data.keys():
        raise DatasetError(f"Minari dataset {dataset_id!r} has no episodes.")
    if data.shape[0] > 1 and not data.get(("next", "observation")).any():
        raise DatasetError(f"Minari dataset {dataset_id!r} read back as all zeros (torchrl's memmap_like issue).")
    data.set(TRAJ_KEY, data.get("episode").long())
    return data


def load_hdf5_dataset(path: str | Path) -> TensorDict:
    """A D4RL-style HDF5 file as TED transitions.

    Reads ``observations``, ``actions``, ``rewards``, ``terminals`` and
    ``timeouts`` (``[N, ...]`` arrays, stored episode after episode) and, if
    present, ``next_observations``. Episodes end at ``terminals | timeouts``.
    Without ``next_observations`` the next state is the following row, and a
    timed-out step (whose next state is not stored) is dropped as D4RL's
    ``qlearning_dataset`` does; the step before it then ends its path and
    bootstraps ``V(s')`` like any truncation.

    Examples:
        >>> import tempfile, h5py, numpy as np
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with h5py.File(f"{tmp}/d.hdf5", "w") as f:
        ...         f["observations"] = np.arange(6, dtype=np.float32)[:, None]
        ...         f["actions"] = np.zeros((6, 1), np.float32)
        ...         f["rewards"] = np.ones(6, np.float32)
        ...         f["terminals"] = np.array([0, 0, 1, 0, 0, 0], bool)
        ...         f["timeouts"] = np.array([0, 0, 0, 0, 1, 0], bool)
        ...     data = load_hdf5_dataset(f"{tmp}/d.hdf5")
        >>> data["collector", "traj_ids"].tolist(), data["next", "observation"].squeeze(-1).tolist()
        ([0, 0, 0, 1], [1.0, 2.0, 3.0, 4.0])
    """
    _require("h5py", "hdf5")
    from tensordict import PersistentTensorDict

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset.path={str(path)!r} does not exist or is not a file.")
    try:
        h5 = PersistentTensorDict.from_h5(str(path), mode="r")
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, KeyError, ... for a bad file
        raise DatasetError(f"dataset.path={str(path)!r} is not a readable HDF5 file ({one_line(err)}).") from None
    try:
        keys = set(h5.keys())
        missing = [k for k in D4RL_KEYS if k not in keys]
        if missing:
            raise DatasetError(
                f"HDF5 file {str(path)!r} lacks {', '.join(map(repr, missing))}; a D4RL-style file holds "
                f"{', '.join(D4RL_KEYS)} (and optionally next_observations)."
            )
        arrays = {k: torch.as_tensor(h5.get(k)[...]) for k in (*D4RL_KEYS, "next_observations") if k in keys}
    finally:
        h5.close()
    lengths = {k: (v.shape[0] if v.ndim else -1) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        n = lengths["observations"]
        bad = next(k for k, v in lengths.items() if v != n)
        raise DatasetError(
            f"HDF5 file {str(path)!r}: {bad!r} has {lengths[bad]} rows but 'observations' has {n}; "
            "every array needs one row per step."
        )
    for key in ("rewards", "terminals", "timeouts"):
        if arrays[key].ndim > 2 or (arrays[key].ndim == 2 and arrays[key].shape[-1] != 1):
            raise DatasetError(
                f"HDF5 file {str(path)!r}: {key!r} has shape {tuple(arrays[key].shape)}; expected ({lengths[key]},)."
            )
    n = lengths["observations"]
    if n <= 0:
        raise DatasetError(f"HDF5 file {str(path)!r} holds no transitions (0 rows).")
    obs = arrays["observations"].float()
    reward = arrays["rewards"].reshape(n, 1).float()
    terminated = arrays["terminals"].reshape(n, 1).bool()
    timeout = arrays["timeouts"].reshape(n, 1).bool() & ~terminated
    ends = (terminated | timeout).squeeze(-1)
    traj_ids = torch.cumsum(ends.long(), 0) - ends.long()  # a new id after each episode end
    keep = torch.ones(n, dtype=torch.bool)
    if "next_observations" in arrays:
        next_obs = arrays["next_observations"].float()
    else:
        next_obs = torch.cat([obs[1:], obs[-1:]])  # the last row's next state is unknown: kept only if terminal
        keep = ~timeout.squeeze(-1)
        keep[-1] = bool(terminated[-1])
        timeout = torch.zeros_like(timeout)
    data = TensorDict(
        {
            "observation": obs,
            "action": arrays["actions"].float() if arrays["actions"].is_floating_point() else arrays["actions"],
            "next": {"observation": next_obs, "reward": reward, "terminated": terminated, "truncated": timeout},
        },
        batch_size=[n],
    )
    data.set(TRAJ_KEY, traj_ids)
    data = data[keep]
    if data.shape[0] == 0:
        raise DatasetError(f"HDF5 file {str(path)!r} holds no usable transitions.")
    return data


# ------------------------------------------------------------------------------------ checks and the buffer


def _path_ends(traj_ids: torch.Tensor) -> torch.Tensor:
    """``True`` at the last stored step of each path (the data is stored path after path)."""
    ends = torch.ones_like(traj_ids, dtype=torch.bool)
    ends[:-1] = traj_ids[1:] != traj_ids[:-1]
    return ends


def to_transitions(data: TensorDictBase, source: str = "dataset") -> TensorDict:
    """Check a dataset and keep the TED entries AWR reads, with float rewards and ``[N, 1]`` flags.

    ``("next", "done")`` becomes ``terminated | truncated``, and the last
    stored step of each path is marked truncated when it is not terminal (the
    data ends there: TD(λ) bootstraps from ``V(s')``).

    Raises:
        DatasetError: no transitions, a missing entry, lengths that differ, or
            a NaN/inf in observations, actions or rewards.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> td = TensorDict(observation=torch.zeros(3, 2), action=torch.zeros(3, 1), batch_size=[3])
        >>> td["next"] = TensorDict(observation=torch.zeros(3, 2), terminated=torch.zeros(3, 1, dtype=torch.bool),
        ...                         batch_size=[3])
        >>> to_transitions(td, "my data")
        Traceback (most recent call last):
        ...
        torchrl_awr.datasets.DatasetError: my data lacks ('next', 'reward').
    """
    if data.batch_dims != 1 or data.shape[0] == 0:
        raise DatasetError(f"{source} holds no transitions (batch shape {tuple(data.shape)}).")
    n = data.shape[0]
    nxt = data.get("next", None)
    if nxt is not None and "done" not in nxt.keys() and "terminated" in nxt.keys():
        nxt.set("done", nxt.get("terminated"))
    if nxt is not None and "truncated" not in nxt.keys() and "done" in nxt.keys() and "terminated" in nxt.keys():
        nxt.set("truncated", nxt.get("done") & ~nxt.get("terminated"))
    if TRAJ_KEY not in data.keys(True):  # one stream in storage order: paths end where done is set
        done = data.get(("next", "done"), None)
        if done is not None:
            ends = done.reshape(n).bool()
            data.set(TRAJ_KEY, torch.cumsum(ends.long(), 0) - ends.long())
    missing = [k for k in TED_KEYS if k not in data.keys(True)]
    if missing:
        raise DatasetError(f"{source} lacks {', '.join(map(repr, missing))}.")
    out = data.select(*TED_KEYS).to_tensordict()
    for key in (("next", "reward"), ("next", "done"), ("next", "terminated"), ("next", "truncated")):
        value = out.get(key)
        if value.numel() != n:
            raise DatasetError(f"{source}: {key!r} has shape {tuple(value.shape)}; expected one value per step ({n}).")
        out.set(key, value.reshape(n, 1).float() if key[1] == "reward" else value.reshape(n, 1).bool())
    if out.get(("next", "observation")).shape != out.get("observation").shape:
        raise DatasetError(
            f"{source}: ('next', 'observation') has shape {tuple(out.get(('next', 'observation')).shape)} but "
            f"'observation' has {tuple(out.get('observation').shape)}."
        )
    for key in ("observation", ("next", "observation"), "action", ("next", "reward")):
        value = out.get(key)
        if value.is_floating_point() and not torch.isfinite(value).all():
            count = int((~torch.isfinite(value)).sum())
            raise DatasetError(f"{source}: {key!r} holds {count} non-finite value(s) (NaN or inf).")
        if value.is_floating_point() and value.dtype != torch.float32:
            out.set(key, value.float())
    traj_ids = out.get(TRAJ_KEY).reshape(n).long()
    out.set(TRAJ_KEY, traj_ids)
    terminated = out.get(("next", "terminated"))
    truncated = out.get(("next", "truncated")) | (_path_ends(traj_ids).view(n, 1) & ~terminated)
    out.set(("next", "truncated"), truncated)
    out.set(("next", "done"), terminated | truncated)
    return out


def fit_to_env(data: TensorDict, env: EnvBase, source: str = "dataset") -> TensorDict:
    """Check the data against the evaluation env's observation and action shapes.

    Integer actions for an env with one-hot actions (Minari and D4RL store
    indices) are one-hot encoded.

    Raises:
        DatasetError: observation or action sizes differ from the env's.
    """
    obs_shape = tuple(env.observation_spec_unbatched["observation"].shape)
    action_spec = env.action_spec_unbatched
    if tuple(data.get("observation").shape[1:]) != obs_shape:
        raise DatasetError(
            f"{source}: observations have shape {tuple(data.get('observation').shape[1:])} but the env observes "
            f"{obs_shape}; set env.name to the task the data came from."
        )
    action = data.get("action")
    if isinstance(action_spec, OneHot) and not action.is_floating_point() and action.shape[1:] in ((), (1,)):
        n = action_spec.shape[-1]
        action = torch.nn.functional.one_hot(action.reshape(-1).long(), n).to(action_spec.dtype)
        data.set("action", action)
    if tuple(action.shape[1:]) != tuple(action_spec.shape):
        raise DatasetError(
            f"{source}: actions have shape {tuple(action.shape[1:])} but the env takes {tuple(action_spec.shape)}; "
            "set env.name to the task the data came from."
        )
    data.set("action", action.to(action_spec.dtype))
    return data


def load_dataset(source: str, path: str | Path, name: str = "") -> TensorDict:
    """Checked TED transitions from ``source`` (``buffer`` | ``minari`` | ``hdf5``) at ``path``.

    Raises:
        DatasetError: one line naming what is wrong with the source or its data.
    """
    if source not in SOURCES:
        raise DatasetError(f"dataset.source={source!r} is not allowed; choose one of {', '.join(SOURCES)}.")
    if not str(path):
        raise DatasetError(f"dataset.source={source} needs dataset.path=<{PATH_HELP[source]}>.")
    if source == "buffer":
        data, label = load_buffer_dataset(path), f"replay buffer {str(path)!r}"
    elif source == "minari":
        data, label = load_minari_dataset(path, name), f"Minari dataset {name!r}"
    else:
        data, label = load_hdf5_dataset(path), f"HDF5 file {str(path)!r}"
    return to_transitions(data, label)


PATH_HELP = {
    "buffer": "output dir of a train_mujoco.py run with buffer.save=true",
    "minari": "Minari datasets root dir",
    "hdf5": "D4RL-style .hdf5 file",
}


class DatasetIdentity:
    """Which dataset a run trains on, checkpointed in place of the data: a resume with another one is refused.

    The state is the number of transitions and a BLAKE2 digest of the observations, actions and rewards
    (a second for a D4RL-sized dataset); :meth:`load_state_dict` raises
    :class:`~torchrl_awr.integrity.ResumeRefused` when the dataset given now differs.
    """

    def __init__(self, data: TensorDictBase, label: str) -> None:
        self.label = label
        self.transitions = data.shape[0]
        digest = hashlib.blake2b(digest_size=16)
        for key in ("observation", "action", ("next", "reward")):
            digest.update(data.get(key).detach().cpu().contiguous().numpy().tobytes())
        self.digest = digest.hexdigest()

    def state_dict(self) -> dict[str, object]:
        return {"transitions": self.transitions, "digest": self.digest}

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        if (state_dict["transitions"], state_dict["digest"]) != (self.transitions, self.digest):
            raise ResumeRefused(
                f"{self.label} ({self.transitions} transitions) is not the dataset this run started from "
                f"({state_dict['transitions']} transitions, another digest); resume with the run's own dataset.path."
            )
