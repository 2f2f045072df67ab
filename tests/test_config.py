"""Run configuration: defaults, per-task presets, overrides and their validation."""

import pytest
from omegaconf import OmegaConf

from torchrl_awr.config import AWRConfig, all_keys, load_config, preset_for
from torchrl_awr.envs import check_env_id


def _one_line_error(overrides: list[str]) -> str:
    with pytest.raises(ValueError) as info:
        load_config(overrides)
    message = str(info.value)
    assert "\n" not in message, f"the error message must be one line, got {message!r}"
    return message


# --------------------------------------------------------------------------------------------- defaults


def test_defaults_are_the_tuned_recipe_compiled_on_one_thread():
    cfg = load_config([])
    assert (cfg.recipe, cfg.optim.compile, cfg.threads) == ("tuned", True, 1)
    # HalfCheetah's tuned entry on top of its preset (BENCHMARKS.md "A tuned recipe")
    assert (cfg.optim.optimizer, cfg.optim.actor_lr, cfg.optim.critic_lr) == ("adam", 1e-4, 1e-3)
    assert (cfg.loss.beta, cfg.buffer.size) == (0.3, 25_000)  # BENCHMARKS.md "A smaller β on HalfCheetah"
    assert (cfg.model.layer_norm, cfg.model.activation) == (True, "elu")  # BENCHMARKS.md "LayerNorm and ELU"
    assert (cfg.optim.actor_steps, cfg.optim.critic_steps) == (500, 200)  # BENCHMARKS.md "Half the actor steps"


def test_recipe_original_is_the_original_awr_settings():
    cfg = load_config(["recipe=original"])
    assert cfg.env.name == "HalfCheetah-v5"
    assert cfg.optim.optimizer == "sgd"
    assert cfg.optim.critic_lr == pytest.approx(1e-2)
    assert cfg.optim.momentum == pytest.approx(0.9)
    assert cfg.optim.actor_steps == 1000
    assert cfg.optim.critic_steps == 200
    assert cfg.optim.batch_size == 256
    assert cfg.loss.beta == pytest.approx(1.0)
    assert cfg.loss.max_weight == pytest.approx(20.0)
    assert cfg.loss.gamma == pytest.approx(0.99)
    assert cfg.loss.lmbda == pytest.approx(0.95)
    assert cfg.loss.normalize_advantage == "buffer"
    assert cfg.loss.action_bound_penalty == pytest.approx(10.0)
    assert cfg.buffer.size == 50_000
    assert cfg.collector.frames_per_batch == 2048
    assert list(cfg.model.hidden_sizes) == [128, 64]
    assert cfg.model.learn_std is False


# ---------------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("env_name", "actor_lr", "action_std", "normalizer_samples"),
    [
        ("HalfCheetah-v5", 5e-5, 0.4, 300_000),
        ("Hopper-v5", 1e-4, 0.4, 300_000),
        ("Walker2d-v5", 2.5e-5, 0.4, 300_000),
        ("Ant-v5", 5e-5, 0.2, 300_000),
        ("Humanoid-v5", 5e-5, 0.2, 300_000),
    ],
)
def test_task_presets(env_name, actor_lr, action_std, normalizer_samples):
    cfg = load_config([f"env.name={env_name}", "recipe=original"])  # the presets alone: the original's settings
    assert cfg.env.name == env_name
    assert cfg.optim.actor_lr == pytest.approx(actor_lr)
    assert cfg.model.action_std == pytest.approx(action_std)
    assert cfg.model.normalizer_samples == normalizer_samples
    # presets change nothing shared by every task
    assert cfg.optim.critic_lr == pytest.approx(1e-2)
    assert cfg.optim.actor_steps == 1000


def test_unknown_task_keeps_defaults():
    assert preset_for("CartPole-v1") == {}
    cfg = load_config(["env.name=CartPole-v1", "recipe=original"])
    schema = OmegaConf.structured(AWRConfig)
    assert cfg.optim.actor_lr == pytest.approx(schema.optim.actor_lr)
    assert cfg.model.action_std == pytest.approx(schema.model.action_std)
    assert cfg.model.normalizer_samples == schema.model.normalizer_samples
    assert cfg.model.action_std == pytest.approx(0.2)
    assert cfg.model.normalizer_samples == 100_000


def test_preset_matches_namespaced_ids_without_version():
    assert preset_for("Hopper-v4")["optim.actor_lr"] == pytest.approx(1e-4)
    assert preset_for("gymnasium/Walker2d-v5")["optim.actor_lr"] == pytest.approx(2.5e-5)


