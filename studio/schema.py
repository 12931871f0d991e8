"""One settings field type: layer params, TrainConfig and augmentation settings are all `Field`s.

A field says what a setting is (kind, default, bounds, choices, help, whether it is advanced) and
owns the three things every form and command line needs from it: `problem(value)`, the one
validator with the one wording of every message; `parse_text(text)`, the one reading of typed text
(the inspector, the Train form and `python -m studio train --set` all use it); and `to_text(value)`,
its inverse. No torch here: the CLI reads the schema without importing it.

    >>> lr = Field("lr", "float", 1e-3, "Base learning rate.", min=0.0, min_exclusive=True)
    >>> lr.problem(0.0)
    'lr=0.0 is out of range; expected lr > 0'
    >>> lr.parse_text("3e-4")
    0.0003
    >>> betas = Field("betas", "floats", [0.9, 0.999], "Adam betas.", min=0.0, max=1.0, max_exclusive=True,
    ...               items=(2, 2))
    >>> betas.parse_text("0.9, 0.95"), betas.to_text([0.9, 0.95])
    ([0.9, 0.95], '0.9, 0.95')
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from studio.errors import StudioError

# "size" is an int or a list of `length` ints (kernel_size, stride); "padding" also takes 'same' and 'valid';
# "ints"/"floats" are lists whose entry count `items` bounds; "run" is a run id or "" for none.
KINDS = ("int", "float", "bool", "choice", "ints", "floats", "size", "padding", "str", "run")
TEXT_KINDS = frozenset({"int", "float", "ints", "floats", "size", "padding", "str", "run"})  # typed as text
MAX_INTS_ITEMS = 8  # default most entries of a list field (a shape or a permutation of at most 8 dims)
MAX_INTS_VALUE = 2**31 - 1  # any entry of an "ints" field: larger is no tensor size this studio can hold
MAX_INT_VALUE = 2**53 - 1  # any "int" field: exact in JSON readers and as a float, and it fits SQLite's INTEGER
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a run directory's name (no path separators)
_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True,
               "off": False}


class SettingError(StudioError, ValueError):
    """Typed text that cannot be read as a setting's value; the message says what was expected."""


