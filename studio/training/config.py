"""TrainConfig: everything a run needs besides the graph and the dataset.

A plain dataclass saved as `config.json` in the run directory. Each field carries its schema, a
`studio.schema.Field` (kind, default, bounds, choices, help), in `dataclasses.field(metadata=...)`;
`SCHEMA` lists them in form order. The Train page's form and the CLI's `--set` are generated from it,
and `validate()` checks every value with the fields' one validator (the one layer params use).

    >>> cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, epochs=5)
    >>> cfg.validate()            # raises ConfigError listing every problem
    []
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from studio.augment_settings import CONFIG_NAMES, config_fields
from studio.errors import TrainError
from studio.schema import Field, SettingError, parse_assignment

CONFIG_VERSION = 1
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("none", "step", "multistep", "exponential", "cosine", "onecycle", "plateau")
INITS = ("default", "xavier", "kaiming", "normal")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
MONITOR_MODES = ("auto", "min", "max")
PRUNE_METHODS = ("none", "prune", "prune-channels")  # studio.deploy's pruning methods, for fine-tuning
# Metrics where larger is better; every other monitored metric is minimised under mode "auto".
MAXIMIZED_METRICS = frozenset({"val_accuracy", "val_token_accuracy", "train_accuracy"})
# A monitored metric's name; it also reaches exported code, so nothing but a plain identifier passes.
_METRIC_NAME = re.compile(r"(val|train)_[A-Za-z0-9_]{1,60}")
# Per-task starting points layered over TrainConfig's own defaults (a template's config wins over these).
TASK_DEFAULTS = {
    "classification": {},
    "regression": {"lr": 3e-3},
    "sequence": {"grad_clip": 1.0},
    "language_model": {"grad_clip": 1.0, "lr": 3e-3},
}


def _f(default, kind: str, help: str, **schema):
    """A dataclass field whose schema (a studio.schema Field, named after the field later) is its metadata."""
    spec = Field("", kind, default, help, **{"group": "training", **schema})
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata={"field": spec})
    return field(default=default, metadata={"field": spec})


def _augment(name: str):
    """A dataclass field for one augmentation setting, its schema taken from studio.augment_settings."""
    spec = next(f for f in config_fields() if f.name == name)
    return field(default=spec.default, metadata={"field": spec})


class ConfigError(TrainError):
    """A TrainConfig with problems; `.problems` lists every (field, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("invalid training configuration:\n" + "\n".join(f"  {f}: {m}" for f, m in self.problems))

    def __reduce__(self):
        return (type(self), (self.problems,))


@dataclass
class TrainConfig:
    version: int = _f(CONFIG_VERSION, "int", "Format version of this config document.", advanced=True,
                      group="meta")

    # ---- optimizer ----
    optimizer: str = _f("adam", "choice", "Optimizer: SGD (with momentum / Nesterov), Adam, AdamW, RMSprop or Adagrad.",
                        choices=OPTIMIZERS, group="optimizer")
    lr: float = _f(1e-3, "float", "Base learning rate (the peak for one-cycle).", min=0.0, min_exclusive=True,
                   group="optimizer")
    weight_decay: float = _f(0.0, "float", "L2 penalty (decoupled for AdamW).", min=0.0, max=1.0, group="optimizer")
    momentum: float = _f(0.9, "float", "Momentum for SGD and RMSprop; ignored by the others.", min=0.0, max=1.0,
                         group="optimizer")
    nesterov: bool = _f(False, "bool", "Nesterov momentum (SGD with momentum > 0 only).", group="optimizer",
                        advanced=True)
    betas: list = _f([0.9, 0.999], "floats", "Adam/AdamW (beta1, beta2): decay rates of the moment estimates.",
                     min=0.0, max=1.0, max_exclusive=True, items=(2, 2), group="optimizer", advanced=True)

    # ---- learning-rate schedule (all counted in optimizer steps) ----
    schedule: str = _f("none", "choice", "Learning-rate schedule applied after the warmup.", choices=SCHEDULES,
                       group="schedule")
    warmup_steps: int = _f(0, "int", "Linear warmup from 0 to lr over this many steps, in front of any schedule.",
                           min=0, group="schedule")
    step_size: int = _f(1000, "int", "step: multiply lr by gamma every step_size steps.", min=1, group="schedule",
                        advanced=True)
    milestones: list = _f([], "ints", "multistep: steps (after warmup) at which lr is multiplied by gamma.",
                          min=1, items=(0, None), group="schedule", advanced=True)
    gamma: float = _f(0.1, "float", "step / multistep / exponential: the multiplicative decay factor.",
                      min=0.0, min_exclusive=True, max=1.0, group="schedule", advanced=True)
    min_lr: float = _f(0.0, "float", "cosine: the learning rate reached at the last step.", min=0.0,
                       group="schedule", advanced=True)
    plateau_factor: float = _f(0.1, "float", "plateau: multiply lr by this when the monitored metric stalls.",
                               min=0.0, min_exclusive=True, max=1.0, group="schedule", advanced=True)
    plateau_patience: int = _f(2, "int", "plateau: evaluations without improvement before lowering lr.", min=0,
                               group="schedule", advanced=True)

    # ---- length and batches ----
    epochs: int = _f(10, "int", "Passes over the training split (ignored when max_steps > 0).", min=1,
                     max=100_000)
    max_steps: int = _f(0, "int", "Stop after this many optimizer steps; 0 = train for `epochs`.", min=0)
    batch_size: int = _f(64, "int", "Samples per optimizer step.", min=1, max=1_000_000)

    # ---- regularisation and initialisation ----
    grad_clip: float = _f(0.0, "float", "Clip the global gradient norm to this value; 0 = no clipping.", min=0.0,
                          advanced=True)
    label_smoothing: float = _f(0.0, "float", "Classification / token targets: label smoothing in the training loss.",
                                min=0.0, max=1.0, min_exclusive=False, advanced=True)
    init: str = _f("default", "choice",
                   "Weight initialisation: PyTorch default, Xavier, Kaiming (He) or normal(0, 0.02).",
                   choices=INITS, advanced=True)

    # ---- monitoring, best checkpoint, early stopping ----
    monitor: str = _f("auto", "str", "Validation metric for the best checkpoint, early stopping and plateau "
                      "('auto' = val_accuracy for classification, val_loss otherwise).", group="monitor")
    monitor_mode: str = _f("auto", "choice", "Whether the monitored metric should go down (min) or up (max); "
                           "'auto' infers it from the name.", choices=MONITOR_MODES, group="monitor", advanced=True)
    patience: int = _f(0, "int", "Early stopping: evaluations without improvement before stopping; 0 = off.",
                       min=0, group="monitor")
    min_delta: float = _f(0.0, "float", "Early stopping: the smallest change that counts as an improvement.",
                          min=0.0, group="monitor", advanced=True)

    # ---- image augmentation (training batches only; image datasets (C, H, W) only) ----
    augment_crop: bool = _augment("augment_crop")
    augment_crop_padding: int = _augment("augment_crop_padding")
    augment_flip: bool = _augment("augment_flip")
    augment_flip_prob: float = _augment("augment_flip_prob")
    augment_affine: bool = _augment("augment_affine")
    augment_rotation: float = _augment("augment_rotation")
    augment_scale: float = _augment("augment_scale")
    augment_translate: float = _augment("augment_translate")
    augment_noise: bool = _augment("augment_noise")
    augment_noise_std: float = _augment("augment_noise_std")

    # ---- reproducibility and hardware ----
    seed: int = _f(0, "int", "Seeds weights, data order, dropout and augmentation.", min=0, max=2**31 - 1,
                   group="system")
    device: str = _f("auto", "choice", "Where to train: 'auto' picks cuda, then mps, then cpu.", choices=DEVICES,
                     group="system")
    precision: str = _f("fp32", "choice", "fp32, or mixed precision with autocast: bf16 (CPU or recent GPUs) or "
                        "fp16 (CUDA, with loss scaling).", choices=PRECISIONS, group="system", advanced=True)
    compile_model: bool = _f(False, "bool", "Train through torch.compile(model): the first steps pay the "
                             "compilation (seconds to a minute), later ones may run faster; checkpoints are "
                             "unchanged.", group="system", advanced=True)

    # ---- what gets recorded ----
    eval_every: int = _f(0, "int", "Evaluate on the validation split every N steps; 0 = at each epoch end.",
                         min=0, group="recording")
    probe_every: int = _f(0, "int", "Extra probe snapshots every N steps (probes always run at epoch ends); "
                          "0 = epoch ends only.", min=0, group="recording")
    probes: bool = _f(True, "bool", "Record feature maps, attention, weight/gradient histograms.",
                      group="recording")
    checkpoint_every: int = _f(0, "int", "Save the 'last' checkpoint every N steps; 0 = at each epoch end.",
                               min=0, group="recording")

    # ---- starting from other runs (studio.training.transfer): distillation, warm start, pruned fine-tuning ----
    teacher: str = _f("", "run", "Distillation: a finished run whose model teaches this one (same output shape); "
                      "empty = no teacher.", group="transfer")
    temperature: float = _f(4.0, "float", "Distillation: softmax temperature T of both models' outputs.", min=0.0,
                            min_exclusive=True, max=100.0, group="transfer")
    distill_weight: float = _f(0.7, "float", "Distillation: loss = w * KL(teacher || student, softened) * T^2 + "
                               "(1 - w) * task loss.", min=0.0, max=1.0, group="transfer")
    init_from: str = _f("", "run", "Warm start: copy the weights of this run's best checkpoint into the nodes "
                        "with the same id and shapes; empty = fresh weights.", group="transfer")
    prune_method: str = _f("none", "choice", "Fine-tuning a pruned model: prune the init_from weights this way "
                           "and keep the pruned weights at zero while training.", choices=PRUNE_METHODS,
                           group="transfer", advanced=True)
    prune_sparsity: float = _f(0.5, "float", "Fine-tuning a pruned model: the fraction of weights (prune) or "
                               "channels (prune-channels) pruned.", min=0.0, min_exclusive=True, max=0.99,
                               group="transfer", advanced=True)
    # ---- fine-tuning (studio.training.finetune): per-group learning rate, freezing by blocks ----
    backbone_lr_scale: float = _f(1.0, "float", "Fine-tuning: the nodes init_from loaded train at lr times this, "
                                  "the new or re-initialised ones (a replaced head) at lr; 1 = one learning "
                                  "rate, 0 = the loaded weights stay as they are.", min=0.0, max=10.0,
                                  group="transfer")
    train_last_blocks: int = _f(-1, "int", "Fine-tuning: train only the head and the last N blocks (block copies, "
                                "or top-level layers with weights); the others are frozen (eval mode, no "
                                "gradient). 0 = the head only; -1 = off (only the graph's own frozen flags).",
                                min=-1, group="transfer")

    def augmentation(self):
        """The studio.data Augment these settings describe (enabled only when a switch is on)."""
        from studio.data.augment import Augment

        return Augment(**{name: getattr(self, key) for name, key in CONFIG_NAMES.items()})

    # ---- documents ----
    def to_dict(self) -> dict:
        return {f.name: (list(getattr(self, f.name)) if isinstance(getattr(self, f.name), (list, tuple))
                         else getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a document; unknown keys and newer versions are errors (never ignored silently)."""
        if not isinstance(d, dict):
            raise ConfigError([("config", f"must be a JSON object, got {type(d).__name__}")])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ConfigError([(str(k), f"unknown setting {k!r}; known settings are {', '.join(sorted(known))}")
                               for k in unknown])
        version = d.get("version", CONFIG_VERSION)
        if isinstance(version, int) and version > CONFIG_VERSION:
            raise ConfigError([("version", f"config version {version} is newer than this studio's "
                                           f"{CONFIG_VERSION}; upgrade Neural Studio")])
        return cls(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()})

    def replace(self, **changes) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ---- validation ----
    def validate(self, *, raise_on_error: bool = True) -> list[tuple[str, str]]:
        """Every (field, message) problem. Raises ConfigError listing all of them unless told not to."""
        problems: list[tuple[str, str]] = []
        for spec in SCHEMA:
            msg = spec.problem(getattr(self, spec.name))
            if msg:
                problems.append((spec.name, msg))
        bad = {name for name, _ in problems}
        if "nesterov" not in bad and self.nesterov and (self.optimizer != "sgd" or not self.momentum > 0):
            problems.append(("nesterov", f"nesterov=True needs optimizer='sgd' with momentum > 0, got "
                                         f"optimizer={self.optimizer!r}, momentum={self.momentum}; set nesterov=False "
                                         "or use SGD with momentum"))
        if "milestones" not in bad and self.schedule == "multistep":
            if not self.milestones:
                problems.append(("milestones", "schedule='multistep' needs at least one milestone step, got []; "
                                               "e.g. milestones=[1000, 2000]"))
            elif list(self.milestones) != sorted(set(self.milestones)):
                problems.append(("milestones", f"milestones must be strictly increasing, got {list(self.milestones)}"))
        if ("min_lr" not in bad and "lr" not in bad and self.schedule == "cosine" and self.min_lr >= self.lr):
            problems.append(("min_lr", f"min_lr={self.min_lr} must be below lr={self.lr} for the cosine schedule"))
        if "max_steps" not in bad and "warmup_steps" not in bad and 0 < self.max_steps <= self.warmup_steps:
            problems.append(("warmup_steps", f"warmup_steps={self.warmup_steps} covers the whole run "
                                             f"(max_steps={self.max_steps}); use fewer warmup steps"))
        if "precision" not in bad and "device" not in bad:
            if self.device == "cpu" and self.precision == "fp16":
                problems.append(("precision", "precision='fp16' needs a CUDA device (loss scaling); on the CPU use "
                                              "'bf16' or 'fp32'"))
            if self.device == "mps" and self.precision != "fp32":
                problems.append(("precision", f"precision={self.precision!r} is not supported on 'mps' here; use "
                                              "'fp32'"))
        if "monitor" not in bad and self.monitor != "auto" and not _METRIC_NAME.fullmatch(self.monitor):
            problems.append(("monitor", f"monitor={self.monitor!r} is not a metric name; use 'auto' or a "
                                        "validation metric such as 'val_loss' or 'val_accuracy'"))
        if "prune_method" not in bad and self.prune_method != "none" and not self.init_from:
            problems.append(("prune_method", f"prune_method={self.prune_method!r} prunes the weights of init_from, "
                                             "which is empty; set init_from to the run to prune, or prune_method "
                                             "to 'none'"))
        if "backbone_lr_scale" not in bad and self.backbone_lr_scale != 1.0 and not self.init_from:
            problems.append(("backbone_lr_scale", f"backbone_lr_scale={self.backbone_lr_scale} scales the learning "
                                                  "rate of the weights init_from loads, which is empty; set init_from "
                                                  "to the run to fine-tune, or backbone_lr_scale to 1"))
        if problems and raise_on_error:
            raise ConfigError(problems)
        return problems

    def resolved_monitor(self, task: str) -> tuple[str, str]:
        """(metric name, 'min' or 'max') for this task."""
        name = self.monitor
        if name == "auto":
            name = "val_accuracy" if task == "classification" else "val_loss"
        mode = self.monitor_mode
        if mode == "auto":
            mode = "max" if name in MAXIMIZED_METRICS else "min"
        return name, mode


# What the run form calls each setting (the CLI and the config document keep the names).
LABELS = {
    "optimizer": "Optimizer", "lr": "Learning rate", "weight_decay": "Weight decay", "momentum": "Momentum",
    "nesterov": "Nesterov momentum", "betas": "Adam betas", "schedule": "Learning-rate schedule",
    "warmup_steps": "Warmup steps", "step_size": "Decay every N steps", "milestones": "Decay at steps",
    "gamma": "Decay factor", "min_lr": "Final learning rate", "plateau_factor": "Plateau decay factor",
    "plateau_patience": "Plateau patience (evaluations)", "epochs": "Epochs",
    "max_steps": "Max steps (0 = use epochs)", "batch_size": "Batch size", "grad_clip": "Gradient clipping (norm)",
    "label_smoothing": "Label smoothing", "init": "Weight initialisation", "monitor": "Monitored metric",
    "monitor_mode": "Monitored metric goes", "patience": "Early-stopping patience (evaluations)",
    "min_delta": "Smallest improvement", "augment_crop": "Random crop", "augment_crop_padding": "Crop padding (px)",
    "augment_flip": "Horizontal flip", "augment_flip_prob": "Flip probability", "augment_affine": "Random affine",
    "augment_rotation": "Rotation (degrees)", "augment_scale": "Scale range", "augment_translate": "Translation",
    "augment_noise": "Gaussian noise", "augment_noise_std": "Noise std", "seed": "Seed", "device": "Device",
    "precision": "Precision", "compile_model": "Compile with torch.compile",
    "eval_every": "Evaluate every N steps (0 = each epoch)", "probe_every": "Probe every N steps (0 = each epoch)",
    "probes": "Record probes", "checkpoint_every": "Checkpoint every N steps (0 = each epoch)",
    "teacher": "Teacher run (distillation)", "temperature": "Distillation temperature",
    "distill_weight": "Distillation weight", "init_from": "Warm start from run", "prune_method": "Prune the warm start",
    "prune_sparsity": "Pruning sparsity", "backbone_lr_scale": "Backbone LR multiplier",
    "train_last_blocks": "Train only the last N blocks (-1 = all)",
}
SCHEMA: tuple[Field, ...] = tuple(f.metadata["field"].renamed(f.name, label=LABELS.get(f.name, ""))
                                  for f in fields(TrainConfig))
FIELDS: dict[str, Field] = {f.name: f for f in SCHEMA}


def config_schema() -> list[dict]:
    """One dict per field, in form order: name, kind, default, min, max, choices, help, advanced, group."""
    return [{**f.to_dict(), "choices": f.choices, "min_exclusive": f.min_exclusive,
             "max_exclusive": f.max_exclusive, "group": f.group} for f in SCHEMA]


def task_defaults(task: str | None) -> dict:
    """The settings a task starts from, over TrainConfig's own defaults ({} for an unknown task)."""
    return dict(TASK_DEFAULTS.get(task or "", {}))


def training_defaults(template: str | None, task: str | None) -> dict:
    """The whole TrainConfig document a graph starts from: TrainConfig's defaults, then its task's
    (TASK_DEFAULTS), then its template's `config` (studio.templates' catalog). The Train page's form and
    `python -m studio train` both start here, so they train a template with the same settings.

        >>> d = training_defaults("resnet_small", "classification")
        >>> d["optimizer"], d["lr"], d["schedule"]
        ('sgd', 0.1, 'cosine')
        >>> training_defaults(None, "regression")["lr"]
        0.003
    """
    from studio.templates import list_templates

    found = next((t for t in list_templates() if t.name == template), None) if template else None
    own = {k: v for k, v in (found.config if found else {}).items() if k in FIELDS}
    return {**TrainConfig().to_dict(), **task_defaults(task), **own}


def parse_settings(assignments: list[str]) -> dict:
    """`KEY=VALUE` texts (the CLI's --set) as a partial config document, each value read by its field's
    `parse_text`; ConfigError lists every unknown key and unreadable value.

        >>> parse_settings(["betas=0.9,0.99", "schedule=cosine", "lr=3e-4"])
        {'betas': [0.9, 0.99], 'schedule': 'cosine', 'lr': 0.0003}
    """
    doc, problems = {}, []
    for text in assignments:
        try:
            key, raw = parse_assignment(text)
        except SettingError as e:
            problems.append(("--set", str(e)))
            continue
        spec = FIELDS.get(key)
        if spec is None or spec.group == "meta":
            problems.append((key, unknown_setting(key)))
            continue
        try:
            doc[key] = spec.parse_text(raw)
        except SettingError as e:
            problems.append((key, str(e)))
    if problems:
        raise ConfigError(problems)
    return doc


def unknown_setting(key) -> str:
    known = sorted(f.name for f in SCHEMA if f.group != "meta")
    return f"unknown setting {key!r}; known settings are {', '.join(known)}"


def settings_help() -> str:
    """Every setting `--set` accepts, one line each: name, kind, default and help (the CLI's epilog)."""
    lines = ["training settings (--set KEY=VALUE; lists as 0.9,0.99; the defaults before a template's and a task's):"]
    for f in SCHEMA:
        if f.group == "meta":
            continue
        what = "|".join(map(str, f.choices)) if f.kind == "choice" else f.kind
        lines.append(f"  {f.name}={f.to_text(f.default)}  ({what}) {f.help}")
    return "\n".join(lines)
