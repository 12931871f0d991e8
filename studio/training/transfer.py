"""Training from other runs: warm start, frozen nodes, knowledge distillation and pruned fine-tuning.

The worker calls `prepare_training` once the model is compiled and before the optimizer exists:

- warm start (`init_from`): weights of another run's best checkpoint are copied into the nodes with
  the same id whose every tensor has the same shape; `match_weights` lists what matched and what did
  not, so the CLI and the Train page can show it before launch.
- pruned fine-tuning (`prune_method`): the warm-started weights are pruned as on the Deploy page and
  a gradient mask keeps every pruned weight at exactly zero (any optimizer: zero grad on a zero weight
  gives a zero update, weight decay included).
- frozen nodes (the graph's `frozen` flag): their parameters get requires_grad False and the module
  runs in eval mode (batch-norm statistics do not move either).
- distillation (`teacher`): `Distiller` blends the teacher's softened outputs into the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from studio.errors import TrainError

FROZEN_ATTR = "studio_frozen"  # set on a frozen node's module; the training loop keeps it in eval mode


def load_trained(run_id: str, workspace=None, device="cpu"):
    """(graph, model with the run's best weights, or last when it has no best) of a finished run."""
    from studio.graph import load_graph
    from studio.runs.rundir import RunDir
    from studio.training.callbacks import load_trained_model

    rd = RunDir.of(run_id, workspace)
    if not rd.graph_file.exists():
        raise TrainError(f"run {run_id!r} has no run directory at {rd.path}; list the runs with "
                         "`python -m studio runs`")
    have = rd.checkpoints()
    if not have:
        raise TrainError(f"run {run_id!r} has no checkpoint yet; pick a run that has finished at least one "
                         "evaluation or epoch")
    graph = load_graph(rd.graph_file)
    return graph, load_trained_model(graph, rd.checkpoint(have[0]), run_id=run_id, device=device)


# ---- warm start -------------------------------------------------------------------------------------

@dataclass
class WeightMatch:
    """What a warm start from `run_id` copies: node ids matched, and one line per node that did not."""

    run_id: str
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    state: dict = field(default_factory=dict, repr=False)  # the matched tensors, by state-dict key

    def lines(self) -> list[str]:
        out = [f"warm start from run {self.run_id}: {len(self.matched)} node(s) copied"
               + (f" ({', '.join(self.matched)})" if self.matched else "")]
        out += [f"  not copied: {line}" for line in self.unmatched]
        return out


def _by_node(state: dict, node_ids=None) -> dict[str, dict]:
    """State-dict entries grouped by node: by the longest of `node_ids` (paths such as `layer1.0.conv1` in a
    graph with blocks) that prefixes the key, else by the key's first name."""
    from studio.graph_paths import node_of_key

    nodes: dict[str, dict] = {}
    known = set(node_ids or ())
    for key, value in state.items():
        node_id = node_of_key(key, known)
        nodes.setdefault(node_id, {})[key[len(node_id) + 1:]] = value
    return nodes


def match_weights(model: nn.Module, run_id: str, workspace=None) -> WeightMatch:
    """Match `model`'s nodes against run `run_id`'s trained weights by node id (path) and shape."""
    _, source = load_trained(run_id, workspace)
    mine = _by_node(model.state_dict(), getattr(model, "node_types", None))
    theirs = _by_node(source.state_dict(), getattr(source, "node_types", None))
    match = WeightMatch(run_id)
    for node_id, tensors in mine.items():
        other = theirs.get(node_id)
        if other is None:
            match.unmatched.append(f"{node_id}: run {run_id} has no node {node_id!r}")
            continue
        problems = [f"{k} {tuple(v.shape)} vs {tuple(other[k].shape)}" if k in other else f"{k} missing there"
                    for k, v in tensors.items() if k not in other or other[k].shape != v.shape]
        if set(other) - set(tensors):
            problems.append(f"run {run_id} has {', '.join(sorted(set(other) - set(tensors)))} too")
        if problems:
            match.unmatched.append(f"{node_id}: " + "; ".join(problems) + " (here vs there)")
            continue
        match.matched.append(node_id)
        match.state.update({f"{node_id}.{k}": other[k].detach().clone() for k in tensors})
    for node_id in theirs.keys() - mine.keys():
        match.unmatched.append(f"{node_id}: only in run {run_id} (this graph has no node {node_id!r})")
    return match


def match_graph(graph, run_id: str, workspace=None) -> WeightMatch:
    """match_weights for a graph (compiled here with fresh weights)."""
    from studio.compile import compile_graph

    return match_weights(compile_graph(graph, seed=0), run_id, workspace)


def warm_start(model: nn.Module, run_id: str, workspace=None) -> WeightMatch:
    """Copy the matched weights of run `run_id` into `model` (in place); returns the match."""
    match = match_weights(model, run_id, workspace)
    if not match.matched:
        raise TrainError(f"warm start from run {run_id!r} matched no node (ids and shapes differ everywhere): "
                         + "; ".join(match.unmatched[:5]))
    device = next(iter(model.state_dict().values())).device
    model.load_state_dict({k: v.to(device) for k, v in match.state.items()}, strict=False)
    return match


# ---- frozen nodes ------------------------------------------------------------------------------------

def freeze_nodes(model: nn.Module, graph) -> list[str]:
    """Freeze the graph's `frozen` nodes in `model`; returns their ids."""
    from studio.graph_paths import flat_nodes, has_submodule

    frozen = [n.id for n in flat_nodes(graph) if n.frozen and has_submodule(model, n.id)]  # paths with blocks
    for node_id in frozen:
        module = model.get_submodule(node_id)
        for p in module.parameters():
            p.requires_grad_(False)
        setattr(module, FROZEN_ATTR, True)
    return frozen


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- pruned fine-tuning ------------------------------------------------------------------------------

def keep_pruned(model: nn.Module, method: str, sparsity: float) -> int:
    """Prune `model`'s weights in place as studio.deploy does, and mask the gradients of the pruned
    weights so training keeps them at zero. Returns the number of zero weights."""
    from studio.training.pruning import prune_channels, prune_global_l1

    (prune_global_l1 if method == "prune" else prune_channels)(model, sparsity)
    zeros = 0
    for _, m in _weights(model):
        mask = (m.weight != 0).to(m.weight.dtype)
        zeros += int((mask == 0).sum())
        m.weight.register_hook(lambda g, mask=mask: g * mask)
        if method == "prune-channels" and m.bias is not None:
            bias_mask = (m.bias != 0).to(m.bias.dtype)
            m.bias.register_hook(lambda g, mask=bias_mask: g * mask)
    return zeros


def _weights(model: nn.Module):
    from studio.training.pruning import prunable

    return prunable(model)


# ---- distillation ------------------------------------------------------------------------------------

class Distiller:
    """loss = w * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - w) * task loss.

    The teacher runs in eval mode under no_grad on the same batch. Classification outputs (B, C) and
    per-token outputs (B, T, V) are softened over their last dimension.
    """

    def __init__(self, teacher: nn.Module, temperature: float, weight: float):
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.weight = float(temperature), float(weight)

    def __call__(self, out: torch.Tensor, x: torch.Tensor, task_loss: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(x).float()
        t = self.temperature
        student = F.log_softmax(out.reshape(-1, out.shape[-1]) / t, dim=-1)
        teacher = F.softmax(target.reshape(-1, target.shape[-1]) / t, dim=-1)
        kl = F.kl_div(student, teacher, reduction="batchmean") * (t * t)
        return self.weight * kl + (1.0 - self.weight) * task_loss


def load_teacher(teacher_id: str, student: nn.Module, task: str, device="cpu", workspace=None) -> nn.Module:
    """The teacher run's model, checked against the student: same input, same output shape."""
    if task not in ("classification", "sequence", "language_model"):
        raise TrainError(f"distillation softens class or token scores; this dataset's task is {task!r}. "
                         "Clear the teacher for regression")
    _, teacher = load_trained(teacher_id, workspace, device=device)
    x = torch.zeros((2, *student.input_shape), dtype=student.input_dtype, device=device)
    if teacher.input_shape != student.input_shape or teacher.input_dtype != student.input_dtype:
        raise TrainError(f"teacher run {teacher_id!r} takes inputs {tuple(teacher.input_shape)} "
                         f"{teacher.input_dtype}, the student {tuple(student.input_shape)} {student.input_dtype}; "
                         "pick a teacher trained on the same dataset")
    with torch.no_grad():
        was = student.training
        student.eval()
        s_shape, t_shape = tuple(student(x).shape[1:]), tuple(teacher.eval()(x).shape[1:])
        student.train(was)
    if s_shape != t_shape:
        raise TrainError(f"teacher run {teacher_id!r} outputs {t_shape} per sample but this graph outputs {s_shape}; "
                         "distillation needs the same output shape (same classes or vocabulary)")
    return teacher


def check_teacher(graph, teacher_id: str, task: str, workspace=None) -> None:
    """Before launch: TrainError when run `teacher_id` cannot teach `graph`."""
    from studio.compile import compile_graph

    load_teacher(teacher_id, compile_graph(graph, seed=0), task, workspace=workspace)


# ---- the worker's entry point ------------------------------------------------------------------------

def prepare_training(model: nn.Module, graph, cfg, task: str, log, device="cpu") -> Distiller | None:
    """Apply warm start, pruning masks and frozen nodes to `model`; return the Distiller when the config
    names a teacher. `log(message, level)` records what was done in the run's event log."""
    from studio.training.finetune import apply_finetune  # per-group LR, train_last_blocks, what was loaded

    match = None
    if cfg.init_from:
        match = warm_start(model, cfg.init_from)
        for line in match.lines():
            log(line.strip(), "info" if not line.startswith("  ") else "warning")
        if cfg.prune_method != "none":
            zeros = keep_pruned(model, cfg.prune_method, cfg.prune_sparsity)
            log(f"pruned ({cfg.prune_method}, sparsity {cfg.prune_sparsity}): {zeros:,} weights held at zero")
    frozen = freeze_nodes(model, graph)
    if frozen:
        log(f"frozen nodes: {', '.join(frozen)}; {trainable_params(model):,} trainable parameters")
    apply_finetune(model, graph, cfg, match, log, frozen_attr=FROZEN_ATTR)
    if not cfg.teacher:
        return None
    teacher = load_teacher(cfg.teacher, model, task, device=device)
    log(f"distilling from run {cfg.teacher} (temperature {cfg.temperature}, weight {cfg.distill_weight})")
    return Distiller(teacher, cfg.temperature, cfg.distill_weight)