def test_preset_for_returns_a_copy():
    preset_for("Hopper-v5")["optim.actor_lr"] = 1.0
    assert preset_for("Hopper-v5")["optim.actor_lr"] == pytest.approx(1e-4)


def test_cli_override_beats_preset():
    cfg = load_config(["env.name=Hopper-v5", "optim.actor_lr=3e-3", "model.action_std=0.7"])
    assert cfg.optim.actor_lr == pytest.approx(3e-3)
    assert cfg.model.action_std == pytest.approx(0.7)
    assert cfg.model.normalizer_samples == 300_000  # the rest of the preset still applies
    # order of the overrides does not matter
    cfg = load_config(["optim.actor_lr=3e-3", "env.name=Walker2d-v5"])
    assert cfg.optim.actor_lr == pytest.approx(3e-3)
    assert cfg.model.action_std == pytest.approx(0.4)


def test_base_config_is_not_re_preset():
    base = load_config(["env.name=Hopper-v5", "optim.actor_lr=7e-4"])
    cfg = load_config(["loss.beta=0.5"], base=base)
    assert cfg.optim.actor_lr == pytest.approx(7e-4)
    assert cfg.loss.beta == pytest.approx(0.5)


def test_tuned_recipe_sets_adam_over_the_task_preset_and_beta_per_task():
    cfg = load_config(["env.name=Walker2d-v5", "recipe=tuned"])
    assert cfg.recipe == "tuned"
    assert cfg.optim.optimizer == "adam"
    assert cfg.optim.actor_lr == pytest.approx(1e-4)  # the recipe's, not Walker2d's SGD rate 2.5e-5
    assert cfg.optim.critic_lr == pytest.approx(1e-3)
    assert cfg.loss.beta == pytest.approx(0.5)
    assert cfg.model.action_std == pytest.approx(0.4)  # the rest of the task preset still applies
    assert cfg.model.normalizer_samples == 300_000
    assert cfg.buffer.size == 50_000
    assert (cfg.model.layer_norm, cfg.model.activation) == (True, "elu")
    cheetah = load_config(["recipe=tuned"])
    assert (cheetah.optim.optimizer, cheetah.loss.beta, cheetah.buffer.size) == ("adam", pytest.approx(0.3), 25_000)
    assert cheetah.loss.max_weight == pytest.approx(100.0)  # 20 (the original's) lost over fifteen seeds
    hopper = load_config(["env.name=Hopper-v5", "recipe=tuned"])  # Hopper's own entry: the original's SGD, β = 1
    assert (hopper.optim.optimizer, hopper.optim.actor_lr, hopper.optim.critic_lr, hopper.loss.beta) == (
        "sgd",
        pytest.approx(1e-4),
        pytest.approx(1e-2),
        pytest.approx(1.0),
    )
    assert (hopper.model.layer_norm, hopper.model.activation) == (False, "relu")  # LayerNorm and ELU lost there
    # the original's 0.4: 0.3 led over seeds 0-9 (stop 38), then stalled a seed of 10-14 and trailed over fifteen
    assert hopper.model.action_std == pytest.approx(0.4)
    assert load_config(["env.name=Hopper-v5", "recipe=original"]).model.action_std == pytest.approx(0.4)
    # Hopper: 1024 frames per iteration with half the steps (twice the critic steps per frame); every 20,480 frames
    assert (hopper.collector.frames_per_batch, hopper.optim.actor_steps, hopper.optim.critic_steps) == (1024, 500, 200)
    assert (hopper.eval.interval, hopper.checkpoint.interval) == (20, 20)
    assert (cheetah.collector.frames_per_batch, cheetah.optim.critic_steps) == (2048, 200)
    # HalfCheetah evaluates and checkpoints every 20 iterations (40,960 frames): evaluations held ~15% of a profiled run
    assert (cheetah.eval.interval, cheetah.checkpoint.interval) == (20, 20)
    lander = load_config(["env.name=LunarLander-v3", "recipe=tuned"])
    assert (lander.optim.optimizer, lander.model.layer_norm, lander.model.activation) == ("adam", True, "elu")
    humanoid = load_config(["env.name=Humanoid-v5"])  # LayerNorm + ELU won on Humanoid too (3 seeds)
    assert (humanoid.optim.optimizer, humanoid.model.layer_norm, humanoid.model.activation) == ("adam", True, "elu")
    ant = load_config(["env.name=Ant-v5"])  # less exploration noise won on Ant: 0.05 against the original's 0.2
    assert (ant.optim.optimizer, ant.model.action_std, ant.optim.actor_lr) == ("adam", pytest.approx(0.05), 1e-4)
    walker = load_config(["env.name=Walker2d-v5"])  # half the actor steps: equal returns (more on Ant), less time
    assert (walker.optim.actor_steps, cheetah.optim.actor_steps, ant.optim.actor_steps) == (500, 500, 250)
    assert ant.loss.beta == pytest.approx(0.7)  # BENCHMARKS.md "Ant: 400 critic steps, ...": 5 seeds against β 1
    other = load_config(["env.name=CartPole-v1", "recipe=tuned"])
    assert (other.optim.optimizer, other.loss.beta, other.model.action_std) == ("adam", 1.0, pytest.approx(0.2))
    original = load_config(["env.name=Walker2d-v5", "recipe=original"])
    assert original.recipe == "original"
    assert (original.model.layer_norm, original.model.activation) == (False, "relu")
    assert (original.optim.optimizer, original.loss.beta) == ("sgd", pytest.approx(1.0))
    assert original.optim.actor_lr == pytest.approx(2.5e-5)


