"""Why a model decided: attributions of one prediction to its input, computed by Captum.

- methods: the registry (`METHODS`, `Method`, `register`): integrated gradients, GradientSHAP,
  occlusion, saliency, gradient x input, LIME, KernelSHAP, Grad-CAM;
- baselines: the reference inputs (zeros, blurred, the training mean, a padding token);
- core: `explain(model, x, ...) -> Explanation` with the method's own check (`Check`), `Settings`;
- runs: `explain_run(run_id, ...)` on a run's checkpoint and dataset, cached outside the run's files;
  samples from the dataset, an image or typed text; tabular feature names;
- imported: runs without a studio dataset (imported weights): samples from a file or typed text through
  the run's tokenizer, the ImageNet normalisation in front of the model, the layer paths that run.

Names load lazily (PEP 562): the CLI's parser reads the method registry without importing torch.
No Streamlit here: the Inspect page's "Why this prediction" view and `python -m studio explain` lay out
what these return.
"""

_EXPORTS = {
    "studio.explain.baselines": ("BASELINES", "baseline_choices", "default_pad_token", "make_baseline"),
    "studio.explain.core": ("Cancelled", "Check", "ExplainError", "Explanation", "Settings", "default_window",
                            "explain", "gradcam_layer", "is_token_model", "method_names", "token_layer"),
    "studio.explain.methods": ("METHODS", "Method", "get_method", "register"),
    "studio.explain.runs": ("Sample", "cache_dir", "clear_cache", "dataset_sample", "explain_cached", "explain_run",
                            "feature_names", "input_sample", "text_to_tokens"),
    "studio.explain.imported": ("file_input", "has_studio_dataset", "input_transform", "layer_paths", "text_tokens"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    import importlib

    if name not in _WHERE:
        raise AttributeError(f"module 'studio.explain' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
