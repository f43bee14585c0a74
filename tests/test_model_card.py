"""The model cards of a single run and of a cross-validation, rendered from the one template in the package.

Hand-made inputs only: no network (tests/conftest.py sets HF_HUB_OFFLINE=1), no training.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from aduni_hf.evaluation.cv_summary import REPORTED_MODELS
from aduni_hf.evaluation.metric_names import dataset_metrics
from aduni_hf.hub import render_cv_model_card, render_model_card
from aduni_hf.hub.model_card import DATASET_BIASES, DEFAULT_TEMPLATE, MODEL_ID_PLACEHOLDER, UNKNOWN_BIAS
from tests.card_helpers import usage_snippet

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["nevus", "melanoma", "bcc"]
CITATION = "@inproceedings{cong2022aduni,"
RESEARCH_ONLY = "**Research use only.**"
RECIPE = {"backbone": "resnet18 (from scratch)", "epochs, batch per device": "2, 8", "unset": None}


def summary(accuracy: float, f1: list[float]) -> dict:
    """One model's metrics in cv_results.json's layout (a fold, a mean or a std)."""
    return {
        "accuracy": accuracy,
        "macro_f1": accuracy / 2,
        "balanced_accuracy": accuracy / 4,
        "f1": dict(zip(CLASSES, f1, strict=True)),
    }


def sub_result(selection: str, accuracy: float) -> dict:
    return {
        "selection": selection,
        "class_names": CLASSES,
        "num_folds": 5,
        "folds": {"0": summary(accuracy, [0.5, 0.5, 0.5]), "1": summary(accuracy, [0.5, 0.5, 0.5])},
        "mean": summary(accuracy, [0.5, 0.5, 0.5]),
        "std": summary(0.01, [0.0, 0.0, 0.0]),
    }


@pytest.fixture
def cv_results() -> dict:
    return {
        "title": "AdUni on ISIC 2018",
        "method": "aduni",
        "sampler": "none",
        "dataset": "data/isic2018",
        "dataset_name": "isic2018",
        "num_folds": 2,
        "class_names": CLASSES,
        "selection": REPORTED_MODELS["last_epoch"][1],
        "selection_metric": "macro_f1",
        "recipe": {"num_train_epochs": 2},
        "paper": {"accuracy": [0.878, 0.00436], "macro_f1": [0.751, 0.0123]},
        "folds": {"0": summary(0.8, [0.9, 0.6, 0.3]), "1": summary(0.9, [0.95, 0.7, 0.4])},
        "mean": summary(0.84, [0.925, 0.65, 0.35]),
        "std": summary(0.0708, [0.0354, 0.0707, 0.0707]),
        "best_validation": sub_result(REPORTED_MODELS["best_validation"][1].format(metric="macro_f1"), 0.83),
        "official_test_selection": sub_result(REPORTED_MODELS["official_test_selection"][1], 0.88),
    }


def run_card(**overrides) -> ModelCard:
    results = {
        "test_accuracy": 0.81234,
        "test_macro_f1": 0.70123,
        "test_balanced_accuracy": 0.65,
        "test_f1_nevus": 0.9,
        "test_f1_melanoma": 0.5,
        "test_f1_bcc": 0.25,
        "test_official_selection_accuracy": 0.85,
        "test_official_selection_macro_f1": 0.75,
        "test_official_selection_balanced_accuracy": 0.7,
        "test_official_selection_epoch": 4.0,
    }
    kwargs = {
        "model_name": "demo-run",
        "model_id": "someone/demo-run",
        "dataset_name": "digits_lt",
        "class_names": CLASSES,
        "train_class_counts": [50, 10, 2],
        "results": results,
        "recipe": RECIPE,
        "method": "aduni",
        "method_description": "RUN METHOD DESCRIPTION.",
        "test_fold": 1,
        "num_folds": 5,
        "backbone": "resnet18",
        "projection_dim": 128,
        "image_size": 32,
        "dataset_key": "digits_lt",
        "paper": {"accuracy": (0.878, 0.00436), "macro_f1": (0.751, 0.0123)},
        **overrides,
    }
    return render_model_card(**kwargs)


def metric_values(card: ModelCard) -> dict[str, float]:
    parsed = ModelCard(str(card))  # what a reader of README.md gets back
    return {result.metric_type: result.metric_value for result in parsed.data.eval_results}


def test_run_card_model_index_and_content():
    card = run_card()
    assert metric_values(card) == {"accuracy": 0.8123, "f1": 0.7012, "balanced_accuracy": 0.65}
    text = card.text
    assert text.startswith("\n# demo-run\n")
    assert "## Results on the held-out test fold" in text
    assert "held-out fold 1 of 5" in text and "imbalance ratio 25.0" in text
    assert "Method `aduni`:\nRUN METHOD DESCRIPTION." in text
    assert "| final model (last epoch) | 0.8123 | 0.7012 | 0.6500 |" in text
    assert "| chosen ON THE TEST FOLD by the released code's rule (epoch 4; optimistic) | 0.8500 |" in text
    assert "| paper, 5-fold mean (Cong et al. 2022) | 0.878 ± 4.36e-03 | 0.751 ± 1.23e-02 | – |" in text
    assert "| class | train images | F1 |" in text and "| bcc | 2 | 0.2500 |" in text
    assert "| backbone | resnet18 (from scratch) |" in text and "| epochs, batch per device | 2, 8 |" in text
    assert 'pipeline("image-classification", model="someone/demo-run", trust_remote_code=True)' in text
    assert "subfolder=" not in text and MODEL_ID_PLACEHOLDER not in text
    assert DATASET_BIASES["digits_lt"] in text


def test_cv_card_model_index(cv_results):
    card = render_cv_model_card(cv_results, method_description="CV METHOD DESCRIPTION.", recipe=RECIPE)
    # ISIC 2018's headline, balanced multi-class accuracy, comes first and is named as Task 3 names it
    assert metric_values(card) == {"balanced_accuracy": 0.21, "accuracy": 0.84, "f1": 0.42}
    parsed = ModelCard(str(card)).data
    first = parsed.eval_results[0]
    assert first.metric_type == "balanced_accuracy"
    assert first.metric_name == "Balanced multi-class accuracy (ISIC 2018 Task 3 ranking metric) (CV mean)"
    assert "cross-validation" in parsed.tags
    assert {r.dataset_type for r in parsed.eval_results} == {"isic2018"}
    assert {r.dataset_split for r in parsed.eval_results} == {
        "2-fold cross-validation (folds 0, 1), mean of the test folds"
    }


def test_cv_card_content(cv_results):
    card = render_cv_model_card(
        cv_results,
        method_description="CV METHOD DESCRIPTION.",
        recipe=RECIPE,
        figures=[("per-class F1", "figures/per_class_f1.png")],
    )
    text = card.text
    assert text.startswith("\n# AdUni on ISIC 2018: 2-fold cross-validation\n")
    assert "## Results (test folds: mean ± standard deviation over folds)" in text
    assert "Results on the held-out test fold" not in text
    assert "Method `aduni`, sampler `none`:\nCV METHOD DESCRIPTION." in text
    # Every reported model, as mean ± std over the folds; the one chosen on the test fold is labelled so.
    assert (
        "| the model after the last epoch | 0.840 ± 7.08e-02 | 0.420 ± 3.54e-02 | 0.210 ± 1.77e-02 |" in text
    )
    assert "| model | accuracy | macro-F1 | **balanced accuracy** |" in text
    assert "Headline metric (in bold): balanced multi-class accuracy" in text
    assert "ISIC 2018 Task 3's ranking metric" in text
    assert (
        "| the model with the best validation macro_f1 (inner validation split) | 0.830 ± 1.00e-02 |" in text
    )
    official_row = next(line for line in text.splitlines() if line.startswith("| SELECTED ON THE TEST FOLD"))
    assert "optimistic" in official_row and "| 0.880 ± 1.00e-02 |" in official_row
    assert "reads the test fold every epoch" in text and "overstates performance" in text
    assert "| paper, 5-fold mean (Cong et al. 2022) | 0.878 ± 4.36e-03 | 0.751 ± 1.23e-02 | – |" in text
    # Per-class F1 as mean ± std, no training counts.
    assert "| class | F1 |" in text and "train images" not in text
    assert "| nevus | 0.925 ± 3.54e-02 |" in text and "| bcc | 0.350 ± 7.07e-02 |" in text
    assert "![per-class F1](figures/per_class_f1.png)" in text
    assert "## Training recipe (every fold)" in text
    assert "| backbone | resnet18 (from scratch) |" in text and "| epochs, batch per device | 2, 8 |" in text
    assert "| unset |" not in text
    # The usage snippet loads one fold's model; without a Hub id the id is a marked placeholder.
    assert (
        f'AutoModelForImageClassification.from_pretrained(\n    "{MODEL_ID_PLACEHOLDER}", subfolder="fold_0", '
        "trust_remote_code=True\n)" in text
    )
    assert f"`{MODEL_ID_PLACEHOLDER}` is a placeholder: replace it with the Hub repository" in text
    assert DATASET_BIASES["isic2018"] in text
    assert "Fold-to-fold spread is given beside every mean" in text


def test_cv_card_with_model_id_and_without_optional_rows(cv_results):
    for key in ("best_validation", "official_test_selection"):
        del cv_results[key]
    cv_results.update(paper=None, dataset_name="unregistered")
    card = render_cv_model_card(cv_results, method_description="d", recipe={}, model_id="someone/aduni-cv")
    text = card.text
    assert '"someone/aduni-cv", subfolder="fold_0"' in text and MODEL_ID_PLACEHOLDER not in text
    assert ModelCard(str(card)).data.model_name == "someone/aduni-cv"
    assert "SELECTED ON THE TEST FOLD" not in text and "best validation" not in text
    assert "paper, 5-fold mean" not in text and "reads the test fold every epoch" not in text
    assert UNKNOWN_BIAS in text


@pytest.mark.parametrize(
    ("hub_model_id", "shown"),
    [
        ("someone/demo-run", "someone/demo-run"),
        (None, MODEL_ID_PLACEHOLDER),
        ("demo-run", MODEL_ID_PLACEHOLDER),
    ],
)
def test_run_card_snippet_names_the_hub_id_or_a_marked_placeholder(hub_model_id, shown):
    """A full Hub id is what `pipeline` loads; without one (or with a bare name, pushed under an owner the card
    cannot know) a marked placeholder, never the local folder's name."""
    text = run_card(model_id=hub_model_id, model_name="demo").text
    assert usage_snippet(text) == (
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("image-classification", model="{shown}", trust_remote_code=True)\n'
        'classifier("image.png")\n'
    )
    assert 'model="demo"' not in text
    assert (f"`{MODEL_ID_PLACEHOLDER}` is a placeholder" in text) == (shown == MODEL_ID_PLACEHOLDER)


