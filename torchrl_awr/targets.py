"""Buffer-wide relabelling: TD(λ) value targets and advantages over a whole replay buffer.

AWR recomputes its regression targets over the *entire* replay buffer with the
current critic, once before the critic phase and again before the actor phase
(the original's ``_compute_batch_new_vals``). :func:`relabel` does this with the
loss's own TorchRL value estimator, vectorised, after putting the buffer's
transitions into trajectory order:

* the storage is read in write order (oldest first), so the circular write
  cursor is the sequence's two ends and never joins unrelated data;
* transitions are grouped by trajectory id (``("collector", "traj_ids")``, which
  TorchRL collectors write), so interleaved envs are kept apart and a
  trajectory cut by a batch boundary or by the cursor is bootstrapped from
  ``V(s')`` like a time-limit truncation;
* ``terminated`` bootstraps 0, ``done`` without ``terminated`` bootstraps ``V(s')``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor
from torchrl.data import ReplayBuffer

from torchrl_awr.compat import fifo_start, values_from_tensordict
from torchrl_awr.loss import AWRLoss, standardize

TRAJ_KEY: NestedKey = ("collector", "traj_ids")
Critic = Callable[[TensorDictBase], Tensor]  # V(s) of a batch of states (the value network's in_keys), as a tensor


def value_network_pass(loss: AWRLoss) -> Critic:
    """The loss's value network as a :data:`Critic`: ``V(s)`` of a batch of states, read from the network's output."""

    def critic(states: TensorDictBase) -> Tensor:
        return loss.value_network(states).get(loss.tensor_keys.value)

    return critic


def chronological_indices(buffer: ReplayBuffer) -> torch.Tensor:
    """Storage indices of a FIFO buffer's content, oldest first.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(4))
        >>> _ = rb.extend(TensorDict(x=torch.arange(6.0), batch_size=[6]))
        >>> chronological_indices(rb)
        tensor([2, 3, 0, 1])
    """
    storage = buffer.storage
    if getattr(storage, "ndim", 1) != 1:
        raise ValueError(
            f"relabel: storage ndim={storage.ndim} is not supported; use a flat storage (ndim=1) of transitions."
        )
    size = len(storage)
    if size < storage.max_size:
        return torch.arange(size)
    # The writer's cursor is the next slot to overwrite, i.e. the oldest entry once the storage is full.
    start = fifo_start(buffer)
    return (torch.arange(size) + start) % storage.max_size


def trajectory_order(data: TensorDictBase, traj_key: NestedKey | None = TRAJ_KEY) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation that groups chronologically ordered transitions by trajectory.

    Returns:
        ``(perm, last)``: ``data[perm]`` lists each trajectory's steps
        contiguously and in time order; ``last`` marks (in that order) the final
        stored step of each trajectory, where the return must be cut.
    """
    n = data.shape[0]
    traj_ids = data.get(traj_key, None) if traj_key is not None else None
    last = torch.zeros(n, dtype=torch.bool, device=data.device)
    last[-1] = True
    if traj_ids is None:
        return torch.arange(n, device=data.device), last
    traj_ids = traj_ids.reshape(n)
    perm = torch.sort(traj_ids, stable=True).indices
    sorted_ids = traj_ids[perm]
    last[:-1] = sorted_ids[1:] != sorted_ids[:-1]
    return perm, last


