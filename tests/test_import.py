"""`import aduni_hf` for inference loads the model and its config, not the training stack."""

import subprocess
import sys

PROBE = """
import sys
import aduni_hf
heavy = sorted(name for name in ("datasets", "sklearn", "aduni_hf.data", "aduni_hf.training") if name in sys.modules)
print(",".join(heavy))
from aduni_hf import AduCLoss, AdUniTrainer, alpha_schedule  # the training names still load, on first use
print(AduCLoss.__name__, AdUniTrainer.__name__, alpha_schedule(100))
"""


def test_import_leaves_the_training_stack_out():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    heavy, names = result.stdout.splitlines()[-2:]
    assert heavy == ""  # none of datasets, sklearn, aduni_hf.data, aduni_hf.training
    assert names.startswith("AduCLoss AdUniTrainer 0.438")


def test_lazy_names_are_listed():
    import aduni_hf

    assert {"AduCLoss", "AdUniTrainer", "AlphaScheduleCallback", "alpha_schedule"} <= set(dir(aduni_hf))
    assert set(aduni_hf.__all__) <= set(dir(aduni_hf))
