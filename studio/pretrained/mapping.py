"""The explicit map from a published checkpoint's tensors onto a studio graph's state dict.

Every source key maps to one target key (optionally transposed) or is listed as not mapped, with the
reason; every target key of the compiled graph must be filled. Nothing is loaded with strict=False:
`WeightMap.check(expected)` refuses the whole import with one message listing what did not map.

    >>> import torch
    >>> wm = WeightMap("a.pth")
    >>> wm.put("fc.weight", "fc.weight", torch.zeros(2, 3))
    >>> wm.check({"fc.weight": torch.zeros(2, 3)})
    >>> sorted(wm.state)
    ['fc.weight']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.errors import StudioError

MAX_LISTED = 20  # lines of a refusal message before "... and N more"


class PretrainedError(StudioError):
    """A checkpoint that cannot be imported (unreadable, unknown layout, tensors that do not map) or
    a pretrained download that failed; the message says what, with the values found, and what to do."""


@dataclass
class WeightMap:
    """Source key -> target key, tensor by tensor, with one line per key that did not map."""

    source: str                                        # the file or folder, for messages
    state: dict = field(default_factory=dict)          # target key -> tensor
    mapped: list = field(default_factory=list)         # (source key, target key, note)
    problems: list = field(default_factory=list)       # one line each: the key and why it did not map
    ignored: list = field(default_factory=list)        # (source key, why): buffers with no weights in them

    def put(self, source_key: str, target_key: str, tensor, *, note: str = "") -> None:
        if target_key in self.state:
            self.problems.append(f"{source_key}: maps onto {target_key}, which another tensor already filled")
            return
        self.state[target_key] = tensor
        self.mapped.append((source_key, target_key, note))

    def skip(self, source_key: str, why: str) -> None:
        self.ignored.append((source_key, why))

    def refuse(self, source_key: str, why: str) -> None:
        self.problems.append(f"{source_key}: {why}")

    def check(self, expected: dict) -> None:
        """Every expected target key filled with a tensor of its shape, nothing left over; else a
        PretrainedError listing each problem."""
        problems = list(self.problems)
        by_target = {t: s for s, t, _ in self.mapped}
        for key, ref in expected.items():
            if key not in self.state:
                problems.append(f"{key}: the graph needs it but no tensor of the checkpoint maps onto it "
                                f"(shape {tuple(ref.shape)})")
            elif tuple(self.state[key].shape) != tuple(ref.shape):
                problems.append(f"{by_target[key]}: has shape {tuple(self.state[key].shape)} but the graph built "
                                f"from the checkpoint's other tensors and config expects {tuple(ref.shape)} at {key}")
        problems += [f"{by_target[k]}: maps onto {k}, which the graph does not have" for k in self.state
                     if k not in expected]
        if problems:
            listed = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                              if len(problems) > MAX_LISTED else [])
            raise PretrainedError(f"{self.source}: {len(problems)} tensor(s) did not map, so nothing was imported:\n  "
                                  + "\n  ".join(listed))

    def lines(self) -> list[str]:
        """The map as text, one line per source tensor (shown to the user and kept with the run)."""
        out = [f"{s} -> {t}" + (f" ({n})" if n else "") for s, t, n in self.mapped]
        out += [f"{s}: not loaded ({why})" for s, why in self.ignored]
        return out
