"""One AWR update (:class:`AWRUpdate`: relabel, fit V, relabel, fit π), its two regression phases and their
update step: eager, or one compiled graph per step.

A phase (:class:`RegressionPhase`) is ``steps`` minibatch updates of one loss method (:meth:`AWRLoss.value_loss`
for the critic, :meth:`AWRLoss.actor_loss` for the actor) on a snapshot of the replay buffer. One update is a
function of the minibatch indices:

* **eager** (``compile=False``, the reference): ``loss.backward()`` and ``optimizer.step()``, as any PyTorch loop;
* **one graph** (``compile=True``): minibatch gather, loss, gradients (:func:`torch.func.grad_and_value` through
  :func:`torch.func.functional_call`) and the optimizer's update written as tensor ops
  (:func:`sgd_update`, :func:`adam_update`: the same math as :class:`torch.optim.SGD` and
  :class:`torch.optim.Adam`), compiled by :func:`torch.compile` with no graph break. It updates the parameters and
  the optimizer's own state tensors in place, so ``optimizer.state_dict()``, checkpoints and the eager path see
  exactly what the eager step would have left. One call of the graph runs ``unroll`` such steps one after the other
  (2 by default, where it divides the phase's steps; else 1) and adds their metrics to the phase's sums: a compiled
  call's own cost (~0.15 ms on a CPU) is paid once per ``unroll`` steps, for about ``unroll`` times the compile time.

An optimizer the graph cannot express, or a machine where compilation fails (no C++ compiler, an operator that
cannot be traced), falls back to the eager step with one warning line. With ``compile=True`` the critic's passes
over the whole buffer in :func:`relabel` are one compiled graph too (:class:`CompiledCritic`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import CudaGraphModule
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value
from torchrl.data import ReplayBuffer
from torchrl.objectives import BCLoss
from torchrl.trainers import Trainer, TrainerHookBase

from torchrl_awr.errors import one_line
from torchrl_awr.loss import AWRLoss, inputs_checked
from torchrl_awr.targets import Critic, chronological_indices, refresh_advantages, relabel, value_network_pass

LossFn = Callable[[TensorDictBase], tuple[Tensor, dict[str, Tensor]]]


def shuffled_indices(
    n: int, batch_size: int, steps: int, device: torch.device | str | None = None
) -> Iterator[Tensor]:
    """``steps`` minibatch index tensors from shuffled passes over ``range(n)`` (a new permutation per pass).

    The original's sampling: every element once per pass; a pass's remainder
    (``n % batch_size`` elements) is skipped, so every minibatch has ``batch_size`` indices.

    Examples:
        >>> batches = list(shuffled_indices(6, 3, 4))
        >>> [len(b) for b in batches], sorted(torch.cat(batches[:2]).tolist())
        ([3, 3, 3, 3], [0, 1, 2, 3, 4, 5])
    """
    if n < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} transitions in the buffer.")
    per_pass = n // batch_size
    perm = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if step % per_pass == 0:
            perm = torch.randperm(n, device=device)
        start = (step % per_pass) * batch_size
        yield perm[start : start + batch_size]


# ------------------------------------------------------------------ optimizer updates as tensor ops
def sgd_update(params: list[Tensor], grads: list[Tensor], state: list[dict[str, Tensor]], group: dict) -> None:
    """:class:`torch.optim.SGD`'s update, in place, for ``dampening=0``.

    ``state[i]["momentum_buffer"]`` starts at zeros (``momentum * 0 + g`` is the ``g`` torch.optim starts from).

    Examples:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        >>> state = init_optimizer_state(opt)
        >>> with torch.no_grad():
        ...     sgd_update([p], [torch.ones(2)], state, opt.param_groups[0])
        >>> p.data
        tensor([0.9000, 0.9000])
    """
    lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
    for param, grad, st in zip(params, grads, state, strict=True):
        if weight_decay:
            grad = grad + weight_decay * param
        if momentum:
            buf = st["momentum_buffer"]
            buf.mul_(momentum).add_(grad)
            grad = grad + momentum * buf if group["nesterov"] else buf
        param.add_(grad, alpha=-lr)


def adam_update(params: list[Tensor], grads: list[Tensor], state: list[dict[str, Tensor]], group: dict) -> None:
    """:class:`torch.optim.Adam`'s update (``amsgrad=False``), in place; the step count is a tensor in ``state``.

    Examples:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.Adam([p], lr=0.1)
        >>> state = init_optimizer_state(opt)
        >>> with torch.no_grad():
        ...     adam_update([p], [torch.ones(2)], state, opt.param_groups[0])
        >>> p.data, state[0]["step"]
        (tensor([0.9000, 0.9000]), tensor(1.))
    """
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    for param, grad, st in zip(params, grads, state, strict=True):
        if weight_decay:
            grad = grad + weight_decay * param
        step = st["step"]
        step.add_(1)
        st["exp_avg"].lerp_(grad, 1 - beta1)
        st["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step).sqrt()
        denom = (st["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
        param.sub_(lr * st["exp_avg"] / (bias_correction1 * denom))


UPDATES: dict[type, Callable[..., None]] = {torch.optim.SGD: sgd_update, torch.optim.Adam: adam_update}


def unsupported(optimizer: torch.optim.Optimizer) -> str | None:
    """Why the one-graph step cannot express ``optimizer``'s update, or ``None`` when it can."""
    if type(optimizer) not in UPDATES:
        return f"{type(optimizer).__name__} (supported: SGD, Adam)"
    for group in optimizer.param_groups:
        for flag in ("maximize", "amsgrad", "differentiable"):
            if group.get(flag):
                return f"{type(optimizer).__name__}({flag}=True)"
        if group.get("dampening"):
            return f"SGD(dampening={group['dampening']})"
    return None


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> list[dict[str, Tensor]]:
    """The optimizer's per-parameter state, created where torch.optim would create it on its first step.

    Returns one dict per parameter (in ``param_groups`` order), the same tensor objects as ``optimizer.state``,
    so in-place updates of them are the optimizer's own state.
    """
    states = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            if isinstance(optimizer, torch.optim.SGD) and group["momentum"] and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if isinstance(optimizer, torch.optim.Adam) and not state:
                on_device = group.get("capturable") or group.get("fused")
                state["step"] = torch.zeros((), device=param.device if on_device else None)
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            states.append(state)
    return states