@pytest.mark.parametrize("hub_model_id", ["someone/aduni-cv", None])
def test_a_folds_card_and_the_cross_validation_card_share_the_usage_section(cv_results, hub_model_id):
    """A fold's card (its model in `fold_0/` of the experiment's repository) and the summary card load the same
    model with the same snippet: `subfolder`, the remote code from the top of the repository."""
    fold_card = run_card(model_id=hub_model_id, subfolder="fold_0").text
    cv_card = render_cv_model_card(
        cv_results, method_description="d", recipe=RECIPE, model_id=hub_model_id or ""
    ).text
    shown = hub_model_id or MODEL_ID_PLACEHOLDER
    for text in (fold_card, cv_card):
        assert usage_snippet(text) == (
            "from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline\n\n"
            "model = AutoModelForImageClassification.from_pretrained(\n"
            f'    "{shown}", subfolder="fold_0", trust_remote_code=True\n)\n'
            f'processor = AutoImageProcessor.from_pretrained("{shown}", subfolder="fold_0")\n'
            'classifier = pipeline("image-classification", model=model, image_processor=processor)\n'
            'classifier("image.png")\n'
        )
        assert "from the top of the repository" in text
        assert ("(the one that holds `fold_0/`)" in text) == (hub_model_id is None)


def test_run_card_of_aptos_shows_kappa_as_its_headline():
    """APTOS2019's card: quadratic weighted kappa in bold beside accuracy, macro-F1 and balanced accuracy, first
    in the model-index with its weights; its value in every reported model's row."""
    results = {
        "test_accuracy": 0.8, "test_macro_f1": 0.6, "test_balanced_accuracy": 0.55, "test_quadratic_kappa": 0.87654,
        "test_roc_auc": 0.9, "test_f1_nevus": 0.9, "test_f1_melanoma": 0.5, "test_f1_bcc": 0.4,
        "test_best_val_accuracy": 0.79, "test_best_val_macro_f1": 0.61, "test_best_val_balanced_accuracy": 0.5,
        "test_best_val_quadratic_kappa": 0.81, "test_best_val_epoch": 3.0,
    }  # fmt: skip
    card = run_card(results=results, dataset_name="aptos2019", dataset_key="aptos2019", paper=None)
    parsed = ModelCard(str(card)).data.eval_results
    assert [(r.metric_type, r.metric_value) for r in parsed] == [
        ("cohen_kappa", 0.8765), ("accuracy", 0.8), ("f1", 0.6), ("balanced_accuracy", 0.55)
    ]
    assert parsed[0].metric_name == "Quadratic weighted kappa" and parsed[0].metric_args == {"weights": "quadratic"}
    text = card.text
    assert "| model | accuracy | macro-F1 | balanced accuracy | **quadratic weighted kappa** |" in text
    assert "| final model (last epoch) | 0.8000 | 0.6000 | 0.5500 | 0.8765 |" in text
    assert "| best on the inner validation split (epoch 3) | 0.7900 | 0.6100 | 0.5000 | 0.8100 |" in text
    assert "the metric the APTOS 2019 Blindness Detection competition ranked by" in text
    assert "ROC-AUC" not in text  # not one of APTOS's metrics: in test_results.json only


