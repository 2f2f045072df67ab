"""torchrl-awr: Advantage-Weighted Regression as native TorchRL parts."""

from torchrl_awr.config import AWRConfig, load_config
from torchrl_awr.envs import make_env
from torchrl_awr.hooks import Evaluate, RelabelTargets, UpdateObservationNorm
from torchrl_awr.loss import AWRLoss, awr_weights
from torchrl_awr.models import make_awr_actor, make_awr_networks, make_awr_value, make_observation_norm
from torchrl_awr.offline import DatasetError, load_dataset, make_offline_buffer
from torchrl_awr.offline_trainer import OfflineAWRTrainer
from torchrl_awr.targets import relabel
from torchrl_awr.torchrl_configs import AWRLossConfig, AWRTrainerConfig  # noqa: I001 - registers loss=awr, trainer=awr
from torchrl_awr.trainer import AWRTrainer
from torchrl_awr.update import RegressionPhase

__all__ = [
    "AWRConfig",
    "AWRLoss",
    "AWRLossConfig",
    "AWRTrainer",
    "AWRTrainerConfig",
    "DatasetError",
    "Evaluate",
    "OfflineAWRTrainer",
    "RegressionPhase",
    "RelabelTargets",
    "UpdateObservationNorm",
    "awr_weights",
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
