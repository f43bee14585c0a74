"""Recipes: YAML plus flags, and bad fields failing before any work with a message naming the field."""

import dataclasses
import re
from pathlib import Path

import pytest
from transformers import TrainingArguments

from aduni_hf.recipes import (
    ARGUMENT_CLASSES,
    CrossValidationArguments,
    RecipeError,
    parse_command_line,
    parse_recipe,
)
from aduni_hf.recipes.cli import MOST_USED_TRAINER_FIELDS
from aduni_hf.training import AdUniTrainingArguments
from tests.script_runs import run_script, run_script_here

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"


def write_recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(DEMO.read_text() + text)
    return str(path)


def test_recipe_then_flags(tmp_path):
    model, data, method, training = parse_recipe(
        ARGUMENT_CLASSES, [str(DEMO), "--temperature", "0.2", "--num_train_epochs", "1"]
    )
    assert model.backbone == "resnet18" and model.image_size == 32
    assert data.dataset == "digits_lt" and data.augmentation == "digits"
    assert method.temperature == 0.2 and method.alpha_decay == 22 and method.logit_adjustment is True
    assert (
        training.num_train_epochs == 1
        and training.learning_rate == 0.1
        and training.optimizer_recipe == "official"
    )
    assert training.remove_unused_columns is False


@pytest.mark.parametrize("recipe", ["isic2018_aduni.yaml", "aptos2019_aduni.yaml"])
def test_paper_recipes_parse_to_the_paper_settings(recipe):
    model, data, method, training = parse_recipe(ARGUMENT_CLASSES, [str(REPO / "configs" / recipe)])
    assert (model.backbone, model.image_size, data.augmentation) == ("resnet18", 384, "kaggle")
    assert (method.method, method.temperature, method.base_temperature, method.beta) == (
        "aduni",
        0.1,
        0.07,
        1.0,
    )
    assert (method.alpha_schedule, method.alpha_max, method.alpha_min, method.alpha_decay) == (
        "official",
        1.0,
        0.01,
        1000,
    )
    assert (training.num_train_epochs, training.per_device_train_batch_size) == (400, 128)
    assert (training.save_strategy, training.save_total_limit) == ("epoch", 2)  # a 400-epoch run can resume
    assert (
        training.learning_rate,
        training.weight_decay,
        training.warmup_epochs,
        training.min_learning_rate,
    ) == (
        0.1,
        1e-4,
        10,
        1e-4,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("temprature: 0.2\n", "unknown field 'temprature'; did you mean temperature"),
        ("temperature: 0\n", "temperature must be > 0"),
        ("temperature: -1.0\n", "temperature must be > 0"),
        ("alpha_min: 2.0\n", "alpha_min=2.0 must not exceed alpha_max=1.0"),
        ("alpha_schedule: exponential\n", "alpha_schedule='exponential' is unknown; choose one of"),
        ("backbone: resnet19\n", "backbone='resnet19' is not a timm model name"),
        ("method: focal\n", "method='focal' is unknown"),
        ("augmentation: mixup\n", "augmentation='mixup' is unknown"),
        ("val_fraction: 0.7\n", "val_fraction must be in"),
    ],
)
def test_bad_recipe_fields_name_the_field(tmp_path, extra, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_recipe(ARGUMENT_CLASSES, [write_recipe(tmp_path, extra)])


def test_wrong_type_is_rejected_by_argparse(tmp_path):
    with pytest.raises(RecipeError) as info:
        parse_recipe(ARGUMENT_CLASSES, [write_recipe(tmp_path, "temperature: warm\n")])
    assert str(info.value) == "argument --temperature: invalid float value: 'warm'"


def test_unknown_flag_is_rejected():
    with pytest.raises(RecipeError, match="--temprature"):
        parse_recipe(ARGUMENT_CLASSES, [str(DEMO), "--temprature", "0.2"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num_epochs", "1"], "unknown flag --num_epochs; did you mean --num_train_epochs?"),
        (["--num_epochs=1"], "unknown flag --num_epochs; did you mean --num_train_epochs?"),
        (["--logit_adjustmen", "false"], "unknown flag --logit_adjustmen; did you mean --logit_adjustment?"),
        (["--no_logit_adjustmen"], "unknown flag --no_logit_adjustmen; did you mean --no_logit_adjustment?"),
        (["--label_name", "labels", "more"], "unknown flag --label_name; did you mean --label_names?"),  # nargs="+"
        (["--seed", "3", "--fold", "1"], "unknown flag --fold; did you mean --folds?"),  # cross_validate.py's
    ],
)
def test_a_misspelt_flag_names_the_flag_meant(flags, message):
    """As a misspelt YAML key does: the closest flag only, not every flag that shares a word."""
    with pytest.raises(RecipeError) as info:
        parse_recipe((*ARGUMENT_CLASSES, CrossValidationArguments), [str(DEMO), *flags])
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--optimizer_recipe", "officia"], "argument --optimizer_recipe: invalid choice: 'officia' (choose from "
                                            "'official', 'trainer')"),
        (["--method", "cee"], "method='cee' is unknown; choose one of ['aduni', 'aduni_fixed', "),
        (["--eval_strategy", "epochh"], "please select one of ['no', 'steps', 'epoch']"),
        (["--report_to", "tensorbord"], "report_to=tensorbord is unknown; choose 'none', 'all' or integrations "
                                        "among ['azure_ml', "),
    ],
)  # fmt: skip
def test_a_misspelt_value_names_the_choices(flags, message):
    """Before any data is read: report_to's integrations are otherwise checked when the Trainer is built."""
    with pytest.raises(RecipeError) as info:
        parse_recipe(ARGUMENT_CLASSES, [str(DEMO), *flags])
    assert message in str(info.value)


