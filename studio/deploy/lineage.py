"""Runs made from runs: fine-tuning a pruned model as a new run linked to its parent, and a distilled
student beside its teacher (Compare)."""

from __future__ import annotations

from studio.errors import StorageError, TrainError

# ---- fine-tuning a pruned model as a new run ------------------------------------------------------------

def start_finetune(run_id: str, method: str, sparsity: float, *, epochs: int | None = None, lr: float | None = None,
                   store=None) -> str:
    """Start a run that fine-tunes run `run_id`'s model pruned by `method` at `sparsity`, linked to it as its
    parent (same graph, dataset and settings; warm start from it; pruned weights held at zero)."""
    from studio.inspection import load_run
    from studio.runs.launcher import start_run
    from studio.training.pruning import check_sparsity

    if method not in ("prune", "prune-channels"):
        raise TrainError(f"fine-tuning keeps a pruned model pruned; method must be 'prune' or 'prune-channels', "
                         f"got {method!r}")
    check_sparsity(sparsity)
    run = load_run(run_id)
    changes = {"init_from": run_id, "prune_method": method, "prune_sparsity": float(sparsity), "teacher": ""}
    if epochs is not None:
        changes.update(epochs=int(epochs), max_steps=0)
    if lr is not None:
        changes["lr"] = float(lr)
    config = run.config.replace(**changes)
    name = f"{run_id[-6:]} {method} {sparsity:.0%} fine-tune"
    return start_run(run.graph, run.dataset_id, config, name=name, dataset_options=run.dataset_options or None,
                     store=store, parent_id=run_id)


def teacher_pairs(runs) -> list[tuple[str, str]]:
    """(student run id, teacher run id) for every run in `runs` (RunRecords) trained with a teacher."""
    return [(r.id, r.config.get("teacher")) for r in runs if isinstance(r.config, dict) and r.config.get("teacher")]


def teacher_student_rows(store, student_id: str, teacher_id: str) -> list[dict]:
    """Teacher and student side by side: role, run, name, status, parameters and final validation metrics."""
    from studio.analysis import analyze
    from studio.graph import parse_graph

    rows = []
    for role, run_id in (("teacher", teacher_id), ("student", student_id)):
        try:
            record = store.get_run(run_id)
        except StorageError:  # the store failed: not a deleted run
            raise
        except TrainError:  # the teacher was deleted since
            rows.append({"role": role, "run": run_id, "status": "deleted"})
            continue
        row = {"role": role, "run": run_id, "name": record.name, "status": record.status,
               "params": analyze(parse_graph(record.graph)).total_params}
        row.update({k: v for k, v in sorted(store.latest_metrics(run_id).items()) if k.startswith("val_")})
        rows.append(row)
    return rows