@torch.no_grad()
def relabel(
    buffer: ReplayBuffer,
    loss: AWRLoss,
    *,
    traj_key: NestedKey | None = TRAJ_KEY,
    critic: Critic | None = None,
) -> dict[str, float]:
    """Recompute ``value_target`` and ``advantage`` for every transition in ``buffer``.

    Uses ``loss.value_estimator`` (TD(λ) with γ=0.99, λ=0.95 unless changed with
    :meth:`AWRLoss.make_value_estimator`) and ``loss.value_network``, and writes
    the results into the buffer's storage under the loss's ``value_target`` and
    ``advantage`` keys (:meth:`AWRLoss.set_keys` renames them). With the loss's
    ``normalize_advantage="buffer"`` (the original) the stored advantages are
    standardised over the whole buffer, ``(A − mean) / (std + 1e-5)``.

    Args:
        buffer: a replay buffer over a flat (``ndim=1``) tensor storage holding
            transitions with ``"next"`` entries, as TorchRL collectors write them.
        loss: the :class:`~torchrl_awr.AWRLoss` whose critic and estimator to use.

    Keyword Args:
        traj_key: entry holding trajectory ids (TorchRL collectors write
            ``("collector", "traj_ids")``). If the buffer lacks it, or ``None``
            is passed, storage order is taken as the time order of one stream
            (a single env, or an offline dataset stored path after path).
        critic: ``V(s)`` of a batch of states; defaults to the loss's value network
            (:class:`~torchrl_awr.AWRUpdate` passes its compiled :class:`~torchrl_awr.update.CompiledCritic`).

    Returns:
        Buffer-wide diagnostics of the raw advantages: ``advantage_mean``, ``advantage_std``,
        ``value_target_mean`` and ``explained_variance``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl.data import Bounded
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value, relabel
        >>> loss = AWRLoss(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(1,))), make_awr_value(3))
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
        >>> n = 10
        >>> _ = rb.extend(TensorDict(
        ...     observation=torch.randn(n, 3), action=torch.zeros(n, 1),
        ...     next=TensorDict(observation=torch.randn(n, 3), reward=torch.ones(n, 1),
        ...                     done=torch.zeros(n, 1, dtype=torch.bool),
        ...                     terminated=torch.zeros(n, 1, dtype=torch.bool), batch_size=[n]),
        ...     batch_size=[n]))
        >>> stats = relabel(rb, loss)
        >>> rb.storage[:n]["value_target"].shape
        torch.Size([10, 1])
    """
    if len(buffer) == 0:
        raise ValueError("relabel: the replay buffer is empty; collect data before relabelling.")
    keys = loss.tensor_keys
    storage = buffer.storage
    positions = chronological_indices(buffer)
    data = storage.get(positions)
    positions = positions.to(data.device)  # a storage on a GPU: index with GPU positions (perm is computed there)
    perm, last = trajectory_order(data, traj_key)
    for key in (("next", keys.reward), ("next", keys.done), ("next", keys.terminated)):
        if data.get(key, None) is None:
            raise ValueError(f"relabel: key {key!r} missing from the replay buffer.")
    in_keys = loss.value_network.in_keys
    needed = (*in_keys, *[("next", key) for key in in_keys], ("next", keys.reward), ("next", keys.terminated))
    positions, sequence = positions[perm], data.select(*needed, ("next", keys.done))[perm]
    if not torch.isfinite(sequence.get(("next", keys.reward))).all():
        raise ValueError(f"relabel: non-finite value in {('next', keys.reward)!r} of the replay buffer.")
    done = sequence.get(("next", keys.done))
    sequence.set(("next", keys.done), done | last.view_as(done))
    value, next_value = state_values(loss, sequence, critic)
    sequence.set(keys.value, value)
    sequence.set(("next", keys.value), next_value)
    sequence = sequence.unsqueeze(0)  # one time axis: [1, N]
    with values_from_tensordict(loss.value_estimator):
        loss.value_estimator(sequence)
    sequence = sequence.squeeze(0)
    value_target = sequence.get(keys.value_target)
    advantage = sequence.get(keys.advantage)
    if loss.normalize_advantage == "buffer":
        sequence.set(keys.advantage, standardize(advantage))
    try:
        storage[positions] = sequence.select(keys.value_target, keys.advantage)  # in place: no cursor move
    except (KeyError, RuntimeError) as err:
        raise ValueError(
            f"relabel: cannot write {keys.value_target!r}/{keys.advantage!r} into the buffer's storage "
            f"({type(err).__name__}); store them (e.g. as zeros) with every transition when extending."
        ) from None
    return _diagnostics(advantage, value_target)


def state_values(loss: AWRLoss, sequence: TensorDictBase, critic: Critic | None = None) -> tuple[Tensor, Tensor]:
    """``V(s)`` and ``V(s')`` over transitions in trajectory order, with one critic pass over the states.

    Within a trajectory ``s'`` of one step is the next step's ``s``: ``V(s')`` is read from the next row, and the
    critic runs on ``s'`` only where it is not (the row's ``done`` is set, or its ``s'`` differs from the next row's
    ``s``: a trajectory's end, a cut, a gap). Rows go through the critic in chunks of the estimator's
    ``value_chunk_size``, through ``critic`` (default: the loss's value network).
    """
    keys = loss.tensor_keys
    in_keys = loss.value_network.in_keys
    chunk = loss.value_estimator.value_chunk_size or sequence.shape[0]
    critic = critic or value_network_pass(loss)

    def chunked(inputs: TensorDictBase) -> Tensor:
        return torch.cat([critic(part) for part in inputs.split(chunk)])

    value = chunked(sequence.select(*in_keys))
    apart = sequence.get(("next", keys.done)).reshape(-1).clone()
    for key in in_keys:
        state, next_state = sequence.get(key), sequence.get(("next", key))
        apart[:-1] |= (next_state[:-1] != state[1:]).reshape(len(apart) - 1, -1).any(-1)
    apart[-1] = True
    next_value = torch.empty_like(value)
    next_value[:-1] = value[1:]
    rows = apart.nonzero().squeeze(-1)
    next_value[rows] = chunked(sequence.get("next").select(*in_keys)[rows])
    return value, next_value


def _diagnostics(advantage: Tensor, value_target: Tensor) -> dict[str, float]:
    """Buffer-wide statistics of raw advantages and their targets, with the critic's explained variance."""
    residual_var = advantage.var(unbiased=False)
    return {
        "advantage_mean": advantage.mean().item(),
        "advantage_std": advantage.std(unbiased=False).item(),
        "value_target_mean": value_target.mean().item(),
        "explained_variance": (1 - residual_var / value_target.var(unbiased=False).clamp_min(1e-8)).item(),
    }


@torch.no_grad()
def refresh_advantages(buffer: ReplayBuffer, loss: AWRLoss, *, critic: Critic | None = None) -> dict[str, float]:
    """Recompute ``advantage = value_target − V(s)`` over the whole buffer against its stored targets.

    For targets computed once (offline, ``relabel="once"``) and kept: only the critic changed. Standardised over
    the buffer as :func:`relabel` does when the loss's ``normalize_advantage`` is ``"buffer"``; returns the same
    diagnostics. ``critic`` as in :func:`relabel`.
    """
    keys = loss.tensor_keys
    n = len(buffer)
    data = buffer.storage[:n].select(*loss.value_network.in_keys, keys.value_target)
    value_target = data.get(keys.value_target)
    advantage = value_target - (critic or value_network_pass(loss))(data.select(*loss.value_network.in_keys))
    stored = standardize(advantage) if loss.normalize_advantage == "buffer" else advantage
    buffer.storage[torch.arange(n)] = TensorDict({keys.advantage: stored}, batch_size=[n])
    return _diagnostics(advantage, value_target)
