"""aduni_hf: AdUni (Cong et al., MLMI 2022) for imbalanced medical image classification on the HF stack.

Importing the package registers `AdUniConfig` with AutoConfig, `AdUniModel` with AutoModel and
`AdUniForImageClassification` with AutoModelForImageClassification, and marks them for `trust_remote_code`
export, so that `save_pretrained` writes configuration_aduni.py and modeling_aduni.py beside the weights.

Only the model and its config are imported here, so inference does not pay for the training stack
(`datasets`, scikit-learn, the data builders); the loss, the schedules, the Trainer and its callback load on
first use.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_aduni import AdUniConfig
from .modeling_aduni import AdUniForImageClassification, AdUniModel, AdUniPreTrainedModel
from .version import __version__  # noqa: F401  (the package version, `aduni_hf.__version__`)

if TYPE_CHECKING:
    from .losses import AduCLoss
    from .schedules import alpha_schedule
    from .training import AdUniTrainer, AlphaScheduleCallback

AutoConfig.register(AdUniConfig.model_type, AdUniConfig, exist_ok=True)
AutoModel.register(AdUniConfig, AdUniModel, exist_ok=True)
AutoModelForImageClassification.register(AdUniConfig, AdUniForImageClassification, exist_ok=True)
AdUniConfig.register_for_auto_class()
AdUniModel.register_for_auto_class("AutoModel")
AdUniForImageClassification.register_for_auto_class("AutoModelForImageClassification")


# Public names that live in the training stack: module that defines each, imported on first access.
_LAZY = {
    "AduCLoss": ".losses",
    "alpha_schedule": ".schedules",
    "AdUniTrainer": ".training",
    "AlphaScheduleCallback": ".training",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "AdUniConfig",
    "AdUniModel",
    "AdUniForImageClassification",
    "AdUniPreTrainedModel",
    "AduCLoss",
    "alpha_schedule",
    "AdUniTrainer",
    "AlphaScheduleCallback",
]
