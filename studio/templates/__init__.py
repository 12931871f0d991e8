"""Ready graphs to start from: the models of the seed articles and a few classics.

Each `<name>.json` here is a plain `studio.graph/1` document (the graph's own `description` says what
the model is); `catalog.json` adds what the graph format has no room for: a title, the default
dataset id (None when no dataset fits yet, and the description says why), the options that dataset
is loaded with (`get_dataset(..., options=...)`, e.g. {"target": "input"} for an autoencoder's
reconstruction form) and the default training config (TrainConfig overrides). The catalog's order is
the gallery's order.

    >>> [t.name for t in list_templates()][:2]
    ['seed_cnn_padded', 'seed_cnn']
    >>> load_template("mlp").node("fc1").params
    {'out_features': 256}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from studio.errors import GraphError
from studio.graph import Graph, load_graph

TEMPLATES_DIR = Path(__file__).resolve().parent
CATALOG_PATH = TEMPLATES_DIR / "catalog.json"


@dataclass(frozen=True)
class Template:
    name: str  # file stem, e.g. "seed_cnn"
    title: str  # for the gallery card
    description: str  # the graph's own description
    dataset: str | None  # default dataset id; None when no dataset in the studio fits (see description)
    config: dict = field(default_factory=dict)  # TrainConfig overrides (TrainConfig.from_dict accepts them)
    path: Path = TEMPLATES_DIR
    # Options for the default dataset: pass them to get_dataset/get_info and start_run(dataset_options=...).
    dataset_options: dict = field(default_factory=dict)


@lru_cache(maxsize=1)
def _catalog() -> tuple[Template, ...]:
    entries = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    out = []
    for name, meta in entries.items():
        path = TEMPLATES_DIR / f"{name}.json"
        graph = load_graph(path)
        out.append(Template(name=name, title=meta["title"], description=graph.description,
                            dataset=meta.get("dataset"), config=dict(meta.get("config", {})), path=path,
                            dataset_options=dict(meta.get("dataset_options", {}))))
    return tuple(out)


def list_templates() -> list[Template]:
    """Every template, in gallery order. Each `config` and `dataset_options` is a fresh copy: editing
    it changes nothing here."""
    return [Template(t.name, t.title, t.description, t.dataset, json.loads(json.dumps(t.config)), t.path,
                     json.loads(json.dumps(t.dataset_options)))
            for t in _catalog()]


def get_template(name: str) -> Template:
    for t in list_templates():
        if t.name == name:
            return t
    known = ", ".join(t.name for t in _catalog())
    raise GraphError(f"unknown template {name!r}; the templates are: {known}")


def load_template(name: str) -> Graph:
    """The template's graph, freshly parsed (callers may edit it)."""
    return load_graph(get_template(name).path)


__all__ = ["TEMPLATES_DIR", "Template", "get_template", "list_templates", "load_template"]

