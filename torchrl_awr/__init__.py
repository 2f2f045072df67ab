"""torchrl-awr: Advantage-Weighted Regression as native TorchRL parts."""

from torchrl_awr.buffers import make_offline_buffer
from torchrl_awr.config import AWRConfig, load_config
from torchrl_awr.datasets import DatasetError, load_dataset
from torchrl_awr.envs import make_env
from torchrl_awr.loss import AWRLoss, awr_weights, inputs_checked
from torchrl_awr.models import (
    UpdateObservationNorm,
    make_awr_actor,
    make_awr_networks,
    make_awr_value,
    make_observation_norm,
)
from torchrl_awr.monitoring import Evaluate
from torchrl_awr.targets import relabel
from torchrl_awr.torchrl_configs import AWRLossConfig, AWRTrainerConfig  # noqa: I001 - registers loss=awr, trainer=awr
from torchrl_awr.trainer import AWRTrainer
from torchrl_awr.update import AWRUpdate, RegressionPhase

__all__ = [
    "AWRConfig",
    "AWRLoss",
    "AWRLossConfig",
    "AWRTrainer",
    "AWRTrainerConfig",
    "AWRUpdate",
    "DatasetError",
    "Evaluate",
    "RegressionPhase",
    "UpdateObservationNorm",
    "awr_weights",
    "inputs_checked",
    "load_config",
    "load_dataset",
    "make_awr_actor",
    "make_awr_networks",
    "make_awr_value",
    "make_env",
    "make_offline_buffer",
    "make_observation_norm",
    "relabel",
]