def test_run_card_metrics_follow_the_data_sets_metadata():
    """RetinaMNIST (ROC-AUC headline, kappa too); a data set's metadata overrides its source's default; an
    undefined value (NaN) is shown in the table and left out of the model-index; the paper's row has '–' there."""
    results = {
        "test_accuracy": 0.5, "test_macro_f1": 0.4, "test_balanced_accuracy": 0.45,
        "test_quadratic_kappa": float("nan"), "test_roc_auc": 0.75,
    }  # fmt: skip
    card = run_card(results=results, dataset_name="retinamnist", dataset_key="retinamnist")
    assert [r.metric_type for r in ModelCard(str(card)).data.eval_results] == [
        "roc_auc", "accuracy", "f1", "balanced_accuracy"
    ]  # fmt: skip
    text = card.text
    header = "| model | accuracy | macro-F1 | balanced accuracy | **ROC-AUC (macro, one-vs-rest)** | quadratic weighted kappa |"
    assert header in text
    assert "| final model (last epoch) | 0.5000 | 0.4000 | 0.4500 | 0.7500 | nan |" in text
    assert "| paper, 5-fold mean (Cong et al. 2022) | 0.878 ± 4.36e-03 | 0.751 ± 1.23e-02 | – | – | – |" in text
    assert "the metric MedMNIST reports with accuracy" in text
    custom = run_card(results=results, metrics=dataset_metrics({"headline_metric": "accuracy", "dataset_metrics": []}))
    assert "| model | **accuracy** | macro-F1 | balanced accuracy |" in custom.text
    assert "Headline metric (in bold): accuracy." in custom.text


def test_an_unknown_metric_in_the_metadata_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"data/x: its metadata, headline_metric: unknown metric\(s\) \['auroc'\]"):
        dataset_metrics({"headline_metric": "auroc"}, where="data/x: its metadata")


def test_both_cards_come_from_the_one_template(cv_results):
    template = DEFAULT_TEMPLATE.read_text()
    cv_card = render_cv_model_card(cv_results, method_description="d", recipe=RECIPE)
    for card in (run_card(), cv_card):
        text = card.text
        for block in (CITATION, RESEARCH_ONLY, "## Intended use and limitations", "## Use"):
            assert block in template and block in text
        assert "{{" not in text and "{%" not in text  # every variable filled


def test_template_path_is_honoured(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n\n# custom {{ model_name }}\n")
    assert run_card(template_path=template).text.strip() == "# custom demo-run"
    with pytest.raises(FileNotFoundError):
        run_card(template_path=tmp_path / "missing.md")


def test_top_level_model_card_is_the_packaged_template():
    assert (REPO / "model_card.md").read_bytes() == DEFAULT_TEMPLATE.read_bytes()
    assert DEFAULT_TEMPLATE == REPO / "aduni_hf" / "hub" / "model_card_template.md"
