"""Deploy: smaller and faster variants of a trained run, measured side by side, and the training
features that go with them (distillation from a teacher run, warm start, frozen nodes, fine-tuning a
pruned model).

No Streamlit here; pages/6_Deploy.py and `python -m studio compress` lay these results out.
"""

from studio.deploy.report import DeployReport, VariantRow, compress, deploy_report
from studio.deploy.variants import DESCRIPTIONS, METHODS, Variant, make_variant

__all__ = ["DESCRIPTIONS", "METHODS", "DeployReport", "Variant", "VariantRow", "compress", "deploy_report",
           "make_variant"]
