"""`import aduni_hf` for inference loads the model and its config, not the training stack."""

import subprocess
import sys

import pytest

PROBE = """
import sys
import aduni_hf
heavy = sorted(name for name in ("datasets", "sklearn", "aduni_hf.data", "aduni_hf.training") if name in sys.modules)
print(",".join(heavy))
from aduni_hf import AduCLoss, AdUniTrainer, alpha_schedule  # the training names still load, on first use
print(AduCLoss.__name__, AdUniTrainer.__name__, alpha_schedule(100))
"""


@pytest.mark.slow
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


INFERENCE_PROBE = """
import sys
import aduni_hf.inference
print(",".join(sorted(name for name in ("datasets", "sklearn", "aduni_hf.data", "aduni_hf.training") if name in sys.modules)))
"""


@pytest.mark.slow
def test_inference_loads_neither_datasets_nor_scikit_learn():
    """scripts/predict.py's library: the model, PIL and the image processor only."""
    result = subprocess.run([sys.executable, "-c", INFERENCE_PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == ""


def test_no_two_modules_share_a_name_and_no_package_imports_one_above_it():
    """Module names say what they hold: no two modules of the package share a file name. The packages form
    layers (docs/contributing.md, "Layers"): no import cycle between them, through function-level imports too."""
    import ast
    from collections import Counter
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "aduni_hf"
    files = [p for p in root.rglob("*.py") if p.name != "__init__.py"]
    packages = [p.parent.name for p in root.rglob("__init__.py")]
    names = Counter(p.stem for p in files) + Counter(packages)
    assert [name for name, count in names.items() if count > 1] == []
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        package = path.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = path.relative_to(root).with_suffix("").parts
                anchor = parts[: len(parts) - node.level] if path.name != "__init__.py" else parts[: len(parts) - node.level]
                target = (*anchor, *(node.module or "").split("."))[0] if (anchor or node.module) else ""
                if target and target != package and package != "__init__":
                    edges.setdefault(package, set()).add(target.removesuffix(".py"))

    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    cycles = sorted(package for package in edges if reaches(package, package))
    assert cycles == [], {package: sorted(edges[package]) for package in cycles}
