"""Optimizers, the learning-rate schedule, weight initialisation and device/precision choice.

The schedule is a closed-form function of the step (times a plateau factor kept in a small state
dict), not a chain of torch.optim.lr_scheduler objects: warmup composes with every schedule,
reduce-on-plateau included, and its state survives `torch.load(weights_only=True)` as plain numbers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from studio.errors import TrainError
from studio.training.config import TrainConfig

ONECYCLE_PCT_START = 0.3     # share of the steps spent rising to the peak (PyTorch's default)
ONECYCLE_DIV = 25.0          # start at lr / 25
ONECYCLE_FINAL_DIV = 1e4     # end at lr / 25 / 1e4


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = param_groups(model, cfg)  # one group, or the warm-started nodes' and the others' (backbone_lr_scale)
    if not params:
        raise TrainError("the model has no trainable parameters; add a layer with weights (e.g. Linear)")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise TrainError(f"unknown optimizer {cfg.optimizer!r}")


# Set (True) by studio.training.transfer on the module of each node a warm start (init_from) loaded.
WARM_ATTR = "studio_warm_started"


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups ([] when nothing trains). One group of every trainable parameter,
    unless `cfg.backbone_lr_scale` != 1 and some modules carry WARM_ATTR: then the trainable parameters of those
    modules (the loaded backbone) form group "backbone" at lr * scale and the others group "new" at lr. Each
    group's `lr_scale` is what the training loop multiplies the scheduled lr by at every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    scale = float(getattr(cfg, "backbone_lr_scale", 1.0))
    warm = {id(p) for m in model.modules() if getattr(m, WARM_ATTR, False) for p in m.parameters()}
    if not params or scale == 1.0 or not warm:
        return [{"params": params}] if params else []
    groups = [{"params": [p for p in params if id(p) in warm], "lr": cfg.lr * scale, "lr_scale": scale,
               "name": "backbone"},
              {"params": [p for p in params if id(p) not in warm], "lr": cfg.lr, "lr_scale": 1.0, "name": "new"}]
    return [g for g in groups if g["params"]]


class LRSchedule:
    """lr(step) = lr * warmup(step) * schedule(step - warmup_steps) * plateau_scale."""

    def __init__(self, cfg: TrainConfig, total_steps: int):
        self.cfg, self.total_steps = cfg, total_steps
        self.plateau_scale = 1.0
        self._best: float | None = None
        self._bad_evals = 0

    def lr_at(self, step: int) -> float:
        """Learning rate for the optimizer step that takes the model from `step` to `step + 1`."""
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        t = step - c.warmup_steps
        span = max(1, self.total_steps - c.warmup_steps)
        if c.schedule == "step":
            f = c.gamma ** (t // c.step_size)
        elif c.schedule == "multistep":
            f = c.gamma ** sum(1 for m in c.milestones if t >= m)
        elif c.schedule == "exponential":
            f = c.gamma ** t
        elif c.schedule == "cosine":
            floor = c.min_lr / c.lr
            f = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
        elif c.schedule == "onecycle":
            f = _onecycle(t, span)
        else:  # none, plateau
            f = 1.0
        return c.lr * f * self.plateau_scale

    def on_eval(self, value: float, mode: str) -> bool:
        """Reduce-on-plateau bookkeeping; returns True when the lr was just lowered."""
        if self.cfg.schedule != "plateau" or not math.isfinite(value):
            return False
        better = self._best is None or (value < self._best if mode == "min" else value > self._best)
        if better:
            self._best, self._bad_evals = value, 0
            return False
        self._bad_evals += 1
        if self._bad_evals > self.cfg.plateau_patience:
            self.plateau_scale *= self.cfg.plateau_factor
            self._bad_evals = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "best": self._best, "bad_evals": self._bad_evals}

    def load_state_dict(self, d: dict) -> None:
        self.plateau_scale, self._best, self._bad_evals = d["plateau_scale"], d["best"], d["bad_evals"]


def _onecycle(t: int, span: int) -> float:
    """PyTorch's OneCycleLR (cosine annealing, two phases) as a factor of the peak lr."""
    up = max(1.0, ONECYCLE_PCT_START * span - 1)
    start, end = 1 / ONECYCLE_DIV, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)

    def cos_anneal(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

    if t <= up:
        return cos_anneal(start, 1.0, t / up)
    down = max(1.0, span - 1 - up)
    return cos_anneal(1.0, end, min(1.0, (t - up) / down))


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise weight matrices/kernels (dim >= 2) and zero their biases; 'default' keeps torch's init.

    Norm layers (1-D weights) keep their ones/zeros; embeddings get the same scheme as weights.
    """
    if scheme == "default":
        return
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.dim() >= 2:
                    if scheme == "xavier":
                        nn.init.xavier_uniform_(p)
                    elif scheme == "kaiming":
                        nn.init.kaiming_uniform_(p, nonlinearity="relu")
                    elif scheme == "normal":
                        nn.init.normal_(p, 0.0, 0.02)
                    else:
                        raise TrainError(f"unknown init {scheme!r}")
                elif name.startswith("bias") and p.dim() == 1 and _has_matrix_weight(module):
                    nn.init.zeros_(p)


def _has_matrix_weight(module: nn.Module) -> bool:
    return any(p.dim() >= 2 for p in module.parameters(recurse=False))


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an unavailable device is a TrainError that says what exists."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError("device='cuda' was requested but no CUDA GPU is available to PyTorch "
                         f"(torch {torch.__version__}); use device='auto' or 'cpu'")
    if name == "mps" and not has_mps:
        raise TrainError("device='mps' was requested but Apple's MPS backend is not available here; "
                         "use device='auto' or 'cpu'")
    if name not in ("cpu", "cuda", "mps"):
        raise TrainError(f"unknown device {name!r}; expected auto, cpu, cuda or mps")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None = fp32), or a TrainError saying why not."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise TrainError(f"precision='fp16' needs a CUDA device (loss scaling), but this run is on "
                             f"{device.type!r}; use 'bf16' or 'fp32'")
        return torch.float16
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise TrainError("precision='bf16' is not supported by this GPU; use 'fp16' or 'fp32'")
        if device.type == "mps":
            raise TrainError("precision='bf16' is not supported on 'mps' here; use 'fp32'")
        return torch.bfloat16
    raise TrainError(f"unknown precision {precision!r}; expected fp32, bf16 or fp16")
