"""Fixtures of the data tests: fresh raw downloads in the official layouts, and the embedded digits_lt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import datasets
import pytest

from aduni_hf.data import build_dataset
from tests.data.layouts import AptosRaw, IsicRaw, make_aptos, make_isic


@pytest.fixture
def isic(tmp_path: Path) -> Callable[..., IsicRaw]:
    """Factory: `isic(**make_isic options)` writes a fresh ISIC download under tmp_path."""
    counter = iter(range(1000))
    return lambda **kwargs: make_isic(tmp_path / f"isic{next(counter)}", **kwargs)


@pytest.fixture
def aptos(tmp_path: Path) -> Callable[..., AptosRaw]:
    """Factory: `aptos(**make_aptos options)` writes a fresh APTOS download under tmp_path."""
    counter = iter(range(1000))
    return lambda **kwargs: make_aptos(tmp_path / f"aptos{next(counter)}", **kwargs)


@pytest.fixture(scope="session")
def digits_lt() -> datasets.Dataset:
    """digits_lt with the default options (5 folds, seed 42), built once for the session."""
    return build_dataset("digits_lt")
