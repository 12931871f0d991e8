"""Training: the config, the generic loop and its callbacks, probes, and the worker process.

    >>> from studio.training import TrainConfig
    >>> TrainConfig(optimizer="sgd", lr=0.05, epochs=3).validate()
    []
"""

from studio.training.config import ConfigError, TrainConfig, config_schema
from studio.training.loop import Callback, Task, Trainer, TrainState

__all__ = ["Callback", "ConfigError", "Task", "TrainConfig", "TrainState", "Trainer", "config_schema"]