def test_cli_override_beats_recipe_and_resume_does_not_reapply_it():
    cfg = load_config(["loss.beta=0.25", "recipe=tuned"])
    assert cfg.loss.beta == pytest.approx(0.25)
    assert cfg.optim.optimizer == "adam"
    resumed = load_config(["optim.actor_lr=3e-4"], base=load_config(["recipe=tuned", "loss.beta=2"]))
    assert resumed.loss.beta == pytest.approx(2.0)
    assert resumed.optim.actor_lr == pytest.approx(3e-4)


def test_unknown_recipe_names_the_choices():
    message = _one_line_error(["recipe=fast"])
    assert "recipe='fast'" in message
    assert "original" in message and "tuned" in message


# -------------------------------------------------------------------------------------------- overrides

OVERRIDES = {
    "env.name": ("Hopper-v5", "Hopper-v5"),
    "env.num_envs": ("4", 4),
    "seed": ("7", 7),
    "collector.total_frames": ("12345", 12345),
    "collector.frames_per_batch": ("4096", 4096),
    "buffer.size": ("1000", 1000),
    "loss.beta": ("0.7", 0.7),
    "loss.max_weight": ("5", 5.0),
    "loss.gamma": ("0.9", 0.9),
    "loss.lmbda": ("0.8", 0.8),
    "optim.actor_lr": ("3e-4", 3e-4),
    "optim.critic_lr": ("2e-3", 2e-3),
    "optim.actor_steps": ("11", 11),
    "optim.critic_steps": ("13", 13),
    "optim.batch_size": ("64", 64),
    "logger.backend": ("csv", "csv"),
    "logger.mode": ("online", "online"),
    "logger.project": ("my-project", "my-project"),
    "eval.interval": ("3", 3),
    "eval.episodes": ("2", 2),
    "checkpoint.interval": ("4", 4),
    "output_dir": ("runs/x", "runs/x"),
    "resume": ("runs/old", "runs/old"),
}


@pytest.mark.parametrize("key", list(OVERRIDES))
def test_key_exists_and_is_overridable(key):
    assert key in all_keys()
    text, expected = OVERRIDES[key]
    default = OmegaConf.select(load_config([]), key)
    assert default != expected, "pick an override value that differs from the default"
    value = OmegaConf.select(load_config([f"{key}={text}"]), key)
    assert value == (pytest.approx(expected) if isinstance(expected, float) else expected)
    assert type(value) is type(expected)


def test_plus_prefix_and_several_overrides():
    cfg = load_config(["+loss.beta=0.25", "optim.batch_size=32", "env.num_envs=2"])
    assert cfg.loss.beta == pytest.approx(0.25)
    assert cfg.optim.batch_size == 32
    assert cfg.env.num_envs == 2


# ------------------------------------------------------------------------------------------ bad values


def test_unknown_key_suggests_the_closest():
    message = _one_line_error(["loss.betta=0.5"])
    assert "'loss.betta'" in message
    assert "did you mean 'loss.beta'" in message


def test_unknown_key_without_close_match_lists_allowed_keys():
    message = _one_line_error(["zzzzzz=1"])
    assert "'zzzzzz'" in message
    assert "loss.beta" in message and "optim.actor_lr" in message


def test_missing_equal_sign():
    message = _one_line_error(["loss.beta"])
    assert "'loss.beta'" in message
    assert "key=value" in message


