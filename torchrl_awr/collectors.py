"""Collector backends by configuration: ``single`` (this process), ``multi`` (worker processes), ``ray`` (Ray actors).

``multi`` with ``collector.sync=false`` is asynchronous (a ``MultiAsyncCollector``): each worker collects its next
batch while the learner updates, so an iteration costs about ``max(collection, update)`` instead of their sum, at
the price of one iteration of policy lag.

All three are TorchRL's own collectors, built through ``Collector(backend=...)``. Each worker builds its env from
the same env config (``env.name``, ``env.num_envs``), and the policy, observation normaliser included (it lives
inside the network), reaches the workers through TorchRL's weight-update mechanism: the trainer's
:class:`~torchrl.trainers.UpdateWeights` hook calls ``collector.update_policy_weights_`` after every actor phase
(a shared-memory scheme for ``multi``, TorchRL's ``RayWeightSyncScheme`` for ``ray``).

``ray`` joins the cluster at ``collector.ray_address`` (``auto`` or ``ray://host:port`` / ``host:port``) or, when it
is empty, starts a local Ray instance sized to this machine. An unreachable address fails within seconds with one
line, before ``ray.init`` could wait for a cluster that is not there.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from functools import partial

import torch
from omegaconf import DictConfig
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import BaseCollector, Collector
from torchrl.envs import EnvBase

from torchrl_awr.compat import CheckpointableAsyncCollector, ray_local_address
from torchrl_awr.envs import make_env
from torchrl_awr.errors import one_line

BACKENDS = ("single", "multi", "ray")
RAY_MISSING = "collector.backend=ray needs the ray package: pip install -e '.[ray]'."
# RayCollector's sync iterator stops once its own counter reaches total_frames (-1 stops it at once): the trainer
# stops at collector.total_frames, so the workers run "forever".
_FOREVER = 2**62


def make_collector(cfg: DictConfig, env: EnvBase, policy: torch.nn.Module) -> BaseCollector:
    """TorchRL's :class:`~torchrl.collectors.Collector`, running forever (the trainer stops at ``total_frames``).

    ``collector.backend=single`` steps ``env`` in this process; ``multi`` runs ``collector.num_workers`` worker
    processes (a ``MultiSyncCollector``) and ``ray`` as many Ray actors (a ``RayCollector``), each building its
    own env from the config; both return the workers' batches together, ``frames_per_batch`` frames in all.
    ``multi`` with ``collector.sync=false`` (a ``MultiAsyncCollector``) returns one worker's batch of
    ``frames_per_batch`` frames at a time, the workers collecting on while the learner updates.

    Examples:
        >>> from torchrl_awr.builders import make_loss
        >>> from torchrl_awr.config import load_config
        >>> cfg = load_config(["env.name=Pendulum-v1", "env.num_envs=1", "collector.frames_per_batch=64"])
        >>> env = make_env(cfg.env.name, num_envs=1, seed=0)
        >>> collector = make_collector(cfg, env, make_loss(cfg, env).actor_network)
        >>> next(iter(collector)).numel()
        64
        >>> collector.shutdown()
    """
    common = {"frames_per_batch": cfg.collector.frames_per_batch}
    worker_options = {"auto_register_policy_transforms": False}
    backend = cfg.collector.backend
    if backend not in BACKENDS:
        raise ValueError(f"collector.backend={backend!r} is not allowed; choose one of {', '.join(BACKENDS)}.")
    if cfg.collector.num_workers < 1:
        raise ValueError(f"collector.num_workers={cfg.collector.num_workers!r} is invalid; it must be > 0.")
    if backend == "single":
        return Collector(env, policy, total_frames=-1, **common, **worker_options)
    make_worker_env = partial(make_env, cfg.env.name, num_envs=cfg.env.num_envs)
    workers = cfg.collector.num_workers
    if backend == "multi" and not cfg.collector.sync:  # checkpointed without a hang (see the class)
        return CheckpointableAsyncCollector(
            [make_worker_env] * workers, policy, total_frames=-1, num_threads=cfg.threads, **common, **worker_options
        )
    if backend == "multi":
        return Collector(
            make_worker_env,
            policy,
            backend="process",
            num_collectors=workers,
            sync=True,
            total_frames=-1,
            num_threads=cfg.threads,
            **common,
            **worker_options,
        )
    cpus_per_worker = connect_ray(cfg.collector.ray_address, workers)
    collector = Collector(
        make_worker_env,
        policy,
        backend="ray",
        num_collectors=workers,
        sync=True,
        total_frames=_FOREVER,
        postproc=DistinctTrajIds(workers),
        backend_options={"collector_kwargs": worker_options, "remote_configs": {"num_cpus": cpus_per_worker}},
        **common,
    )
    collector.update_policy_weights_(TensorDict.from_module(policy))  # connects TorchRL's Ray weight-sync scheme
    return collector


class DistinctTrajIds:
    """Make trajectory ids unique across Ray workers: ``id * num_workers + worker``.

    A ``MultiSyncCollector``'s workers draw ids from one shared counter; each Ray actor counts on its own, so two
    workers' trajectories would share ids and :func:`torchrl_awr.relabel` would join them. The synchronous
    ``RayCollector`` stacks the workers' batches along dim 0, so the worker index is the leading index; a
    trajectory that spans batches keeps its id.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> batch = TensorDict({("collector", "traj_ids"): torch.tensor([[0, 0, 1], [0, 1, 1]])}, batch_size=[2, 3])
        >>> DistinctTrajIds(2)(batch)["collector", "traj_ids"]
        tensor([[0, 0, 2],
                [1, 3, 3]])
    """

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        ids = batch.get(("collector", "traj_ids"))
        worker = torch.arange(self.num_workers, device=ids.device).view(-1, *[1] * (ids.ndim - 1))
        batch.set(("collector", "traj_ids"), ids * self.num_workers + worker)
        return batch


def check_ray_address(address: str, timeout: float = 3.0) -> str | None:
    """The ``host:port`` that ``collector.ray_address`` points to, checked reachable within ``timeout`` seconds.

    Empty → ``None`` (start a local instance). ``auto`` → the cluster ``ray start`` left on this machine (or
    ``RAY_ADDRESS``). ``ray://host:port`` (Ray Client) and ``host:port`` (the head's GCS) are taken as given.

    Raises:
        ValueError: one line when the address is malformed, no cluster is found, or nothing answers there.

    Examples:
        >>> check_ray_address("") is None
        True
        >>> try:
        ...     check_ray_address("ray://127.0.0.1:1", timeout=0.5)
        ... except ValueError as err:
        ...     print(str(err).split(";")[0])
        collector.ray_address='ray://127.0.0.1:1': nothing answers at 127.0.0.1:1 (ConnectionRefusedError)
        >>> check_ray_address("nohost")
        Traceback (most recent call last):
        ...
        ValueError: collector.ray_address='nohost' is not an address; use auto, ray://host:port or host:port.
    """
    if not address:
        return None
    target = address
    if address == "auto":
        target = _find_local_cluster()
        if target is None:
            raise ValueError(
                "collector.ray_address='auto': no running Ray cluster found on this machine (start one with "
                "`ray start --head`, or leave collector.ray_address empty for a local instance)."
            )
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"collector.ray_address={address!r} is not an address; use auto, ray://host:port or host:port."
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ValueError(
            f"collector.ray_address={address!r}: nothing answers at {host}:{port} ({type(err).__name__}); start the "
            "head with `ray start --head` or leave collector.ray_address empty for a local instance."
        ) from None
    return target


def _find_local_cluster() -> str | None:
    """``RAY_ADDRESS`` or the address the last ``ray start`` on this machine recorded, as ``ray.init`` finds it."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    return ray_local_address()


