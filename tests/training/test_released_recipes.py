"""Recipe defaults that follow the released code (docs/method.md), and the runs written before them resuming.

- BALMS's meta batches are class-aware with one image of each class in turn (`meta_samples_per_class: 1`), as the
  released main.py's meta-set `ClassAwareSampler` (its default `num_samples_cls=1`); 4 is the option.
- LDAM-DRW's recipes have no dropout before the cosine classifier: the released model feeds the pooled feature
  straight to its `NormedLinear`.
- Every global batch is shuffled before it is split (`batch_shuffle: true`), as the released loop does.

A checkpoint written before a field existed resumes with the value it trained with (`EARLIER_DEFAULTS`); the current
default, which would change its result, is refused with a message naming the field.
"""

import json
from pathlib import Path

import pytest
import torch

from aduni_hf.methods import METHODS, LossInputs
from aduni_hf.recipes import ARGUMENT_CLASSES, RecipeError, parse_recipe
from aduni_hf.recipes.cross_validation import cv_recipe
from aduni_hf.recipes.run import build_model, resolved_config
from aduni_hf.recipes.run_folder import EARLIER_DEFAULTS, check_resume, run_record
from aduni_hf.training.checkpoints import RUN_RECORD_NAME
from aduni_hf.utils import write_atomic

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LDAM_RECIPES = sorted(CONFIGS.glob("*_ldam_drw.yaml"))
BALMS_RECIPES = sorted(CONFIGS.glob("*_balms.yaml"))


def recipe(name: str, *flags: str):
    return parse_recipe(ARGUMENT_CLASSES, [str(CONFIGS / name), *flags])


# ---- BALMS: the meta batches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", BALMS_RECIPES, ids=lambda p: p.stem)
def test_balms_recipes_draw_meta_batches_with_one_image_per_class_in_turn(path):
    _, _, method_args, _ = recipe(path.name)
    assert method_args.meta_samples_per_class == 1
    assert "meta_samples_per_class" in METHODS["balms"].fields  # on the model card, not reported as unused
    loss = METHODS["balms"].stages[1].loss(LossInputs(3, [30, 6, 2], None, method_args))
    assert loss.meta_samples_per_class == 1  # what MetaSamplingTrainer builds the meta sampler with
    _, _, earlier, _ = recipe(path.name, "--meta_samples_per_class", "4")
    assert (
        METHODS["balms"].stages[1].loss(LossInputs(3, [30, 6, 2], None, earlier)).meta_samples_per_class == 4
    )
    with pytest.raises(RecipeError, match="meta_samples_per_class must be an integer >= 1, got 0"):
        recipe(path.name, "--meta_samples_per_class", "0")


# ---- LDAM-DRW: no dropout before the cosine classifier --------------------------------------------------------
@pytest.mark.parametrize("path", LDAM_RECIPES, ids=lambda p: p.stem)
def test_ldam_drw_recipes_build_the_cosine_classifier_without_dropout(path):
    assert len(LDAM_RECIPES) == 3
    model_args, _, method_args, _ = recipe(path.name, "--image_size", "32")
    assert model_args.classifier_dropout == 0.0
    model = build_model(model_args, METHODS[method_args.method], ["a", "b", "c"])
    head = model.classifier
    assert type(head.dense).__name__ == "AdUniCosineLinear" and head.dropout.p == 0.0
    model.train()  # in training mode too, the classifier sees the pooled feature itself
    pooled = torch.randn(4, head.dense.weight.shape[1], generator=torch.Generator().manual_seed(0))
    assert torch.equal(head(pooled), head(pooled)) and torch.equal(head(pooled), head.dense(pooled))


# ---- older checkpoints ----------------------------------------------------------------------------------------
def checkpoint_with(tmp_path: Path, record: dict) -> Path:
    checkpoint = tmp_path / "checkpoint-8"
    checkpoint.mkdir(parents=True, exist_ok=True)
    write_atomic(checkpoint / RUN_RECORD_NAME, json.dumps(record))
    return checkpoint


def record_of(groups, data=None) -> dict:
    """The run record of a parsed recipe, as run_training writes it into every checkpoint."""
    data = data or {"class_names": ["a", "b", "c"], "digest": "d1"}
    return run_record(resolved_config(*groups), data, num_processes=1)


@pytest.mark.parametrize("name", ["demo.yaml", "demo_balms.yaml", "demo_ldam_drw.yaml"])
def test_a_checkpoint_from_before_the_new_fields_resumes_with_the_values_it_trained_with(tmp_path, name):
    older = record_of(recipe(name))
    for field in ("batch_shuffle", "meta_samples_per_class"):
        del older["fields"][field]  # written before these fields existed
    if name == "demo_ldam_drw.yaml":
        older["fields"]["classifier_dropout"] = 0.5  # the recipe before it followed the released NormedLinear
    checkpoint = checkpoint_with(tmp_path, older)
    assert (EARLIER_DEFAULTS["batch_shuffle"], EARLIER_DEFAULTS["meta_samples_per_class"]) == (False, 4)

    with pytest.raises(RecipeError) as refused:  # today's defaults would continue it with another batch order
        check_resume(checkpoint, record_of(recipe(name)))
    message = str(refused.value)
    assert "batch_shuffle: False in the checkpoint, True now" in message
    assert "meta_samples_per_class: 4 in the checkpoint, 1 now" in message
    if name == "demo_ldam_drw.yaml":
        assert "classifier_dropout: 0.5 in the checkpoint, 0.0 now" in message

    as_before = ["--batch_shuffle", "false", "--meta_samples_per_class", "4"]
    if name == "demo_ldam_drw.yaml":
        as_before += ["--classifier_dropout", "0.5"]
    assert check_resume(checkpoint, record_of(recipe(name, *as_before))) == []


def test_a_checkpoint_that_pinned_memory_resumes_where_memory_is_no_longer_pinned(tmp_path):
    """Before `dataloader_pin_memory` followed the device, recipes asked for pinned memory everywhere (the Trainer's
    default true). Pinning changes where a batch waits, not a number: such a run resumes, and continues a
    cross-validation, wherever the field resolves now."""
    older = record_of(recipe("demo.yaml"))
    older["fields"]["dataloader_pin_memory"] = True
    now = record_of(recipe("demo.yaml", "--use_cpu", "true"))
    assert now["fields"]["dataloader_pin_memory"] is False
    assert check_resume(checkpoint_with(tmp_path, older), now) == []
    assert "dataloader_pin_memory" not in cv_recipe(*recipe("demo.yaml"))  # the recipe every fold must share
