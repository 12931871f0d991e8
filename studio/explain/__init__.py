"""Why a model decided: attributions of one prediction to its input, computed by Captum.

- methods: the registry (`METHODS`, `Method`, `register`): integrated gradients, GradientSHAP,
  occlusion, saliency, gradient x input, LIME, KernelSHAP, Grad-CAM;
- baselines: the reference inputs (zeros, blurred, the training mean, a padding token);
- core: `explain(model, x, ...) -> Explanation` with the method's own check (`Check`), `Settings`;
- runs: `explain_run(run_id, ...)` on a run's checkpoint and dataset, cached outside the run's files;
  samples from the dataset, an image or typed text; tabular feature names.

No Streamlit here: the Inspect page's "Why this prediction" view and `python -m studio explain` lay out
what these return.
"""

from studio.explain.baselines import BASELINES, baseline_choices, default_pad_token, make_baseline
from studio.explain.core import (
    Cancelled,
    Check,
    ExplainError,
    Explanation,
    Settings,
    default_window,
    explain,
    gradcam_layer,
    is_token_model,
    method_names,
    token_layer,
)
from studio.explain.methods import METHODS, Method, get_method, register

__all__ = [
    "BASELINES", "METHODS", "Cancelled", "Check", "ExplainError", "Explanation", "Method", "Settings",
    "baseline_choices", "default_pad_token", "default_window", "explain", "get_method", "gradcam_layer",
    "is_token_model", "make_baseline", "method_names", "register", "token_layer",
]
