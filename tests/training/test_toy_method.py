"""Adding a method is one file plus its registration: this file defines a loss the package does not have (the focal
loss of Lin et al., ICCV 2017, "Focal Loss for Dense Object Detection", Eq. 4 with alpha_t = 1), declares the method
around it, registers it, and trains it end to end through scripts/train.py's own code path. Nothing else of the
package is edited for it."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from aduni_hf.losses import LossOutput, MethodLoss, view_major_labels
from aduni_hf.methods import METHODS, LossInputs, Method, Stage, register

REPO = Path(__file__).resolve().parents[2]
GAMMA = 2.0


class FocalLoss(MethodLoss):
    """-(1 - p_y)^gamma log p_y of every view-major row, averaged; gamma = 2 as the paper's default."""

    def __init__(self, num_classes: int, gamma: float = GAMMA) -> None:
        super().__init__()
        self.num_classes, self.gamma = num_classes, gamma

    def from_outputs(self, outputs, labels: Tensor) -> LossOutput:
        row_labels = view_major_labels(outputs.logits, labels, self.num_classes)
        log_p = F.log_softmax(outputs.logits.float(), dim=1).gather(1, row_labels[:, None])[:, 0]
        per_row = -((1 - log_p.exp()) ** self.gamma) * log_p
        return LossOutput(per_row.mean(), per_row.detach(), row_labels)


def focal_loss(inputs: LossInputs) -> FocalLoss:
    return FocalLoss(inputs.num_classes)


TOY = Method(
    name="toy_focal",
    description="focal loss (Lin et al. 2017) on one augmented view: a method added by a test, in one file.",
    stages=(Stage(loss=focal_loss, num_views=1, description="focal loss, gamma 2"),),
)


@pytest.fixture
def registered():
    register(TOY)
    yield TOY
    METHODS.unregister(TOY.name)


def test_the_focal_loss_is_its_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    output = FocalLoss(3).from_outputs(type("Output", (), {"logits": logits}), labels)
    p = logits.softmax(dim=1)[torch.arange(2), labels]
    torch.testing.assert_close(output.loss, (-((1 - p) ** 2) * p.log()).mean())


@pytest.mark.slow
def test_a_method_registered_from_outside_trains_through_the_training_script(registered, tmp_path, monkeypatch):
    output_dir = tmp_path / "toy"
    monkeypatch.setattr(sys, "argv", [
        "scripts/train.py", str(REPO / "configs" / "demo.yaml"), "--method", "toy_focal", "--image_size", "16",
        "--max_steps", "3", "--per_device_train_batch_size", "16", "--logging_strategy", "steps",
        "--logging_steps", "1", "--output_dir", str(output_dir),
    ])  # fmt: skip
    runpy.run_path(str(REPO / "scripts" / "train.py"), run_name="__main__")

    results = json.loads((output_dir / "test_results.json").read_text())
    assert 0 <= results["test_accuracy"] <= 1 and "test_best_val_accuracy" in results
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 3 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in steps)
    assert all("alpha" not in entry for entry in steps)  # no epoch state declared, none logged
    assert any(key.startswith("class_loss_") for key in steps[0])  # the per-class logs read its LossOutput
    assert TOY.description in (output_dir / "README.md").read_text()
    config = json.loads((output_dir / "config.json").read_text())
    assert config["classifier_type"] == "linear" and len(config["id2label"]) == 10
