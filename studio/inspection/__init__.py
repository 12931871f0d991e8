"""Looking inside a trained run, one module per job:

- runfiles: a run's files (`RunFiles`, `load_run`), its checkpoint as a model (`load_model`), its dataset
  split as the worker split it (`load_run_dataset`);
- evaluation: predictions on a split (`evaluate` -> `Evaluation`), `precision_recall`, `read_confusions`;
- inference: one input with its feature maps and attention (`infer`), images as inputs (`open_image`,
  `image_to_input`), `supports_saliency` (the maps themselves are studio.explain's);
- probes: the probe snapshots (`probe_index`, `load_probe_array`, `histogram_over_steps`,
  `parameter_names`, `index_series`);
- compare: differences between runs (`graph_diff`, `config_diff`, `best_value`);
- generate: text from a language-model run, token by token (`generate.generate` -> `Step`s, `attention` of
  the window; the function `generate` itself is imported from its module, whose name it would shadow here);
- tokenize: a run's text <-> ids (`run_tokenizer`: its tokenizer.json or its dataset's vocabulary).

Pure functions on run directories, graphs and tensors (no Streamlit): the Inspect and Compare pages lay
out what these return. Every public name is importable from `studio.inspection` itself.

    >>> run = load_run(run_id)                                   # doctest: +SKIP
    >>> ev = evaluate(load_model(run, "best"), load_run_dataset(run))  # doctest: +SKIP
"""

from studio.inspection.compare import LOWER_IS_BETTER, GraphDiff, best_value, config_diff, graph_diff
from studio.inspection.evaluation import (
    EVAL_BATCH,
    MISCLASSIFIED_LIMIT,
    Evaluation,
    evaluate,
    precision_recall,
    read_confusions,
)
from studio.inspection.inference import (
    Inference,
    feature_nodes,
    image_to_input,
    infer,
    open_image,
    supports_saliency,
)
from studio.inspection.probes import (
    histogram_over_steps,
    index_series,
    load_probe_array,
    parameter_names,
    probe_index,
)
from studio.inspection.runfiles import RunFiles, load_model, load_run, load_run_dataset

__all__ = [
    "EVAL_BATCH", "LOWER_IS_BETTER", "MISCLASSIFIED_LIMIT", "Evaluation", "GraphDiff", "Inference", "RunFiles",
    "best_value", "config_diff", "evaluate", "feature_nodes", "graph_diff", "histogram_over_steps",
    "image_to_input", "index_series", "infer", "load_model", "load_probe_array", "load_run", "load_run_dataset",
    "open_image", "parameter_names", "precision_recall", "probe_index", "read_confusions",
    "supports_saliency",
]

from studio.inspection.generate import GenerationError, Step, attention, check_language_model  # noqa: E402
from studio.inspection.tokenize import FileTokenizer, VocabTokenizer, run_tokenizer, stream_text  # noqa: E402

__all__ += ["FileTokenizer", "GenerationError", "Step", "VocabTokenizer", "attention", "check_language_model",
            "run_tokenizer", "stream_text"]
