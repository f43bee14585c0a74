"""Reading a model card back as its reader would: the recipe table, checked against the run's run_config.yaml, and
the usage snippet (tests/test_train_script.py, tests/training/test_cross_validation_outputs.py)."""

from __future__ import annotations

import math
import re
from typing import Any

from aduni_hf.methods import METHODS, MethodArguments
from aduni_hf.recipes.checks import TRAINER_RECIPE_FIELDS

# The rows every recipe table has, whatever the method (besides its fields, `stage <n>` and the switches that are on).
RECIPE_ROWS = (
    "method", "data set", "backbone", "image size", "augmentation", "optimiser", "learning-rate schedule", "epochs",
    "batch", "sampler", "seed", "precision", "gradient clipping",
)  # fmt: skip


def section(text: str, heading: str) -> str:
    """The lines of the card's section `heading` (a `## ` line), up to the next one."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def recipe_table(text: str) -> dict[str, str]:
    """The card's recipe table as {setting: value}."""
    heading = next(line for line in text.splitlines() if line.startswith("## Training recipe"))
    rows = [line for line in section(text, heading).splitlines() if line.startswith("| ")]
    assert rows[0] == "| setting | value |", rows[0]
    table = {}
    for row in rows[1:]:
        key, value = (cell.strip() for cell in row.strip("|").split("|", 1))
        table[key] = value.strip(" |")
    return table


def usage_snippet(text: str) -> str:
    """The Python code of the card's "Use" section."""
    match = re.search(r"```python\n(.*?)```", section(text, "## Use"), re.DOTALL)
    assert match, "no python block in the Use section"
    return match.group(1)


def check_recipe_table(table: dict[str, str], run_config: dict[str, Any], num_processes: int = 1) -> None:
    """Every value of `table` is the one in force in `run_config` (run_config.yaml's content), and it shows no
    field that did not take effect."""
    model, data = run_config["ModelArguments"], run_config["DataArguments"]
    method, args = run_config["MethodArguments"], run_config["AdUniTrainingArguments"]
    fields = METHODS[method["method"]].fields
    assert set(RECIPE_ROWS) <= set(table), set(RECIPE_ROWS) - set(table)
    others = {
        key
        for key in set(table) - set(RECIPE_ROWS)
        if key != "training switches" and not key.startswith("stage ")
    }
    assert others == set(fields)  # of the method's fields, only those it reads
    for name in fields:
        assert table[name] == str(method[name]), name
    assert (table["method"], table["sampler"]) == (method["method"], method["sampler"])
    assert table["image size"] == f"{model['image_size']}×{model['image_size']}"
    assert table["backbone"].startswith(f"{model['backbone']} (")
    where = "training device" if data["augmentation_device"] == "device" else "data-loader workers"
    assert table["augmentation"].startswith(data["augmentation"]) and where in table["augmentation"]
    for shown in (data["dataset"], f"{data['num_folds']} folds (fold seed {data['fold_seed']})"):
        assert shown in table["data set"], shown
    assert f"{data['val_fraction']:.0%} of the training folds" in table["data set"]

    assert args["optimizer_recipe"] == "official"  # what the runs of the tests use
    optimiser = re.fullmatch(
        r"SGD, lr (\S+), momentum (\S+), weight decay (\S+) \(all parameters\)", table["optimiser"]
    )
    assert optimiser, table["optimiser"]
    in_force = [args["learning_rate"], args["sgd_momentum"], args["weight_decay"]]
    assert [float(v) for v in optimiser.groups()] == in_force
    schedule = re.match(r"linear warm-up over (\d+) epochs, then cosine to (\S+) at epoch (\d+)",
                        table["learning-rate schedule"])  # fmt: skip
    assert schedule, table["learning-rate schedule"]
    horizon = args["cosine_epochs"] or math.ceil(args["num_train_epochs"])
    assert (int(schedule[1]), float(schedule[2]), int(schedule[3])) == (
        args["warmup_epochs"], args["min_learning_rate"], horizon
    )  # fmt: skip
    if args["max_steps"] > 0:
        assert table["epochs"] == f"{args['max_steps']} optimiser steps (max_steps)"
    else:
        assert float(table["epochs"]) == args["num_train_epochs"]
    batch = re.fullmatch(
        r"(\d+) per device × (\d+) process(?:es)? × (\d+) accumulation steps? = (\d+)", table["batch"]
    )
    assert batch, table["batch"]
    per_device, accumulation = args["per_device_train_batch_size"], args["gradient_accumulation_steps"]
    assert [int(v) for v in batch.groups()] == [
        per_device, num_processes, accumulation, per_device * num_processes * accumulation
    ]  # fmt: skip
    assert int(table["seed"]) == args["seed"]
    assert table["precision"].split()[0] == (
        "bf16" if args["bf16"] else "fp16" if args["fp16"] else "float32"
    )
    clip = args["max_grad_norm"]
    assert table["gradient clipping"] == (f"norm {clip:g}" if clip else "none")

    # The Trainer's optimiser and scheduler fields, which the official recipe replaces, appear nowhere.
    text = " ".join([*table, *table.values()])
    for name in TRAINER_RECIPE_FIELDS:
        assert not re.search(rf"\b{name}\b", text), name
    assert str(args["optim"]) not in text and "adam" not in text.lower()
    assert set(table) & set(MethodArguments.__dataclass_fields__) == set(fields) | {"method", "sampler"}