@dataclass(frozen=True)
class Field:
    """One setting: its kind, default, bounds or choices, help, and where forms show it."""

    name: str
    kind: str  # one of KINDS
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    advanced: bool = False  # behind the form's "advanced" toggle or expander
    optional: bool = False  # None is allowed (e.g. a pool's stride, which then equals kernel_size)
    length: int = 1  # for "size"/"padding": how many spatial dims a list must have
    max_product: int | None = None  # for "ints": the most the entries may multiply to (a shape's values)
    min_exclusive: bool = False  # the value must be > min (a learning rate), not >= min
    max_exclusive: bool = False  # the value must be < max (Adam's betas)
    group: str = ""  # the form section it belongs to (TrainConfig: "optimizer", "schedule", ...)
    items: tuple[int, int | None] = (1, MAX_INTS_ITEMS)  # for "ints"/"floats": fewest and most entries
    label: str = ""  # what a form calls it ("Learning rate"); the name ("lr") where empty

    @property
    def title(self) -> str:
        return self.label or self.name

    def to_dict(self) -> dict:
        """The palette's shape of a param (DESIGN.md): what the browser and the docs read."""
        return {
            "name": self.name, "kind": self.kind, "default": self.default, "help": self.help,
            "min": self.min, "max": self.max, "choices": list(self.choices),
            "advanced": self.advanced, "optional": self.optional, "length": self.length,
        }

    def renamed(self, name: str, **changes) -> Field:
        return replace(self, name=name, **changes)

    # ---- the one validator ----
    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this field, or None. Worded as the tail of a message."""
        if value is None:
            return None if self.optional else f"{self.name} must be set; it cannot be null"
        k = self.kind
        if k == "bool":
            return None if isinstance(value, bool) else f"{self.name} must be true or false, got {_show(value)}"
        if k in ("int", "float"):
            return self._number_problem(value, k)
        if k == "choice":
            if not any(value == c and type(value) is type(c) for c in self.choices):
                return f"{self.name}={_show(value)} is not one of {', '.join(map(repr, self.choices))}"
            return None
        if k == "str":
            return None if isinstance(value, str) and value else (
                f"{self.name} must be a non-empty string, got {_show(value)}")
        if k == "run":
            if isinstance(value, str) and (value == "" or _RUN_ID.fullmatch(value)):
                return None
            return (f"{self.name}={_show(value)} is not a run id (e.g. '20250101-120000-3fa2c1'); leave it empty "
                    "for none")
        if k in ("ints", "floats"):
            return self._list_problem(value)
        if k in ("size", "padding"):
            if k == "padding" and isinstance(value, str):
                return None if value in ("same", "valid") else (
                    f"padding={value!r} is not valid; use an integer, a list of {self.length}, 'same' or 'valid'")
            if _is_int(value):
                return self._range(value, f"{self.name}={value!r}")
            if isinstance(value, list) and len(value) == self.length and all(_is_int(v) for v in value):
                for v in value:
                    p = self._range(v, f"{self.name}={_show(value)} has the entry {v}, which")
                    if p:
                        return p
                return None
            return f"{self.name} must be an integer or a list of {self.length} integers, got {_show(value)}"
        raise ValueError(f"unknown field kind {k!r}")

    def _number_problem(self, value: Any, kind: str, what: str | None = None) -> str | None:
        if kind == "int" and not _is_int(value):
            return f"{self.name} must be an integer, got {_show(value)}"
        if kind == "int" and abs(value) > MAX_INT_VALUE:
            return f"{self.name}={_show(value)} is out of range; expected at most {MAX_INT_VALUE:,} in size"
        if kind == "float" and not (_is_int(value) or isinstance(value, float)):
            return f"{self.name} must be a number, got {_show(value)}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value!r}"
        return self._range(value, what or f"{self.name}={value!r}")

    def _list_problem(self, value: Any) -> str | None:
        entry = "integers" if self.kind == "ints" else "numbers"
        fewest, most = self.items
        if not isinstance(value, (list, tuple)):
            return f"{self.name} must be a list of {entry}, got {_show(value)}"
        if fewest == most and len(value) != fewest:
            return f"{self.name} must be a list of {fewest} {entry}, got {_show(value)}"
        if len(value) < fewest:
            return f"{self.name} must be a non-empty list of {entry}, got {_show(value)}" if fewest == 1 else (
                f"{self.name} must have at least {fewest} entries, got {_show(value)}")
        if most is not None and len(value) > most:
            return f"{self.name} has {len(value)} entries; at most {most} are allowed"
        for v in value:
            if self.kind == "ints" and _is_int(v) and abs(v) > MAX_INTS_VALUE:
                return f"{self.name}={_show(value)} has the entry {v:,}; entries are at most {MAX_INTS_VALUE:,}"
            p = self._number_problem(v, "int" if self.kind == "ints" else "float",
                                     f"{self.name}={_show(list(value))} has the entry {v!r}, which")
            if p:
                return p if "has the entry" in p else (
                    f"{self.name} must be a list of {entry}, got {_show(value)}")
        if self.max_product is not None:
            product = 1
            for v in value:
                product *= v
            if product > self.max_product:
                return (f"{self.name}={_show(value)} holds {product:,} values per sample, more than the "
                        f"{self.max_product:,} allowed; use smaller sizes")
        return None

    def _range(self, value: float, what: str) -> str | None:
        """'<what> is out of range; expected <name> >= <min>', or None when `value` is within bounds."""
        lo, hi = self.min, self.max
        if lo is not None and (value < lo or (self.min_exclusive and value == lo)):
            return f"{what} is out of range; expected {self.name} {'>' if self.min_exclusive else '>='} {_num(lo)}"
        if hi is not None and (value > hi or (self.max_exclusive and value == hi)):
            return f"{what} is out of range; expected {self.name} {'<' if self.max_exclusive else '<='} {_num(hi)}"
        return None

    # ---- text, as every form and the command line type it ----
    def parse_text(self, text: str) -> Any:
        """The typed text as a value of this field; raises SettingError saying what is expected.

        Lists are numbers separated by commas or spaces, with or without brackets: '1, 28, 28', '[3 3]'.
        The result is read, not yet validated: `problem()` judges its range.
        """
        text = str(text).strip()
        k = self.kind
        if not text:
            if self.optional:
                return None
            if k in ("ints", "floats"):
                return []
            if k in ("str", "run"):
                return ""
            raise SettingError(f"{self.name} must be set; it cannot be empty")
        shown = repr(text[:40])
        if k == "bool":
            if text.lower() in _BOOL_WORDS:
                return _BOOL_WORDS[text.lower()]
            raise SettingError(f"{self.name} must be true or false, got {shown}")
        if k == "int":
            try:
                return int(text)
            except ValueError:
                raise SettingError(f"{self.name} must be an integer, got {shown} (e.g. 32)") from None
        if k == "float":
            try:
                return float(text)
            except ValueError:
                raise SettingError(f"{self.name} must be a number, got {shown} (e.g. 0.5 or 1e-5)") from None
        if k in ("choice", "str", "run"):
            if k == "choice" and text not in self.choices:
                for c in self.choices:  # non-string choices (an int) are matched by their text
                    if to_text(c) == text:
                        return c
            return text
        if k == "padding" and text in ("same", "valid"):
            return text
        parts = [t for t in re.split(r"[,;\s]+", text.strip("[]() ")) if t]
        try:
            values = [float(t) if k == "floats" else int(t) for t in parts]
        except ValueError:
            expected = {"ints": "a list of integers separated by commas",
                        "floats": "a list of numbers separated by commas",
                        "size": f"an integer or {self.length} integers separated by commas",
                        "padding": f"an integer, {self.length} integers separated by commas, 'same' or 'valid'"}[k]
            example = {"ints": " (e.g. 1, 28, 28)", "floats": " (e.g. 0.9, 0.999)"}.get(k, "")
            raise SettingError(f"{self.name} must be {expected}, got {shown}{example}") from None
        if k in ("ints", "floats") or len(values) > 1:
            return values
        return values[0]

    def to_text(self, value: Any) -> str:
        return to_text(value)


def to_text(value: Any) -> str:
    """A value as forms show it: '3', '3, 5', 'same', '1e-05', 'true', '' for None."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(to_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, float) and math.isfinite(value) else json.dumps(value)


def parse_assignment(text: str) -> tuple[str, str]:
    """`KEY=VALUE` as (key, the value's text); SettingError when there is no '='."""
    key, sep, raw = str(text).partition("=")
    if not sep or not key.strip():
        raise SettingError(f"{text!r} is not KEY=VALUE; write e.g. lr=0.01 or betas=0.9,0.99")
    return key.strip(), raw


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _show(v: Any) -> str:
    s = repr(v)
    return (s[:60] + "...") if len(s) > 60 else s