@pytest.mark.parametrize(
    ("override", "value"),
    [("loss.beta=abc", "abc"), ("env.num_envs=2.5", "2.5"), ("optim.actor_steps=many", "many"),
     ("optim.unroll=two", "two")],
)
def test_wrong_type_names_the_value(override, value):
    message = _one_line_error([override])
    assert repr(value) in message


def test_wrong_type_names_the_key():
    message = _one_line_error(["loss.beta=abc"])
    assert "loss.beta" in message


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("loss.beta=0", "loss.beta=0.0"),
        ("loss.beta=-1", "loss.beta=-1.0"),
        ("loss.beta=nan", "loss.beta=nan"),
        ("loss.max_weight=0", "loss.max_weight=0.0"),
        ("loss.max_weight=-2", "loss.max_weight=-2.0"),
        ("optim.batch_size=0", "optim.batch_size=0"),
        ("optim.unroll=0", "optim.unroll=0"),
        ("env.num_envs=0", "env.num_envs=0"),
        ("optim.actor_lr=-1e-3", "optim.actor_lr=-0.001"),
    ],
)
def test_non_positive_values(override, needle):
    message = _one_line_error([override])
    assert needle in message
    assert "> 0" in message


def test_negative_step_count():
    message = _one_line_error(["optim.actor_steps=-1"])
    assert "optim.actor_steps=-1" in message
    assert load_config(["optim.actor_steps=0"]).optim.actor_steps == 0  # zero steps is allowed


@pytest.mark.parametrize(("key", "allowed"), [("logger.backend", "wandb"), ("logger.mode", "offline")])
def test_bad_choice(key, allowed):
    message = _one_line_error([f"{key}=foo"])
    assert f"{key}='foo'" in message
    assert allowed in message


def test_frames_per_batch_must_be_a_multiple_of_num_envs():
    message = _one_line_error(["collector.frames_per_batch=100", "env.num_envs=8"])
    assert "collector.frames_per_batch=100" in message
    assert "env.num_envs=8" in message
    assert load_config(["collector.frames_per_batch=104", "env.num_envs=8"]).collector.frames_per_batch == 104


def test_asynchronous_collection_needs_worker_processes():
    for backend in ("single", "ray"):
        message = _one_line_error(["collector.sync=false", f"collector.backend={backend}"])
        assert "collector.sync=false" in message and "collector.backend=multi" in message and backend in message
    # an asynchronous worker collects a whole batch: frames_per_batch need not split among the workers
    cfg = load_config(["collector.sync=false", "collector.backend=multi", "collector.num_workers=3"])
    assert cfg.collector.frames_per_batch == 2048 and not cfg.collector.sync
    assert "collector.num_workers=3" in _one_line_error(["collector.backend=multi", "collector.num_workers=3"])


def test_cudagraphs_needs_a_cuda_device():
    message = _one_line_error(["optim.cudagraphs=true"])
    assert "optim.cudagraphs=true" in message and "device=cuda" in message
    assert load_config(["optim.cudagraphs=true", "device=cuda"]).optim.cudagraphs is True
    assert load_config(["optim.compile=true"]).optim.compile is True


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("loss.gamma=1.5", "loss.gamma=1.5"),
        ("loss.gamma=-0.1", "loss.gamma=-0.1"),
        ("loss.lmbda=1.01", "loss.lmbda=1.01"),
        ("loss.gamma=nan", "loss.gamma=nan"),
    ],
)
def test_gamma_and_lambda_outside_unit_interval(override, needle):
    message = _one_line_error([override])
    assert needle in message
    assert "[0, 1]" in message


@pytest.mark.parametrize("override", ["loss.gamma=0", "loss.gamma=1", "loss.lmbda=0", "loss.lmbda=1"])
def test_gamma_and_lambda_bounds_are_inclusive(override):
    key, value = override.split("=")
    assert OmegaConf.select(load_config([override]), key) == float(value)


# ---------------------------------------------------------------------------------------------- env ids


def test_check_env_id_accepts_registered_ids():
    assert check_env_id("Pendulum-v1") is None
    assert check_env_id("HalfCheetah-v5") is None


def test_check_env_id_names_the_bad_id_and_suggests():
    with pytest.raises(ValueError) as info:
        check_env_id("HalfCheeta-v5")
    message = str(info.value)
    assert "\n" not in message
    assert "'HalfCheeta-v5'" in message
    assert "HalfCheetah-v5" in message


def test_check_env_id_without_close_match():
    with pytest.raises(ValueError, match="'NoSuchTaskAtAll-v0'"):
        check_env_id("NoSuchTaskAtAll-v0")