class _Objective(nn.Module):
    """``loss_fn`` as a module whose parameters are those of ``owner``, for :func:`torch.func.functional_call`."""

    def __init__(self, owner: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.owner = owner
        self.loss_fn = loss_fn

    def forward(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss_fn(batch)


def loss_owner(loss_fn: LossFn) -> nn.Module | None:
    """The module whose parameters ``loss_fn`` reads: itself if a module, else the module of a bound method."""
    if isinstance(loss_fn, nn.Module):
        return loss_fn
    owner = getattr(loss_fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


class CompiledOrEager:
    """``compiled(*args)``; if its first call raises (compilation fails before anything runs), one warning line
    ``"<failure> (<why>); <fallback>."`` and ``eager(*args)`` from then on (:attr:`ok` turns ``False``)."""

    def __init__(self, compiled: Callable, eager: Callable, failure: str, fallback: str) -> None:
        self.compiled, self.eager = compiled, eager
        self.failure, self.fallback = failure, fallback
        self.ok = True
        self._ran = False  # a call has run the compiled function

    def __call__(self, *args: Any) -> Any:
        if self._ran:
            return self.compiled(*args)
        if not self.ok:
            return self.eager(*args)
        try:
            out = self.compiled(*args)
        except Exception as err:  # noqa: BLE001 - compilation fails before the call runs: fall back, say why
            warnings.warn(f"{self.failure} ({one_line(err)}); {self.fallback}.", stacklevel=3)
            self.ok = False
            return self.eager(*args)
        self._ran = True
        return out


class LoggedUpdate(TrainerHookBase):
    """An update run at ``pre_optim_steps`` whose metrics (``self.metrics``) the trainer logs at ``post_steps_log``.

    The trainer logs what a logging hook returns, at its frame count: the public path for a hook's scalars.
    """

    name: str
    metrics: dict[str, float]

    def log(self, batch: TensorDictBase | None = None) -> dict[str, float] | None:
        """The metrics of the last update, once (``None`` when there was none since)."""
        metrics, self.metrics = self.metrics, {}
        return metrics or None

    def register(self, trainer: Trainer, name: str | None = None) -> None:
        """Run at ``pre_optim_steps``, logged at ``post_steps_log``, checkpointed as ``name`` (default: its name)."""
        trainer.register_op("pre_optim_steps", self)
        trainer.register_op("post_steps_log", self.log)
        trainer.register_module(name or self.name, self)


# ------------------------------------------------------------------ the phase
class RegressionPhase(LoggedUpdate):
    """One of AWR's two supervised phases: ``steps`` minibatch updates of a loss method.

    ``loss_fn`` is :meth:`AWRLoss.value_loss` (critic phase) or
    :meth:`AWRLoss.actor_loss` (actor phase), or any module or module method
    returning ``(loss, metadata)``. At the start of a phase the buffer's
    ``keys`` are copied once into a phase buffer of the replay buffer's
    capacity on ``device`` (checked for non-finite values there), and
    minibatches are drawn from it by shuffled passes. A call returns the averaged loss and
    metadata under ``<name>/``; a non-finite average raises
    :class:`FloatingPointError`. Registered alone (behaviour cloning), it runs at ``pre_optim_steps`` and its
    metrics are logged at ``post_steps_log``; :class:`AWRUpdate` runs two of them.

    One update is a function of the minibatch indices. With ``compile=True``
    it is a single :func:`torch.compile` graph (see the module docstring):
    minibatch gather, loss, gradients and the SGD or Adam update, compiled once
    for the whole run; ``unroll`` steps per call of the graph where ``unroll``
    divides ``steps`` (else one). ``cudagraphs=True`` (CUDA only) captures the step as a
    CUDA graph (:class:`tensordict.nn.CudaGraphModule`), as TorchRL's
    sota-implementations do; build Adam with ``capturable=True`` then. The
    phase buffer keeps fixed addresses across phases, which a compiled or
    captured graph reads.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value
        >>> from torchrl.data import Bounded
        >>> loss = AWRLoss(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(1,))), make_awr_value(3))
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
        >>> data = TensorDict(observation=torch.randn(100, 3), value_target=torch.ones(100, 1), batch_size=[100])
        >>> _ = rb.extend(data)
        >>> critic_optim = torch.optim.SGD(loss.value_network.parameters(), lr=0.1)
        >>> phase = RegressionPhase("critic_phase", loss.value_loss, ["observation", "value_target"], rb,
        ...                         critic_optim, steps=50, batch_size=25)
        >>> before = loss.value_loss(rb.storage[:100])[0].item()
        >>> sorted(phase())
        ['critic_phase/explained_variance', 'critic_phase/loss']
        >>> loss.value_loss(rb.storage[:100])[0].item() < before
        True
    """

    def __init__(
        self,
        name: str,
        loss_fn: LossFn,
        keys: list,
        replay_buffer: ReplayBuffer,
        optimizer: torch.optim.Optimizer,
        steps: int,
        batch_size: int,
        clip_grad_norm: float | None = None,
        *,
        device: torch.device | str | None = None,
        compile: bool = False,
        cudagraphs: bool = False,
        unroll: int = 2,
    ) -> None:
        if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
            raise ValueError(f"{name}: unroll={unroll!r}; it must be an integer >= 1.")
        self.name = name
        self.loss_fn = loss_fn
        self.keys = keys
        self.replay_buffer = replay_buffer
        self.optimizer = optimizer
        self.steps = steps
        self.batch_size = batch_size
        self.clip_grad_norm = clip_grad_norm
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.device = torch.device(device) if device is not None else self.params[0].device
        if cudagraphs and self.device.type != "cuda":
            raise ValueError(f"{name}: cudagraphs=True needs a CUDA device, got device={str(self.device)!r}.")
        self._data: TensorDictBase | None = None
        self._columns: list[tuple[NestedKey, Tensor]] = []  # the (key, tensor) leaves of _data
        self._totals: dict[str, Tensor] | None = None
        self.metrics: dict[str, float] = {}
        owner = loss_owner(loss_fn)
        self.compiled = compile and self._can_compile(owner)
        self.unroll = unroll if self.compiled and steps % unroll == 0 else 1  # update steps per call of the graph
        if self.compiled:
            self._objective = _Objective(owner, loss_fn)
            names = {id(p): n for n, p in self._objective.named_parameters(remove_duplicate=False)}
            self._param_names = [names[id(p)] for p in self.params]
            self._update_fn = UPDATES[type(optimizer)]
            # size_asserts off: the graph's inputs are the fixed phase buffers, parameters, optimizer state and
            # [unroll, batch_size] indices; checking each input's shape on every call cost ~3% of a CPU step
            self._compiled_steps = CompiledOrEager(
                torch.compile(self._graph_steps, fullgraph=True, dynamic=False, options={"size_asserts": False}),
                self._eager_steps, f"{name}: compiling the update step failed", "updating eagerly",
            )
            self._state: list[dict[str, Tensor]] | None = None
            self._traced = self._graph_ready = False
        self._update = CudaGraphModule(self._steps, warmup=2) if cudagraphs else self._steps

    def _can_compile(self, owner: nn.Module | None) -> bool:
        reason = unsupported(self.optimizer)
        if reason is None and owner is None:
            reason = f"loss_fn {self.loss_fn!r} is neither a module nor a module's method"
        if reason is None and any(isinstance(m, TensorDictParams) for m in owner.modules()):
            # a functional TorchRL loss swaps its TensorDictParams into its networks itself, under functional_call
            reason = f"{type(owner).__name__}: it holds a functional loss (parameters in TensorDictParams)"
        if reason is None:
            owned = {id(p) for p in owner.parameters()}
            if not all(id(p) in owned for p in self.params):
                reason = "the optimizer holds parameters that the loss's module does not"
        if reason is not None:
            warnings.warn(f"{self.name}: compile=True cannot express {reason}; updating eagerly.", stacklevel=3)
        return reason is None

    # -------------------------------------------------------------- update steps
    def _eager_step(self, index: Tensor) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        # a TensorDict of the indexed entries: ~10 µs less than indexing the TensorDict itself
        batch = TensorDict({key: value[index] for key, value in self._columns}, batch_size=index.shape)
        loss, metadata = self.loss_fn(batch)
        loss.backward()
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.optimizer.step()
        return {"loss": loss.detach(), **metadata}

    def _objective_value(self, params: dict[str, Tensor], batch: TensorDictBase) -> tuple[Tensor, dict]:
        loss, metadata = functional_call(self._objective, params, (batch,), strict=False)
        return loss, {"loss": loss.detach(), **metadata}

    def _graph_step(self, index: Tensor) -> dict[str, Tensor]:
        batch = self._data[index]
        params = {name: p.detach() for name, p in zip(self._param_names, self.params, strict=True)}
        grads, (_, metrics) = grad_and_value(self._objective_value, has_aux=True)(params, batch)
        grads = [grads[name] for name in self._param_names]
        if self.clip_grad_norm is not None:  # torch.nn.utils.clip_grad_norm_'s rule
            total = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
            coef = (self.clip_grad_norm / (total + 1e-6)).clamp_max(1.0)
            grads = [g * coef for g in grads]
        with torch.no_grad():
            for group, offset in self._groups:
                end = offset + len(group["params"])
                self._update_fn(self.params[offset:end], grads[offset:end], self._state[offset:end], group)
        return metrics

    def _bind_optimizer_state(self) -> None:
        """Point the graph at the optimizer's state tensors and param groups (at the start, and after loading)."""
        self._state = init_optimizer_state(self.optimizer)
        offsets = [0]
        for group in self.optimizer.param_groups[:-1]:
            offsets.append(offsets[-1] + len(group["params"]))
        self._groups = list(zip(self.optimizer.param_groups, offsets, strict=True))

    def _add(self, metrics: dict[str, Tensor]) -> None:
        if self._totals is None:
            self._totals = {key: torch.zeros_like(value) for key, value in metrics.items()}
        torch._foreach_add_(list(self._totals.values()), list(metrics.values()))

    def _eager_steps(self, indices: Tensor) -> None:
        for index in indices.unbind(0):
            self._add(self._eager_step(index))

    def _graph_steps(self, indices: Tensor) -> None:
        """One graph step per row of ``indices``, their metrics added to the phase's sums: the compiled function."""
        for index in indices.unbind(0):
            self._add(self._graph_step(index))

    def _compiled_or_eager(self, indices: Tensor) -> None:
        if self._graph_ready:
            self._compiled_steps(indices)
        elif not self._traced:
            self._traced = True
            if self._state is None:
                self._bind_optimizer_state()
            # The first call runs the same function uncompiled: it registers tensordict's pytree nodes, whose
            # registry the graph's guards read (compiled first, the graph would be compiled twice).
            self._graph_steps(indices)
        else:
            self._graph_ready = True
            self._compiled_steps(indices)
            self.compiled = self._compiled_steps.ok  # a failed compilation: every later step eagerly

    def _steps(self, indices: Tensor) -> None:
        """``len(indices)`` update steps (``indices``: ``[unroll, batch_size]``), compiled or eager."""
        if self.compiled:
            self._compiled_or_eager(indices)
        else:
            self._eager_steps(indices)

    # -------------------------------------------------------------- the phase
    def _load(self) -> int:
        """Copy the buffer's ``keys`` into the fixed phase buffer; returns the number of transitions."""
        storage = self.replay_buffer.storage
        data = storage.get(chronological_indices(self.replay_buffer)).select(*self.keys)
        bad = [key for key, value in data.items(True, True) if not torch.isfinite(value).all()]
        if bad:
            raise ValueError(f"{self.name}: non-finite values in replay buffer entries {bad}; they must be finite.")
        if self._data is None:
            self._data = data[0].to(self.device).expand(storage.max_size).clone()
            self._columns = list(self._data.items(True, True))  # filled in place from here on
        n = data.shape[0]
        self._data[:n].update_(data)
        return n

    def __call__(self) -> dict[str, float]:
        """Run the phase; returns (and keeps for :meth:`log`) the averaged loss and metadata under ``<name>/``."""
        if self.steps == 0:
            return {}
        n = self._load()
        if self._totals is not None:
            torch._foreach_zero_(list(self._totals.values()))
        minibatches = torch.stack(list(shuffled_indices(n, self.batch_size, self.steps, self.device)))
        unrolled = self.steps - self.steps % self.unroll  # all, unless steps changed since (an offline last round)
        calls = iter(minibatches[:unrolled].view(-1, self.unroll, self.batch_size).unbind(0))
        with inputs_checked():  # _load checked the phase buffer: the loss need not check each minibatch
            for indices in calls:  # until a call has run this phase's graph with its guards checked
                self._update(indices)
                if self.compiled and self._graph_ready:
                    break
            # Nothing the guards check changes within a phase: the other calls skip them (~15% of a CPU step).
            with torch.compiler.set_stance(skip_guard_eval_unsafe=self.compiled):
                for indices in calls:
                    self._update(indices)
            self._eager_steps(minibatches[unrolled:])  # the last steps % unroll, if any: no graph of that shape
        names = list(self._totals)
        means = (torch.stack([self._totals[k].float() for k in names]) / self.steps).tolist()  # one sync per phase
        metrics = {f"{self.name}/{k}": v for k, v in zip(names, means, strict=True)}
        if not math.isfinite(metrics[f"{self.name}/loss"]):
            raise FloatingPointError(f"{self.name}: the loss became non-finite ({metrics[f'{self.name}/loss']}).")
        self.metrics = metrics
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        if self.compiled:  # load_state_dict replaces the state tensors and groups: the graph must read the new ones
            self._bind_optimizer_state()


# ------------------------------------------------------------------ one AWR update
RELABEL = ("refresh", "once")  # offline.relabel


class CompiledCritic:
    """``V(s)`` of a batch of states through ``loss``'s value network, compiled once with a symbolic batch size.

    The :data:`~torchrl_awr.targets.Critic` that :class:`AWRUpdate` with ``compile=True`` gives :func:`relabel`
    for its passes over the whole buffer (chunks of any size reuse one graph; a chunk of one row compiles a
    second). Where compilation fails it warns once and runs the network eagerly.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value
        >>> loss = AWRLoss(make_awr_actor(3, Bounded(-1.0, 1.0, shape=(1,))), make_awr_value(3))
        >>> states = TensorDict(observation=torch.randn(100, 3), batch_size=[100])
        >>> with torch.no_grad():
        ...     torch.allclose(CompiledCritic(loss)(states), loss.value_network(states.copy())["state_value"])
        True
    """

    def __init__(self, loss: AWRLoss) -> None:
        eager = value_network_pass(loss)
        self._pass = CompiledOrEager(
            torch.compile(eager, dynamic=True), eager, "relabel: compiling the critic failed", "running it eagerly"
        )

    @property
    def compiled(self) -> bool:
        """``False`` once compilation failed (the network then runs eagerly)."""
        return self._pass.ok

    def __call__(self, states: TensorDictBase) -> Tensor:
        # detached: no view of a larger chunked buffer reaches the graph (its guards would compile a second one)
        return self._pass(states.detach())


class AWRUpdate(LoggedUpdate):
    """One AWR update over the whole replay buffer: the paper's Algorithm 1 after collection.

    Read :meth:`__call__` top to bottom: TD(λ) returns with the current critic, the critic phase, advantages
    with the new critic, the actor phase. ``relabel="refresh"`` (the original, online and offline) recomputes
    the TD(λ) returns over the whole buffer before each phase; ``relabel="once"`` (offline) computes them once,
    at the first update, keeps them (in its checkpointed state too), and only refreshes the advantages
    ``A = R − V(s)``. Advantages are standardised where the loss's ``normalize_advantage`` says (``"buffer"``:
    over the whole buffer, here). Stage: ``pre_optim_steps``; metrics logged at ``post_steps_log``.

    Args:
        loss_module: the :class:`~torchrl_awr.AWRLoss`.
        replay_buffer: the buffer both phases read (flat storage of transitions, with target slots).
        actor_optimizer / critic_optimizer: one per phase.

    Keyword Args:
        actor_steps, critic_steps, batch_size: the phases' sizes (1000, 200, 256).
        relabel: ``"refresh"`` or ``"once"``.
        device, compile, cudagraphs, unroll: for both :class:`RegressionPhase` (see there); ``compile`` also
            compiles the critic's passes over the buffer (:class:`CompiledCritic`).

    Examples:
        >>> import torch
        >>> from torchrl.collectors import Collector
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl_awr import AWRLoss, make_awr_actor, make_awr_value, make_env
        >>> from torchrl_awr.buffers import with_target_slots
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> loss = AWRLoss(make_awr_actor(3, env.action_spec), make_awr_value(3), normalize_advantage="buffer")
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(1000))
        >>> batch = next(iter(Collector(env, loss.actor_network, frames_per_batch=200, total_frames=200)))
        >>> _ = rb.extend(with_target_slots(batch))
        >>> update = AWRUpdate(loss, rb, torch.optim.Adam(loss.actor_network.parameters()),
        ...                    torch.optim.Adam(loss.value_network.parameters()), actor_steps=5, critic_steps=5,
        ...                    batch_size=64)
        >>> update()
        >>> sorted(k for k in update.log() if k.endswith("/loss"))
        ['actor_phase/loss', 'critic_phase/loss']
    """

    name = "awr_update"

    def __init__(
        self,
        loss_module: AWRLoss,
        replay_buffer: ReplayBuffer,
        actor_optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        *,
        actor_steps: int = 1000,
        critic_steps: int = 200,
        batch_size: int = 256,
        relabel: str = "refresh",
        device: torch.device | str | None = None,
        compile: bool = False,
        cudagraphs: bool = False,
        unroll: int = 2,
    ) -> None:
        if relabel not in RELABEL:
            raise ValueError(f"relabel={relabel!r} is not allowed; choose one of {', '.join(RELABEL)}.")
        self.loss_module = loss_module
        self.replay_buffer = replay_buffer
        self.relabel = relabel
        self.fixed_targets: Tensor | None = None  # relabel="once": the returns kept from the first update
        self.critic_pass: Critic | None = CompiledCritic(loss_module) if compile else None  # relabel's V(s) passes
        keys = loss_module.tensor_keys
        phase = {"replay_buffer": replay_buffer, "batch_size": batch_size, "device": device, "compile": compile,
                 "cudagraphs": cudagraphs, "unroll": unroll}
        self.critic_phase = RegressionPhase(
            "critic_phase", loss_module.value_loss, [*loss_module.value_network.in_keys, keys.value_target],
            optimizer=critic_optimizer, steps=critic_steps, **phase,
        )
        self.actor_phase = RegressionPhase(
            "actor_phase", loss_module.actor_loss, [*loss_module.actor_network.in_keys, keys.action, keys.advantage],
            optimizer=actor_optimizer, steps=actor_steps, **phase,
        )
        self.metrics: dict[str, float] = {}

    def __call__(self) -> None:
        buffer, loss = self.replay_buffer, self.loss_module
        if self.relabel == "refresh" or self.fixed_targets is None:
            relabel(buffer, loss, critic=self.critic_pass)  # R: TD(λ) returns over the whole buffer with the current V
            self._keep_targets()
        critic = self.critic_phase()  # V ← argmin E ‖R − V(s)‖²
        if self.relabel == "refresh":
            targets = relabel(buffer, loss, critic=self.critic_pass)  # R and A = R − V(s) with the new V
        else:
            targets = refresh_advantages(buffer, loss, critic=self.critic_pass)  # A = R − V(s) with the new V, kept R
        actor = self.actor_phase()  # π ← argmax E[log π(a|s) · min(exp(A/β), max_weight)]
        self.metrics = {**critic, **{f"relabel/{k}": v for k, v in targets.items()}, **actor}

    def _keep_targets(self) -> None:
        if self.relabel == "once":
            n = len(self.replay_buffer)
            self.fixed_targets = self.replay_buffer.storage[:n].get(self.loss_module.tensor_keys.value_target).clone()

    def state_dict(self) -> dict[str, Any]:
        state = {"critic_phase": self.critic_phase.state_dict(), "actor_phase": self.actor_phase.state_dict()}
        if self.fixed_targets is not None:
            state["value_target"] = self.fixed_targets.cpu()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.critic_phase.load_state_dict(state_dict["critic_phase"])
        self.actor_phase.load_state_dict(state_dict["actor_phase"])
        targets = state_dict.get("value_target")
        if targets is not None:
            n = targets.shape[0]
            self.fixed_targets = targets.to(self.replay_buffer.storage[:n].device)
            key = self.loss_module.tensor_keys.value_target
            self.replay_buffer.storage[torch.arange(n)] = TensorDict({key: self.fixed_targets}, batch_size=[n])


class BCObjective(nn.Module):
    """TorchRL's :class:`~torchrl.objectives.BCLoss` as a phase's ``(loss, metadata)`` function."""

    def __init__(self, bc_loss: BCLoss) -> None:
        super().__init__()
        self.bc_loss = bc_loss

    def forward(self, batch: TensorDictBase) -> tuple[Tensor, dict[str, Tensor]]:
        return self.bc_loss(batch).get("loss_bc"), {}
