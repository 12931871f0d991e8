"""The studio's own error types.

Every error a user can cause is one of these: typed, picklable (they cross the worker's process
boundary) and worded to say what happened, what was expected and how to fix it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Issue:
    """One finding about a graph: which node (None for the whole graph), which param, how bad."""

    node_id: str | None
    message: str
    param: str | None = None
    severity: str = "error"  # "error" blocks compile and training; "warning" does not

    def __str__(self) -> str:
        return f"{self.node_id or 'graph'}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


class StudioError(Exception):
    """Base class of every error the studio raises on purpose."""


class GraphError(StudioError):
    """A graph document that cannot be loaded or compiled; carries every issue found."""

    def __init__(self, issues: list[Issue] | str):
        if isinstance(issues, str):
            issues = [Issue(None, issues)]
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    def __reduce__(self):
        return (type(self), (self.issues,))


class DataError(StudioError):
    """A dataset that cannot be loaded, downloaded or parsed (uploads included)."""


class TrainError(StudioError):
    """A training configuration or run that cannot proceed."""


class StorageError(TrainError):
    """The disk or the run store failed under a read or a write (full, read-only, an I/O error, a damaged
    file): the message says what happened and what to do (free space, fix permissions, move the store
    aside). A busy or locked database is not one: that is retried, not reported."""


class ExportError(StudioError):
    """A model that cannot be exported to the requested format."""
