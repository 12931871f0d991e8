"""Datasets that work offline: which dataset a graph trains on by default, and what stands in for a
dataset that must be downloaded and is not on this machine yet.

A stand-in is a dataset that is always here, with the same input shape and class count, through
the generic image options (studio.data.resize): the scikit-learn digits (10 classes) resampled to
28x28 for MNIST and Fashion-MNIST, to 32x32 RGB for CIFAR-10. It is not the same data: a model
trained on it proves the wiring and the pipeline, not the accuracy on the real set.

    >>> resolve_dataset("mnist", {}, workspace)        # doctest: +SKIP
    ('digits', {'image_size': 28}, 'mnist is not downloaded; using its offline stand-in digits ...')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.data.downloads import REMOTES, is_downloaded

STAND_INS: dict[str, tuple[str, dict]] = {
    "mnist": ("digits", {"image_size": 28}),
    "fashion_mnist": ("digits", {"image_size": 28}),
    "cifar10": ("digits", {"image_size": 32, "channels": 3}),
}


@dataclass(frozen=True)
class Availability:
    dataset_id: str
    needs_download: bool  # the data comes from the network on first use
    available: bool  # on this machine now (built-in, uploaded, or downloaded already)
    stand_in: tuple[str, dict] | None  # (id, options) to use offline, when there is one

    def message(self) -> str:
        if not self.needs_download:
            return f"{self.dataset_id} is on this machine (built in or uploaded)."
        if self.available:
            return f"{self.dataset_id} was downloaded already: it is on this machine."
        text = (f"{self.dataset_id} must be downloaded on first use and is not on this machine yet "
                "(it needs the network).")
        if self.stand_in:
            sid, opts = self.stand_in
            shown = ", ".join(f"{k}={v}" for k, v in opts.items())
            text += f" Offline, its stand-in is {sid} ({shown}): same input shape and class count, other data."
        return text


def availability(dataset_id: str, workspace: str | Path) -> Availability:
    needs = dataset_id in REMOTES
    return Availability(dataset_id, needs, (not needs) or is_downloaded(dataset_id, Path(workspace)),
                        STAND_INS.get(dataset_id))


def resolve_dataset(dataset_id: str, options: dict | None, workspace: str | Path) -> tuple[str, dict, str | None]:
    """(dataset id, options, note): the dataset itself when it is here, else its stand-in (and a note
    saying so). Options of the original that the stand-in does not take (other than target) are dropped."""
    options = dict(options or {})
    found = availability(dataset_id, workspace)
    if found.available or not found.stand_in:
        return dataset_id, options, None
    sid, opts = found.stand_in
    merged = {**opts, **({"target": options["target"]} if "target" in options else {})}
    return sid, merged, found.message()


def graph_default_dataset(graph) -> tuple[str | None, dict]:
    """(dataset id, options) the graph trains on by default: its template's (matched by the graph's name)."""
    from studio.templates import list_templates

    t = next((t for t in list_templates() if t.name == graph.name), None)
    return (t.dataset, dict(t.dataset_options)) if t and t.dataset else (None, {})
