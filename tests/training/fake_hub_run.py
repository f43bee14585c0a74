"""Run a script with the offline Hub of `fake_hub.py` in place (test instrumentation for real processes).

    FAKE_HUB_DIR=/tmp/hub python tests/training/fake_hub_run.py scripts/train.py recipe.yaml [--field value ...]

The repositories live in FAKE_HUB_DIR, so a second process (another "machine") reads what the first one pushed.
Nothing of aduni_hf is replaced: only huggingface_hub's client where aduni_hf.hub.push takes it, and the Trainer's
own client, which must not be used at all.
"""

import importlib
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `tests` is importable

from tests.training.fake_hub import STORE_ENV, install  # noqa: E402


def set_attribute(target: str, value) -> None:
    module, name = target.rsplit(".", 1)
    setattr(importlib.import_module(module), name, value)


def main() -> None:
    script, *arguments = sys.argv[1:]
    install(set_attribute, Path(os.environ[STORE_ENV]))
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
