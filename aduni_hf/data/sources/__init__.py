"""One reader per raw source, each a builder registered in `DATASETS` under its `dataset` name.

A builder reads its official layout into `RawItem`s, reports the rows it cannot use through `InvalidItems`
(file and line in every message) and ends in `assemble_dataset`. Adding a source is one new file here,
registered with `@DATASETS.register("name")`, plus its import below.
"""

from . import aptos2019, csv_labels, digits_lt, imagefolder, isic2018, medmnist  # noqa: F401  (each registers itself)
from .builders import DATASETS, SOURCE_CHECKS, build_dataset, check_source

__all__ = ["DATASETS", "SOURCE_CHECKS", "build_dataset", "check_source"]