# train.py as a new process (the exit status and the whole of standard error a user sees), cross_validate.py, whose
# command line is read by the same parse_command_line, in this one; the other command-line checks run in this one.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "run", "args"),
    [
        pytest.param("train.py", run_script, [], id="train.py"),
        pytest.param("cross_validate.py", run_script_here, ["--dataset", "digits_lt"], id="cross_validate.py"),
    ],
)
def test_a_script_without_a_recipe_prints_its_usage_and_exits_2(tmp_path, script, run, args):
    result = run(script, *args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
    assert lines[0] == f"usage: {script} RECIPE.yaml [--field value ...]"
    assert f"python scripts/{script} configs/demo.yaml" in lines[1] and f"{script} --help" in lines[2]
    assert lines[3].startswith("error: the first argument is a recipe (a .yaml file") and len(lines) == 4
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


@pytest.mark.parametrize("script", ["train.py", "cross_validate.py"])
def test_a_script_refuses_a_misspelt_flag_in_one_line_with_exit_2(tmp_path, script):
    result = run_script_here(script, str(DEMO), "--num_epochs", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown flag --num_epochs; did you mean --num_train_epochs?"]
    assert list(tmp_path.iterdir()) == []


def help_text(capsys, classes, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_command_line(classes, "python scripts/train.py configs/demo.yaml", list(argv))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_our_fields_by_dataclass_then_the_trainers_most_used(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = help_text(capsys, ARGUMENT_CLASSES, "--help")
    lines = text.splitlines()
    assert lines[0].endswith(" RECIPE.yaml [--field value ...]") and lines[0].startswith("usage: ")
    sections = [line[:-1] for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert sections == ["options", "ModelArguments", "DataArguments", "MethodArguments", "AdUniTrainingArguments",
                        "TrainingArguments, the most used"]  # fmt: skip
    shown = re.findall(r"^  (?:-h, )?(--\w+)", text, flags=re.MULTILINE)
    ours = [f.name for cls in ARGUMENT_CLASSES[:3] for f in dataclasses.fields(cls) if f.init]
    declared = vars(AdUniTrainingArguments)["__annotations__"]  # added, or given another default
    ours += [f.name for f in dataclasses.fields(AdUniTrainingArguments) if f.name in declared]
    most_used = [name for name in MOST_USED_TRAINER_FIELDS if name not in declared]
    assert shown == ["--help", "--help_all", *(f"--{name}" for name in ours + most_used)]
    assert "Every transformers.TrainingArguments field works too; --help_all lists them." in lines
    assert "(default: 384)" in " ".join(text.split("--image_size IMAGE_SIZE")[1].split("--zero_init")[0].split())
    assert len(lines) < 450  # the Trainer's ~170 other fields are one line away (--help_all)


def test_help_all_lists_every_field_and_a_recipe_shows_its_values(capsys):
    trainer_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert set(MOST_USED_TRAINER_FIELDS) <= trainer_fields  # no misspelt name in the short list
    classes = (*ARGUMENT_CLASSES, CrossValidationArguments)
    text = help_text(capsys, classes, str(DEMO), "--help_all")
    shown = set(re.findall(r"^  --(\w+)", text, flags=re.MULTILINE))
    assert shown >= {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}
    assert text.rstrip().splitlines()[-1].startswith("A true/false field")
    assert f"The defaults shown are {DEMO}'s values." in " ".join(text.split())
    assert "(default: 32)" in " ".join(text.split("--image_size IMAGE_SIZE")[1].split("--zero_init")[0].split())


def test_recipe_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="mapping"):
        parse_recipe(ARGUMENT_CLASSES, [str(path)])


def test_train_script_fails_before_training(tmp_path):
    output_dir = tmp_path / "never"
    result = run_script_here(
        "train.py", write_recipe(tmp_path, "alpha_min: 5\n"), "--output_dir", str(output_dir), cwd=tmp_path
    )
    assert result.returncode != 0
    assert "alpha_min=5.0 must not exceed alpha_max" in result.stderr
    assert not output_dir.exists()


def test_a_recipe_extends_its_base(tmp_path):
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "ce.yaml").write_text(f"base: {DEMO}\nmethod: ce\ntemperature: 0.3\n")
    (tmp_path / "ce_short.yaml").write_text("base: sets/ce.yaml\nnum_train_epochs: 2\n")
    model, data, method, training = parse_recipe(
        ARGUMENT_CLASSES, [str(tmp_path / "ce_short.yaml"), "--temperature", "0.4"]
    )
    assert method.method == "ce" and training.num_train_epochs == 2  # the two files
    assert method.alpha_decay == 22 and model.image_size == 32  # the demo recipe underneath
    assert method.temperature == 0.4  # a flag still wins


def test_a_recipe_base_that_is_missing_or_circular(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(RecipeError, match=r"b.yaml: base 'a.yaml' includes itself"):
        parse_recipe(ARGUMENT_CLASSES, [str(tmp_path / "a.yaml")])
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(RecipeError, match=r"nowhere.yaml: cannot read the recipe"):
        parse_recipe(ARGUMENT_CLASSES, [str(tmp_path / "c.yaml")])
    (tmp_path / "d.yaml").write_text(f"base: {DEMO}\ntemprature: 0.2\n")
    with pytest.raises(RecipeError, match=r"d.yaml: unknown field 'temprature'"):
        parse_recipe(ARGUMENT_CLASSES, [str(tmp_path / "d.yaml")])


BASES = {"isic2018": "isic2018_aduni.yaml", "aptos2019": "aptos2019_aduni.yaml", "demo": "demo.yaml"}
METHOD_RECIPES = sorted(
    p
    for p in (REPO / "configs").glob("*_*.yaml")
    if p.stem.split("_")[0] in BASES and p.name not in BASES.values() and not p.stem.endswith("_pretrained")
)
PRETRAINED_RECIPES = sorted((REPO / "configs").glob("*_aduni_pretrained.yaml"))


def test_every_method_has_a_recipe_per_data_set():
    from aduni_hf.methods import METHODS

    for dataset in BASES:
        named = {p.stem.removeprefix(f"{dataset}_") for p in METHOD_RECIPES if p.stem.startswith(f"{dataset}_")}
        assert named | {"aduni"} == set(METHODS), dataset


@pytest.mark.parametrize("recipe", METHOD_RECIPES, ids=lambda p: p.stem)
def test_a_method_recipe_is_its_data_sets_recipe_with_only_the_method_changed(recipe):
    """The paper's protocol: the same backbone, resolution, augmentation, schedule and folds for every method."""
    dataset = recipe.stem.split("_")[0]
    method = recipe.stem.removeprefix(f"{dataset}_")
    ours = parse_recipe(ARGUMENT_CLASSES, [str(recipe)])
    base = parse_recipe(ARGUMENT_CLASSES, [str(REPO / "configs" / BASES[dataset])])
    assert ours[2].method == method
    method_fields = {"method", "alpha_schedule", "alpha_max"} | ({"sampler"} if method == "cicl" else set()) | {
        f for f in vars(ours[2]) if f.startswith(("paco_", "drw_", "ldam_", "max_margin", "queue_", "stage2_"))
    }
    if method == "ldam_drw":  # the released NormedLinear has no dropout before it (docs/method.md, "Baselines")
        method_fields.add("classifier_dropout")
    for theirs, mine in zip(base, ours, strict=True):
        differing = {
            name for name in (f.name for f in dataclasses.fields(mine) if f.init)
            if name not in method_fields and name not in ("output_dir", "run_name", "config")
            and getattr(mine, name) != getattr(theirs, name)
        }  # fmt: skip
        assert not differing, f"{recipe.name} differs from {BASES[dataset]} in {sorted(differing)}"
    assert ours[3].output_dir.endswith(f"{dataset}_{method}")


@pytest.mark.parametrize("recipe", PRETRAINED_RECIPES, ids=lambda p: p.stem)
def test_a_pretrained_recipe_is_its_data_sets_recipe_with_only_the_encoders_initialisation_changed(recipe):
    """ISIC2018 and APTOS2019 from ImageNet weights, beside the paper's from-scratch recipes."""
    assert {p.stem.split("_")[0] for p in PRETRAINED_RECIPES} == {"isic2018", "aptos2019"}
    dataset = recipe.stem.split("_")[0]
    ours = parse_recipe(ARGUMENT_CLASSES, [str(recipe)])
    base = parse_recipe(ARGUMENT_CLASSES, [str(REPO / "configs" / BASES[dataset])])
    assert ours[0].backbone_pretrained == "timm/resnet18.a1_in1k" and base[0].backbone_pretrained is None
    for theirs, mine in zip(base, ours, strict=True):
        differing = {
            name for name in (f.name for f in dataclasses.fields(mine) if f.init)
            if getattr(mine, name) != getattr(theirs, name)
        }  # fmt: skip
        assert differing <= {"backbone_pretrained", "output_dir", "run_name"}, recipe.name
    assert ours[3].output_dir == f"outputs/{dataset}_aduni_pretrained"


def test_the_papers_aduc_alternatives_are_recipe_fields_that_reach_the_loss():
    from aduni_hf.methods import METHODS, LossInputs

    def aduc(method_args):
        return METHODS["aduni"].stages[0].loss(LossInputs(10, [5] * 10, None, method_args))

    _, _, method, _ = parse_recipe(
        ARGUMENT_CLASSES,
        [str(DEMO), "--classifier_temperature", "0.1", "--positive_normalisation", "false", "--beta_from_alpha", "true"],
    )
    loss = aduc(method)
    assert (loss.classifier_temperature, loss.positive_normalisation, loss.beta_from_alpha) == (0.1, False, True)
    assert loss.alpha_schedule == method.alpha() and loss.alpha_schedule.decay == 22  # the demo's schedule
    released = aduc(parse_recipe(ARGUMENT_CLASSES, [str(DEMO)])[2])
    assert (released.classifier_temperature, released.positive_normalisation, released.beta_from_alpha) == (
        1.0, True, False,
    )  # fmt: skip
