"""Training losses, one per file, in a registry keyed by the `method` name of a recipe.

Every registered loss is an `nn.Module` with two class attributes the trainer reads:
`num_views` (augmented views per image it needs) and `uses_alpha` (whether it reads the alpha schedule),
and a method `from_outputs(outputs, labels, alpha)` that takes the model output of the view-major batch.
Adding a method is one new file with `@LOSSES.register("name")` plus its import below.
"""

from .registry import LOSSES, build_loss  # noqa: I001  (the registry first: losses register into it)
from .aduc import AduCLoss, aduc_per_anchor
from .cross_entropy import CrossEntropyLoss

__all__ = ["LOSSES", "build_loss", "AduCLoss", "aduc_per_anchor", "CrossEntropyLoss"]