def connect_ray(address: str, num_workers: int) -> float:
    """Join (or start) the Ray runtime for ``num_workers`` collector actors; returns the CPUs to give each.

    A local instance gets this machine's CPUs and no dashboard; with more workers than CPUs each worker gets a
    fraction of one, so that all of them are scheduled. On a cluster each worker asks for one CPU, and a cluster
    with fewer CPUs than workers is an error (Ray would otherwise wait for them forever).
    """
    if importlib.util.find_spec("ray") is None:
        raise ValueError(RAY_MISSING)
    import ray

    if not ray.is_initialized():
        target = check_ray_address(address)
        quiet = {"logging_level": "warning", "log_to_driver": False}  # worker logs would drown the progress bar
        try:
            if target is None:
                ray.init(  # "local": a new instance, even where `ray start` left a cluster running
                    address="local",
                    num_cpus=os.cpu_count(),
                    include_dashboard=False,
                    object_store_memory=256 * 1024**2,
                    **quiet,
                )
            elif address.startswith("ray://"):
                ray.init(address=address, logging_level="warning")
            else:
                ray.init(address=target, **quiet)
        except Exception as err:  # noqa: BLE001 - any failure to join is one line (e.g. a token-auth cluster)
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise ValueError(f"could not start or join {where}: {one_line(err)}") from None
    cpus = ray.cluster_resources().get("CPU", 0)
    if address and cpus < num_workers:
        raise ValueError(
            f"collector.num_workers={num_workers} but the Ray cluster at {address!r} has {cpus:g} CPUs; add nodes "
            "or use fewer workers."
        )
    return min(1.0, cpus / num_workers) if cpus else 1.0
