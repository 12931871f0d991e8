"""Fine-tuning a warm-started model: which nodes were loaded, freezing all but the last N blocks, and the
per-group learning rate, each said in the run's event log.

`studio.training.transfer.prepare_training` calls `apply_finetune` after the warm start and the graph's
own frozen flags, before the optimizer exists:

- the modules of the nodes the warm start loaded get `optim.WARM_ATTR`, so `optim.param_groups` puts their
  parameters in the "backbone" group at lr * backbone_lr_scale;
- `train_last_blocks` = N >= 0 freezes every unit but the last N and the head (`studio.graph_head.head_of`).
  A unit is a copy of a repeated block instance (`stage1.0`), a block instance without repeat, or a
  top-level layer with parameters, in forward order. Frozen units are frozen as the graph's `frozen` flag
  freezes a node: requires_grad False and eval mode while training (batch-norm statistics stay).
"""

from __future__ import annotations

from torch import nn

from studio.errors import TrainError
from studio.graph_paths import has_submodule
from studio.training.optim import WARM_ATTR, param_groups


def block_units(model: nn.Module, graph) -> list[str]:
    """The units `train_last_blocks` counts, in forward order (`model.order`), each a submodule path."""
    repeated = {n.id for n in graph.nodes if n.type in graph.blocks and n.repeat is not None}
    units: list[str] = []
    for path in model.order:
        parts = path.split(".")
        unit = ".".join(parts[:2]) if parts[0] in repeated else parts[0]
        if unit in units or not has_submodule(model, unit):
            continue  # a top-level merge (Add, Concat) is a function, not a module
        if any(True for _ in model.get_submodule(unit).parameters()):
            units.append(unit)
    return units


def split_units(model: nn.Module, graph, n: int, head: str | None) -> tuple[list[str], list[str]]:
    """(units to freeze, units that train) for `train_last_blocks=n`: all but the last `n` units and the
    head's; TrainError when n is 0 and the graph has no head."""
    units = block_units(model, graph)
    head_units = [u for u in units if head is not None and (u == head or u.startswith(head + "."))]
    if not head_units and n == 0:
        raise TrainError(f"train_last_blocks=0 trains only the head, but graph {graph.name!r} has no head (no "
                         "node with parameters feeds its output); use train_last_blocks=-1 or a positive N")
    rest = [u for u in units if u not in head_units]
    cut = max(0, len(rest) - n)
    return rest[:cut], rest[cut:] + head_units


def freeze_all_but_last(model: nn.Module, graph, n: int, head: str | None, *,
                        frozen_attr: str) -> tuple[list[str], list[str]]:
    """Freeze every unit except the last `n` and the head's; returns (frozen units, trained units).
    `frozen_attr` is `transfer.FROZEN_ATTR`, the mark the training loop keeps in eval mode (passed in:
    studio.training.transfer imports this module)."""
    frozen, trained = split_units(model, graph, n, head)
    for unit in frozen:
        module = model.get_submodule(unit)
        for p in module.parameters():
            p.requires_grad_(False)
        setattr(module, frozen_attr, True)  # the training loop keeps it in eval mode
    return frozen, trained


def freeze_plan(graph, n: int) -> str:
    """Before launch (Train page, CLI): one sentence saying what `train_last_blocks=n` freezes and trains."""
    from studio.compile import compile_graph
    from studio.graph_head import head_of

    head = head_of(graph)
    frozen, trained = split_units(compile_graph(graph, seed=0), graph, n, head)
    return (f"train_last_blocks={n} freezes {len(frozen)} unit(s)" + (f" ({_names(frozen)})" if frozen else "")
            + f" and trains {_names(trained)} (head: {head})")


def mark_warm(model: nn.Module, match) -> None:
    """Mark the modules of the nodes the warm start (a transfer.WeightMatch) loaded; optim.param_groups reads
    the mark."""
    for node_id in match.matched:
        if has_submodule(model, node_id):
            setattr(model.get_submodule(node_id), WARM_ATTR, True)


def _names(items: list[str], limit: int = 12) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def fresh_nodes(model: nn.Module, match) -> list[str]:
    """Nodes with weights or buffers here that the warm start (a transfer.WeightMatch) did not load: new
    nodes, or nodes with other shapes there."""
    from studio.graph_paths import node_of_key

    known, loaded = set(getattr(model, "node_types", None) or ()), set(match.matched)
    nodes = dict.fromkeys(node_of_key(key, known) for key in model.state_dict())
    return [node_id for node_id in nodes if node_id not in loaded]


def group_lines(model: nn.Module, cfg) -> list[str]:
    """One event-log line per optimizer parameter group: which nodes, how many parameters, which lr."""
    groups = param_groups(model, cfg)
    scaling = ([f"{cfg.warmup_steps} warmup steps"] if cfg.warmup_steps else []) + (
        [f"the {cfg.schedule} schedule"] if cfg.schedule != "none" else [])
    then = f" (the base lr, scaled by {' and '.join(scaling)})" if scaling else ""
    if len(groups) <= 1 and not any("lr_scale" in g for g in groups):
        count = sum(p.numel() for g in groups for p in g["params"])
        return [f"learning rate: one group, {count:,} trainable parameters at lr {cfg.lr:g}{then}"]
    out = []
    for g in groups:
        ids = {id(p) for p in g["params"]}
        owners = [name for name, m in model.named_modules()
                  if name and any(id(p) in ids for p in m.parameters(recurse=False))]
        count = sum(p.numel() for p in g["params"])
        what = ("warm-started nodes" if g["name"] == "backbone" else "new or re-initialised nodes")
        rate = (f"lr {cfg.lr:g} x {g['lr_scale']:g} = {cfg.lr * g['lr_scale']:g}" if g["lr_scale"] != 1.0
                else f"lr {cfg.lr:g}")
        out.append(f"learning rate of group {g['name']!r} ({what}, {count:,} parameters: {_names(owners)}): "
                   f"{rate}{then}")
    return out


def apply_finetune(model: nn.Module, graph, cfg, match, log, *, frozen_attr: str) -> None:
    """What `prepare_training` adds for fine-tuning: mark the nodes the warm start (`match`, a
    transfer.WeightMatch, or None) loaded, say what was loaded and what starts fresh, freeze all but the last
    N blocks, and log each optimizer group's learning rate."""
    from studio.graph_head import head_of

    if match is not None:
        mark_warm(model, match)
        log(f"loaded {len(match.state)} tensors from run {match.run_id} into {len(match.matched)} node(s)")
        fresh = fresh_nodes(model, match)
        if fresh:
            log(f"re-initialised (fresh weights, not loaded from run {match.run_id}): {_names(fresh)}")
    if cfg.train_last_blocks >= 0:
        head = head_of(graph)
        frozen, trainable = freeze_all_but_last(model, graph, cfg.train_last_blocks, head, frozen_attr=frozen_attr)
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"frozen by train_last_blocks={cfg.train_last_blocks}: " + (_names(frozen) if frozen else "nothing")
            + f"; trained: {_names(trainable)} (head: {head}); {count:,} trainable parameters")
    if match is not None or cfg.train_last_blocks >= 0:  # a fine-tune: say which lr each part trains at
        for line in group_lines(model, cfg):
            log(line)


__all__ = ["apply_finetune", "block_units", "freeze_all_but_last", "freeze_plan", "fresh_nodes", "group_lines",
           "mark_warm", "split_units"]
