"""Training losses, one per file, in a registry keyed by the `method` name of a recipe.

Every registered loss is an `nn.Module` with two class attributes the trainer reads:
`num_views` (augmented views per image it needs) and `uses_alpha` (whether it reads the alpha schedule),
and a method `from_outputs(outputs, labels, alpha)` that takes the model output of the view-major batch.
A loss with its own forward (PaCo's momentum key encoder) defines `forward_views(model, pixel_values, labels,
alpha)` instead, and keeps its training state (encoder, queue) in its `state_dict`, saved with checkpoints.
Adding a method is one new file with `@LOSSES.register("name")` plus its import below.
"""

from .registry import LOSSES, build_loss  # noqa: I001  (the registry first: losses register into it)
from .aduc import AduCLoss, aduc_per_anchor
from .cross_entropy import CrossEntropyLoss
from .paco import PaCoAduCLoss, PaCoLoss, paco_per_anchor

__all__ = [
    "LOSSES",
    "build_loss",
    "AduCLoss",
    "aduc_per_anchor",
    "CrossEntropyLoss",
    "PaCoLoss",
    "PaCoAduCLoss",
    "paco_per_anchor",
]
