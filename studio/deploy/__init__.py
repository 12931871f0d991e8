"""Deploy: smaller and faster variants of a trained run (int8 through torchao and PT2E, pruning),
measured side by side, and fine-tuning a pruned model as a new run (lineage.py). The training-time
side (distillation, warm start, frozen nodes, pruned fine-tuning) is studio.training.transfer.

No Streamlit here; pages/6_Deploy.py and `python -m studio compress` lay these results out. The names
below load on first use, so registering the `compress` command does not import torch.
"""

_FROM = {"DeployReport": "report", "VariantRow": "report", "compress": "report", "deploy_report": "report",
         "DESCRIPTIONS": "variants", "METHODS": "variants", "Variant": "variants", "make_variant": "variants"}


def __getattr__(name: str):
    if name in _FROM:
        import importlib

        return getattr(importlib.import_module(f"studio.deploy.{_FROM[name]}"), name)
    raise AttributeError(f"module 'studio.deploy' has no attribute {name!r}")


__all__ = sorted(_FROM)
