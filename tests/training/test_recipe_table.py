"""The cards' recipe table (`aduni_hf.recipes.recipe_table.recipe_summary`) for recipes the end-to-end card tests
do not train (tests/test_train_script.py and tests/training/test_cross_validation_outputs.py check a trained run's
table against its run_config.yaml): the Trainer's optimiser, a method in two stages, the length and the batch."""

from aduni_hf.methods import METHODS
from aduni_hf.recipes import ARGUMENT_CLASSES, parse_recipe
from aduni_hf.recipes.recipe_table import recipe_summary
from tests.training.test_cli import DEMO


def table(*flags: str) -> dict[str, str]:
    model_args, data_args, method_args, training_args = parse_recipe(ARGUMENT_CLASSES, [str(DEMO), *flags])
    return recipe_summary(model_args, data_args, method_args, training_args, METHODS[method_args.method])


def test_the_trainers_optimiser_and_schedule_replace_the_official_ones():
    rows = table(
        "--optimizer_recipe", "trainer", "--optim", "adamw_torch", "--learning_rate", "0.001",
        "--lr_scheduler_type", "cosine", "--warmup_steps", "0.1",
    )  # fmt: skip
    assert rows["optimiser"] == "adamw_torch, lr 0.001, weight decay 0.0001 (betas 0.9, 0.999; eps 1e-08)"
    assert rows["learning-rate schedule"] == "cosine, warm-up 10% of the steps"
    assert rows["gradient clipping"] == "norm 1"  # the Trainer's default, in force under its recipe
    assert "SGD" not in str(rows) and "momentum" not in str(rows)  # the official recipe's, which did not run


def test_the_official_recipe_shows_sgd_and_its_per_epoch_schedule():
    rows = table("--cosine_epochs", "40")
    assert rows["optimiser"] == "SGD, lr 0.1, momentum 0.9, weight decay 0.0001 (all parameters)"
    assert rows["learning-rate schedule"] == (
        "linear warm-up over 2 epochs, then cosine to 0.0001 at epoch 40 (the learning rate changes once per epoch)"
    )
    assert rows["gradient clipping"] == "none"


def test_length_batch_precision_and_switches_as_in_force():
    rows = table(
        "--max_steps", "7", "--gradient_accumulation_steps", "4", "--bf16", "true", "--freeze_bn", "true",
        "--contrast_chunk_size", "32", "--data_seed", "5",
    )  # fmt: skip
    assert rows["epochs"] == "7 optimiser steps (max_steps)"
    assert rows["batch"] == "64 per device × 1 process × 4 accumulation steps = 256"
    assert rows["precision"].startswith("bf16 autocast")
    assert rows["training switches"] == "freeze_bn, contrast_chunk_size 32"  # sync_bn needs several processes
    assert rows["seed"] == "0 (data order: data_seed 5)"
    assert rows["augmentation"] == "digits (on the data-loader workers)"  # `auto` on the CPU
    assert "training switches" not in table()


def test_a_two_stage_method_shows_its_stages_and_only_the_fields_it_reads():
    rows = table("--method", "decouple")
    assert rows["method"] == "decouple" and {"stage 1", "stage 2"} <= set(rows)
    assert "SGD lr 0.05" in rows["stage 2"]
    method_fields = set(rows) & set(METHODS["aduni"].fields + METHODS["decouple"].fields)
    assert method_fields == set(METHODS["decouple"].fields)
