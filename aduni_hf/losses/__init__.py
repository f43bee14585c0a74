"""Training losses, one per file, in a registry keyed by the `method` name of a recipe.

Every registered loss is an `nn.Module` with two class attributes the trainer reads:
`num_views` (augmented views per image it needs) and `uses_alpha` (whether it reads the alpha schedule),
and a method `from_outputs(outputs, labels, alpha)` that takes the model output of the view-major batch.
A loss that needs a classifier other than the default linear one names it in a class attribute
`classifier_type` (`AdUniConfig.classifier_type`: LDAM-DRW's "cosine"); a loss that follows the training
progress has a method `set_epoch(epoch, num_epochs)` (LDAM-DRW's deferred re-weighting).
Adding a method is one new file with `@LOSSES.register("name")` plus its import below.
"""

from .registry import LOSSES, build_loss  # noqa: I001  (the registry first: losses register into it)
from .aduc import AduCLoss, aduc_per_anchor
from .balanced_softmax import BalancedSoftmaxLoss
from .cross_entropy import CrossEntropyLoss
from .ldam import LDAMDRWLoss, drw_class_weights, ldam_margins
from .paco import PaCoAduCLoss, PaCoLoss, paco_per_anchor
from .supcon import SupConLoss, supcon_per_anchor
from .stages import Stage, method_stages  # decouple and cicl, trained in two stages
from .balms import BalmsLoss, MetaBalancedSoftmaxLoss, MetaSampler  # balms, two stages with a Meta Sampler

__all__ = [
    "Stage",
    "method_stages",
    "LOSSES",
    "build_loss",
    "AduCLoss",
    "aduc_per_anchor",
    "BalancedSoftmaxLoss",
    "BalmsLoss",
    "MetaBalancedSoftmaxLoss",
    "MetaSampler",
    "CrossEntropyLoss",
    "LDAMDRWLoss",
    "drw_class_weights",
    "ldam_margins",
    "PaCoLoss",
    "PaCoAduCLoss",
    "paco_per_anchor",
    "SupConLoss",
    "supcon_per_anchor",
]
