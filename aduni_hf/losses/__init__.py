"""Training losses, one formula per file, each written from the paper and the released code it cites.

Every loss is a `MethodLoss` (`base.py`): it takes the model output of a view-major batch (or runs the model
itself) and returns a `LossOutput`. Which loss a method trains with, with which recipe fields, is the method's
choice: aduni_hf/methods.
"""

from .aduc import AduCLoss, aduc_per_anchor
from .balanced_softmax_loss import BalancedSoftmaxLoss
from .class_prior import checked_class_counts, log_class_prior
from .cross_entropy import CrossEntropyLoss
from .ldam import LDAMDRWLoss, drw_class_weights, ldam_margins
from .meta_balanced_softmax import MetaBalancedSoftmaxLoss, MetaDraw, MetaSampler
from .method_loss import LossOutput, MethodLoss, view_major_labels
from .paco_loss import PaCoLoss, paco_per_anchor
from .supcon import SupConLoss, supcon_per_anchor

__all__ = [
    "LossOutput",
    "MethodLoss",
    "view_major_labels",
    "checked_class_counts",
    "log_class_prior",
    "AduCLoss",
    "aduc_per_anchor",
    "BalancedSoftmaxLoss",
    "MetaBalancedSoftmaxLoss",
    "MetaDraw",
    "MetaSampler",
    "CrossEntropyLoss",
    "LDAMDRWLoss",
    "drw_class_weights",
    "ldam_margins",
    "PaCoLoss",
    "paco_per_anchor",
    "SupConLoss",
    "supcon_per_anchor",
]
