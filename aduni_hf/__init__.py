"""aduni_hf: AdUni (Cong et al., MLMI 2022) for imbalanced medical image classification on the HF stack.

Importing the package registers `AdUniConfig` with AutoConfig, `AdUniModel` with AutoModel and
`AdUniForImageClassification` with AutoModelForImageClassification, and marks them for `trust_remote_code`
export, so that `save_pretrained` writes configuration_aduni.py and modeling_aduni.py beside the weights.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .configuration_aduni import AdUniConfig
from .losses import AduCLoss
from .modeling_aduni import AdUniForImageClassification, AdUniModel, AdUniPreTrainedModel
from .schedules import alpha_schedule
from .training import AdUniTrainer, AlphaScheduleCallback

AutoConfig.register(AdUniConfig.model_type, AdUniConfig, exist_ok=True)
AutoModel.register(AdUniConfig, AdUniModel, exist_ok=True)
AutoModelForImageClassification.register(AdUniConfig, AdUniForImageClassification, exist_ok=True)
AdUniConfig.register_for_auto_class()
AdUniModel.register_for_auto_class("AutoModel")
AdUniForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__version__ = "0.1.0"

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
