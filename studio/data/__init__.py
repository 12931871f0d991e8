"""Datasets: the registry of ids, built-ins that work offline, downloads, uploads, augmentation,
and the checks that a graph fits a dataset. See types.py for the data model, registry.py for the catalogue."""

from studio.data.augment import Augment
from studio.data.fit import apply_dataset, check_graph_fits
from studio.data.registry import dataset_options, get_dataset, get_info, list_datasets
from studio.data.types import TASK_METRICS, TASKS, Dataset, DatasetInfo, Split
from studio.data.uploads import (
    csv_columns,
    delete_upload,
    list_uploads,
    upload_csv,
    upload_details,
    upload_image_zip,
    upload_text,
    upload_text_csv,
)

__all__ = [
    "TASKS", "TASK_METRICS", "Augment", "Dataset", "DatasetInfo", "Split", "apply_dataset", "check_graph_fits",
    "csv_columns", "dataset_options", "delete_upload", "get_dataset", "get_info", "list_datasets", "list_uploads",
    "upload_csv", "upload_details", "upload_image_zip", "upload_text", "upload_text_csv",
]
