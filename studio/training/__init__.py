"""Training: the config, the generic loop and its callbacks, probes, and the worker process.

    >>> from studio.training import TrainConfig
    >>> TrainConfig(optimizer="sgd", lr=0.05, epochs=3).validate()
    []

The loop's names (Trainer, Task, ...) load on first use, so `studio.training.cli` and the config
start without importing torch (the CLI launches and follows runs without it).
"""

from studio.training.config import ConfigError, TrainConfig, config_schema

_FROM_LOOP = ("Callback", "Task", "Trainer", "TrainState")


def __getattr__(name: str):
    if name in _FROM_LOOP:
        from studio.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'studio.training' has no attribute {name!r}")


__all__ = ["Callback", "ConfigError", "Task", "TrainConfig", "TrainState", "Trainer", "config_schema"]
