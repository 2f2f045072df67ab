"""Run configuration: one dataclass per part, per-task presets, ``key=value`` overrides.

The defaults are the measured best (``recipe=tuned``, a compiled update, one
torch thread; BENCHMARKS.md); ``recipe=original`` gives the original
implementation's settings (its per-task presets are ``PRESETS``). Overrides use
the Hydra/OmegaConf dot-list syntax (``loss.beta=0.5 optim.actor_lr=1e-4``),
which is also what a W&B sweep agent passes with ``${args_no_hyphens}``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchrl_awr.buffers import MIXES
from torchrl_awr.collectors import BACKENDS
from torchrl_awr.datasets import SOURCES
from torchrl_awr.models import ACTIVATIONS
from torchrl_awr.update import RELABEL


@dataclass
class EnvConfig:
    name: str = "HalfCheetah-v5"
    num_envs: int = 32  # gymnasium sync vector env in one process: 0.5x raw gymnasium frames/s (8 envs: 0.22x)


@dataclass
class CollectorConfig:
    total_frames: int = 1_000_000  # rounded up to whole batches (1,001,472 with 2048-frame batches)
    frames_per_batch: int = 2048  # the original's samples per iteration
    backend: str = "single"  # single (this process) | multi (worker processes) | ray (Ray actors); collectors.py
    num_workers: int = 1  # workers with backend=multi|ray, each stepping env.num_envs envs
    ray_address: str = ""  # backend=ray: empty starts a local Ray instance; auto | ray://host:port joins a cluster
    # false (backend=multi): each worker collects its next batch of frames_per_batch while the learner updates
    # (batches come from the weights before the last actor phase); true: workers and learner take turns
    sync: bool = True


@dataclass
class BufferConfig:
    size: int = 50_000
    storage: str = "tensor"  # tensor | memmap
    save: bool = False  # dump the final buffer to <output_dir>/replay_buffer (train_offline.py dataset.source=buffer)


@dataclass
class ModelConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 64])
    activation: str = "relu"  # relu (the original) | elu | tanh, in actor and critic
    layer_norm: bool = False  # a LayerNorm after each hidden linear layer of actor and critic
    action_std: float = 0.2
    learn_std: bool = False
    tanh: bool = False  # a tanh-squashed Gaussian (TorchRL's TanhNormal) inside the bounds; false: the original's
    normalizer_samples: int = 100_000
    observation_clip: float = 0.0  # standardised observations clamped to ±this (0: not clamped, the original)


@dataclass
class LossConfig:
    beta: float = 1.0
    max_weight: float = 20.0
    gamma: float = 0.99
    lmbda: float = 0.95
    # buffer (the original: standardised once over the whole replay buffer) | batch (per minibatch) | none
    normalize_advantage: str = "buffer"
    action_bound_penalty: float = 10.0
    entropy_coeff: float = 0.0


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd (momentum, the original) | adam
    actor_lr: float = 5e-5
    critic_lr: float = 1e-2
    momentum: float = 0.9
    actor_steps: int = 1000
    critic_steps: int = 200
    batch_size: int = 256
    # each update step (minibatch, loss, gradients, SGD/Adam update) as one torch.compile graph; false: eager
    compile: bool = True
    # compile: update steps per call of a phase's graph, where it divides the phase's steps (else 1); 2 ran the
    # learner phase in 0.82x the time of 1, compiling ~15 s longer (BENCHMARKS.md "Two update steps per call ...")
    unroll: int = 2
    cudagraphs: bool = False  # capture each phase's update step as a CUDA graph (device=cuda)


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | csv | tensorboard | none
    mode: str = "offline"  # offline | online | disabled (wandb only)
    project: str = "torchrl-awr"
    group: str = ""


@dataclass
class EvalConfig:
    interval: int = 10  # AWR iterations between deterministic evaluations
    episodes: int = 5


@dataclass
class CheckpointConfig:
    interval: int = 10  # AWR iterations between checkpoints
    keep_last: int = 2


@dataclass
class DatasetConfig:
    """A dataset to learn from: offline (``scripts/train_offline.py``) or, online, to start from
    (``scripts/train_mujoco.py``: ``offline.steps`` of offline pre-training, then online learning over the dataset
    and new experience, mixed by ``mix``). Read by ``torchrl_awr.datasets``."""

    source: str = "buffer"  # buffer (a buffer.save dir) | minari (a local Minari root) | hdf5 (a D4RL-style file)
    path: str = ""  # the run's output dir or its replay_buffer/; the Minari datasets root; the .hdf5 file
    name: str = ""  # source=minari: the dataset id under path (e.g. pendulum/mixed-v0)
    # online: evict (new data evicts it, as in one FIFO buffer of buffer.size; best measured, BENCHMARKS.md
    # "Offline to online") | keep (the dataset beside a FIFO of new data) | anneal (its share to 0 over anneal_frames)
    mix: str = "evict"
    anneal_frames: int = 500_000


@dataclass
class OfflineConfig:
    # policy gradient steps (each round: critic_steps critic + actor_steps actor steps); train_mujoco.py with a
    # dataset: pre-training steps before collection starts (0: put the data in the buffer and go online at once)
    steps: int = 100_000
    algo: str = "awr"  # awr | bc (behaviour cloning with TorchRL's BCLoss, the baseline AWR must beat)
    relabel: str = "refresh"  # refresh (TD(lambda) targets recomputed before each phase, as online) | once


@dataclass
class AWRConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    # tuned (RECIPES: Adam, β, buffer size, LayerNorm + ELU per task, measured) | original (the paper's)
    recipe: str = "tuned"
    seed: int = 0
    # torch threads of the learner process and of each collector worker; BENCHMARKS.md "Fast by default" (Threads)
    threads: int = 1
    device: str = "cpu"
    output_dir: str = ""  # default: outputs/<env>/<timestamp>-s<seed>
    resume: str = ""  # an output dir of a killed run to continue
    init_policy: str = ""  # a run's policy.pt (value.pt beside it, if any, for the critic) to start from
    overwrite: bool = False  # a new run may use an output_dir that holds a run: it is emptied first


# The original's per-task settings (AWR_REFERENCE.md); everything else keeps the defaults above.
PRESETS: dict[str, dict[str, object]] = {
    "HalfCheetah": {"optim.actor_lr": 5e-5, "model.action_std": 0.4, "model.normalizer_samples": 300_000},
    "Hopper": {"optim.actor_lr": 1e-4, "model.action_std": 0.4, "model.normalizer_samples": 300_000},
    "Walker2d": {"optim.actor_lr": 2.5e-5, "model.action_std": 0.4, "model.normalizer_samples": 300_000},
    "Ant": {"optim.actor_lr": 5e-5, "model.action_std": 0.2, "model.normalizer_samples": 300_000},
    "Humanoid": {"optim.actor_lr": 5e-5, "model.action_std": 0.2, "model.normalizer_samples": 300_000},
    "LunarLander": {"optim.actor_lr": 5e-4, "model.normalizer_samples": 100_000},
}

# Settings measured against the original's at 1M frames (BENCHMARKS.md "A tuned recipe"), chosen by ``recipe=``:
# a task's own entry, else "*", on top of the task's PRESETS entry. HalfCheetah's 25k-sample buffer was better on
# each of 4 seeds (mean 5525 against 5101 with 50k). Hopper keeps the original's SGD and β = 1: Adam reached 3068
# there on average against SGD's 3310 (3 seeds each), and β = 0.5 stalled both seeds below 1100. LayerNorm with
# ELU in both networks (BENCHMARKS.md "LayerNorm and ELU", 3 seeds each): HalfCheetah 6303 against 5629 and Walker2d
# 4761 against 3449, LunarLander 268 against 168; on Hopper it lost over 5 seeds (2295 against 2573), so Hopper keeps
# the plain MLP, and on Ant its one seed ended at 407 against 699. Hopper fits its critic twice as long (400 steps per
# iteration): 2914 against 2573 over 5 seeds, better on 4 of them (on HalfCheetah one seed lost: 4650 against 6035).
# Ant explored with an action std of 0.1 instead of the original's 0.2 (BENCHMARKS.md "Fresher batches, ..."):
# 1879, 1746, 1662 at 1M (3 seeds) against 699 with 0.2 (one seed; 917 for the original recipe over 3) and 164, 343
# with 0.4: the noisier the actions, the more often the ant falls. Hopper then collects 1024 frames per iteration
# instead of 2048, with half of each phase's steps (still 400 critic steps per 2048 frames) and evaluations and
# checkpoints every 20 iterations (every 20,480 frames, as before): 3531, 3338, 3398, 3421, 3494 at 1M against 3273,
# 3357, 3207, 1377, 3357 (seeds 0-4), mean 3436 against 2914. On HalfCheetah (6219 against 5944 over 5 seeds, within
# the spread, 1.07x the time) and Walker2d (3200, 4229 against 4373, 4458) it did not win. HalfCheetah fits its actor
# with 500 steps per iteration instead of 1000 (BENCHMARKS.md "Half the actor steps"): 6193, 6378, 6438, 5317, 5429
# at 1M (seeds 0-4, mean 5951) against 4885, 6455, 5847, 6700, 5834 (5944), in 0.72x the wall time; so does Walker2d:
# 4237, 4771, 5397 (4802) against 4594, 4457, 5231 (4761), each run ~3 minutes shorter.
# Ant's action std went down once more, to 0.05: 2067, 1749, 2167 (mean 1994) against 0.1's 1879, 1746, 1662.
# HalfCheetah's β then went from 0.5 to 0.4 and 0.3 (BENCHMARKS.md "A smaller β on HalfCheetah"): 0.4 reached 7553,
# 6274, 6745, 6234, 5709 at 1M (seeds 0-4, mean 6503) against 5951, and 0.3 then 7302, 6791, 6607, 6476, 6710 (6777);
# half its critic steps lost with β 0.4 (5859). It evaluates and checkpoints every 20 iterations (40,960 frames)
# instead of 10: evaluations held 14.6% of a profiled run's samples; seed 0 with each interval ends at 7334 and 7302
# (β 0.3) and at 7591 and 7553 (β 0.4), the curves within 1% of each other up to 250k frames.
# Ant fits its actor with 500 steps per iteration too: 2660, 1998, 2431 (mean 2363) against 2067, 1749, 2167,
# better on each seed, each run ~4 minutes shorter; an actor lr of 3e-4 lost there (1721, 1582 on seeds 0, 1).
# Then with 250 (BENCHMARKS.md "Ant with 250 actor steps, ..."): 2698, 2287, 2332 (mean 2439) against 500's 2660,
# 1998, 2431: better on 2 of 3 seeds, within their spread, in ~0.9x the time (seeds 3, 4: 2527, 2348; five-seed mean
# 2438; LayerNorm + ELU 2430 over the same five, β 0.5 2756, 738: neither kept). Humanoid's plain-MLP default re-run on
# this machine (BENCHMARKS.md "Ant with 250 actor steps, and Humanoid re-measured") ends at 618, 560, 745 (mean 641);
# with LayerNorm + ELU 732, 725, 552 (670; last three evaluations 688 against 626): better on 2 of 3 seeds, within
# their spread, as on HalfCheetah, Walker2d and LunarLander.
# Ant's β then went from 1 to 0.7 (BENCHMARKS.md "Ant: 400 critic steps, ..."): 2522, 2637, 2836, 2293, 2559 at 1M
# (seeds 0-4, mean 2569) against β 1's 2698, 2287, 2332, 2527, 2348 (2438); a 25k buffer (2394 over seeds 0-3), 400
# critic steps (2247, seeds 0, 1) and a tanh-squashed Gaussian (2036, seed 0) lost there.
# Hopper's action std went from the original's 0.4 to 0.3 (BENCHMARKS.md "Hopper's action std of 0.3 over ten
# seeds"): 3396 ± 87 at 1M over seeds 0-9 against 3165 ± 610 (one seed stalled at 1476), and back to 0.4 when both
# ran on seeds 10-14 (BENCHMARKS.md "Hopper over fifteen seeds, ..."): 0.3 stalled there too (640, no hop by 1M) and
# 0.4 did not (3263-3307), so over fifteen seeds 0.4 leads, 3204 ± 493 against 3170 ± 710, within the spread
# (p = 0.85), and its mean curve is ahead from ~500k to ~900k frames.
# HalfCheetah's weight clip went from 20 to 100 (BENCHMARKS.md "Hopper's action std of 0.3 over ten seeds; ..."):
# 6112 at 1M over seeds 0-14 against 5899 (+177 on seeds 0-9, +285 on seeds 10-14; last three evaluations 6190
# against 5895), within the seeds' spread (permutation p = 0.46) but ahead in both batches, at no cost.
_ADAM = {"optim.optimizer": "adam", "optim.actor_lr": 1e-4, "optim.critic_lr": 1e-3}
_LN_ELU = {"model.layer_norm": True, "model.activation": "elu"}
_EVERY_20 = {"eval.interval": 20, "checkpoint.interval": 20}  # iterations: HalfCheetah 40,960 frames, Hopper 20,480
RECIPES: dict[str, dict[str, dict[str, object]]] = {
    "original": {},
    "tuned": {
        "*": _ADAM,
        "HalfCheetah": {
            **_ADAM,
            **_LN_ELU,
            "loss.beta": 0.3,
            "loss.max_weight": 100.0,
            "buffer.size": 25_000,
            "optim.actor_steps": 500,
            **_EVERY_20,
        },
        "Walker2d": {**_ADAM, **_LN_ELU, "loss.beta": 0.5, "optim.actor_steps": 500},
        "Hopper": {  # half the frames per iteration, and half the steps: the same updates per frame, on fresher data
            "collector.frames_per_batch": 1024,
            "optim.actor_steps": 500,
            "optim.critic_steps": 200,
            **_EVERY_20,
        },
        "Ant": {**_ADAM, "model.action_std": 0.05, "optim.actor_steps": 250, "loss.beta": 0.7},
        "Humanoid": {**_ADAM, **_LN_ELU},
        "LunarLander": {**_ADAM, **_LN_ELU},
    },
}

CHOICES = {
    "recipe": tuple(RECIPES),
    "buffer.storage": ("tensor", "memmap"),
    "optim.optimizer": ("sgd", "adam"),
    "model.activation": tuple(ACTIVATIONS),
    "logger.backend": ("wandb", "csv", "tensorboard", "none"),
    "logger.mode": ("offline", "online", "disabled"),
    "device": ("cpu", "cuda", "auto"),
    "loss.normalize_advantage": ("buffer", "batch", "none"),
    "dataset.source": SOURCES,
    "offline.algo": ("awr", "bc"),
    "offline.relabel": RELABEL,
    "dataset.mix": MIXES,
    "collector.backend": BACKENDS,
}
POSITIVE = (
    "loss.beta",
    "loss.max_weight",
    "collector.total_frames",
    "collector.frames_per_batch",
    "buffer.size",
    "env.num_envs",
    "collector.num_workers",
    "optim.actor_lr",
    "optim.critic_lr",
    "optim.batch_size",
    "optim.unroll",
    "model.action_std",
    "eval.interval",
    "eval.episodes",
    "checkpoint.interval",
    "checkpoint.keep_last",
    "dataset.anneal_frames",
    "threads",
)


def preset_for(env_name: str, recipe: str = "original") -> dict[str, object]:
    """A task's settings under a recipe, matched on the id's name without version.

    Examples:
        >>> preset_for("Hopper-v5")["optim.actor_lr"]
        0.0001
        >>> preset_for("CartPole-v1")
        {}
        >>> tuned = preset_for("Walker2d-v5", "tuned")
        >>> tuned["optim.optimizer"], tuned["optim.actor_lr"], tuned["loss.beta"], tuned["model.action_std"]
        ('adam', 0.0001, 0.5, 0.4)
        >>> tuned["model.layer_norm"], tuned["model.activation"]
        (True, 'elu')
        >>> hopper = preset_for("Hopper-v5", "tuned")
        >>> hopper["collector.frames_per_batch"], hopper["optim.critic_steps"], hopper["optim.actor_lr"]
        (1024, 200, 0.0001)
    """
    task = env_name.split("-")[0].split("/")[-1]
    settings = RECIPES[recipe]
    return {**PRESETS.get(task, {}), **settings.get(task, settings.get("*", {}))}


def all_keys(cfg: DictConfig | None = None, prefix: str = "") -> list[str]:
    """Every overridable dotted key."""
    cfg = OmegaConf.structured(AWRConfig) if cfg is None else cfg
    keys = []
    for name, value in cfg.items():
        if isinstance(value, DictConfig):
            keys += all_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def help_text(prog: str) -> str:
    """``--help`` of a training script: every key with its default and, where limited, its allowed values.

    Read from :class:`AWRConfig` and ``CHOICES`` / ``POSITIVE``, so it cannot drift from what
    :func:`load_config` accepts. Defaults shown are before the task preset of ``recipe``.
    """
    defaults = OmegaConf.structured(AWRConfig)
    lines = [f"usage: {prog} [key=value ...]   (resume=<output_dir> continues a run)", "", "keys (default):"]
    for key in all_keys():
        value = OmegaConf.select(defaults, key)
        allowed = f"  one of: {', '.join(CHOICES[key])}" if key in CHOICES else "  > 0" if key in POSITIVE else ""
        lines.append(f"  {key}={value!r}{allowed}")
    lines.append(f"presets per task under recipe= ({', '.join(RECIPES)}) change some defaults; see README.")
    return "\n".join(lines)


def load_config(overrides: list[str], base: DictConfig | None = None) -> DictConfig:
    """Defaults ← task preset under ``recipe`` ← ``key=value`` overrides, validated.

    With ``base`` (the saved config of a run being resumed) the overrides apply
    on top of it and no preset or recipe is applied again.

    Raises:
        ValueError: one line naming the bad override and what is allowed.

    Examples:
        >>> cfg = load_config(["env.name=Hopper-v5", "loss.beta=0.5"])
        >>> cfg.optim.actor_lr, cfg.loss.beta
        (0.0001, 0.5)
        >>> load_config(["recipe=tuned"]).optim.optimizer
        'adam'
        >>> load_config(["loss.betta=0.5"])
        Traceback (most recent call last):
        ...
        ValueError: unknown override key 'loss.betta'; did you mean 'loss.beta'?
    """
    keys = all_keys()
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+")
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. loss.beta=0.5).")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(keys)}."
            raise ValueError(f"unknown override key {key!r}; {hint}")
    schema = OmegaConf.structured(AWRConfig)
    try:
        cli = OmegaConf.from_dotlist([item.lstrip("+") for item in overrides])
        if base is None:
            chosen = OmegaConf.merge(schema, cli)
            check_choice(chosen, "recipe")
            preset = preset_for(chosen.env.name, chosen.recipe)
            cfg = OmegaConf.merge(schema, OmegaConf.from_dotlist([f"{k}={v}" for k, v in preset.items()]), cli)
        else:
            cfg = OmegaConf.merge(schema, base, cli)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ValueError(f"bad override {key or ''}: {str(err).splitlines()[0]}".replace(" :", ":")) from None
    validate(cfg)
    return cfg


def check_choice(cfg: DictConfig, key: str) -> None:
    """One-line ``ValueError`` if ``key`` holds a value outside ``CHOICES[key]``."""
    value = OmegaConf.select(cfg, key)
    if value not in CHOICES[key]:
        raise ValueError(f"{key}={value!r} is not allowed; choose one of {', '.join(CHOICES[key])}.")


def validate(cfg: DictConfig) -> None:
    """One-line ``ValueError`` for a value outside what a key allows."""
    for key in CHOICES:
        check_choice(cfg, key)
    for key in POSITIVE:
        value = OmegaConf.select(cfg, key)
        if not value > 0:
            raise ValueError(f"{key}={value!r} is invalid; it must be > 0.")
    for key in ("optim.actor_steps", "optim.critic_steps", "model.normalizer_samples", "model.observation_clip",
                "loss.entropy_coeff", "offline.steps"):
        if OmegaConf.select(cfg, key) < 0:
            raise ValueError(f"{key}={OmegaConf.select(cfg, key)!r} is invalid; it must be >= 0.")
    if not (0 <= cfg.loss.gamma <= 1 and 0 <= cfg.loss.lmbda <= 1):
        raise ValueError(f"loss.gamma={cfg.loss.gamma!r}, loss.lmbda={cfg.loss.lmbda!r}: both must lie in [0, 1].")
    if cfg.optim.cudagraphs and cfg.device == "cpu":
        raise ValueError("optim.cudagraphs=true captures CUDA graphs: it needs device=cuda (or auto on a GPU machine).")
    if not cfg.collector.sync and cfg.collector.backend != "multi":
        raise ValueError(
            f"collector.sync=false needs collector.backend=multi (worker processes), got {cfg.collector.backend!r}."
        )
    # a synchronous collector splits a batch among its workers; an asynchronous one takes each from one worker
    split = cfg.collector.backend in ("multi", "ray") and cfg.collector.sync
    workers = cfg.collector.num_workers if split else 1
    if cfg.collector.frames_per_batch % (cfg.env.num_envs * workers):
        stepped = f"env.num_envs={cfg.env.num_envs}" + (f" x collector.num_workers={workers}" if workers > 1 else "")
        raise ValueError(
            f"collector.frames_per_batch={cfg.collector.frames_per_batch} must be a multiple of the envs stepped "
            f"together ({stepped})."
        )


def to_flat_dict(cfg: DictConfig) -> dict[str, object]:
    """``{"loss.beta": 1.0, ...}``: the resolved config under the same dotted keys the overrides use.

    W&B sweeps name their parameters this way, so the run's config and the swept values line up key for key.

    Examples:
        >>> to_flat_dict(load_config(["recipe=original"]))["loss.beta"]
        1.0
    """
    values = {key: OmegaConf.select(cfg, key) for key in all_keys(cfg)}
    return {key: OmegaConf.to_container(v) if isinstance(v, ListConfig) else v for key, v in values.items()}
