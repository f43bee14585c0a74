"""Test session set-up: no network, and every Hugging Face cache in a temporary folder."""

import atexit
import os
import shutil
import tempfile

# Set before transformers/datasets/evaluate are imported by any test module.
_HF_HOME = tempfile.mkdtemp(prefix="aduni-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME  # never the user's cache
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
