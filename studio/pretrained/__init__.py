"""Pretrained checkpoints in: torchvision ResNets (.pth) and Hugging Face GPT-2 (config.json + model.safetensors)
become runs of status `imported` holding their weights in a block graph; `download` fetches the published files.

    >>> from studio.pretrained import import_checkpoint, download
    >>> imp = import_checkpoint("resnet18-f37072fd.pth", name="r18")     # doctest: +SKIP
    >>> download("gpt2", progress=print)                                  # doctest: +SKIP
"""

from studio.pretrained.mapping import PretrainedError, WeightMap

_LAZY = {"import_checkpoint": "importer", "Imported": "importer", "download": "downloads",
         "ARCHITECTURES": "downloads", "fetch_file": "downloads"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"studio.pretrained.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["ARCHITECTURES", "Imported", "PretrainedError", "WeightMap", "download", "fetch_file", "import_checkpoint"]
