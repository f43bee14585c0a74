"""Tests of the classification metrics against hand-computed values and a confusion-matrix loop oracle
written from docs/method.md, "Evaluation and folds", and of the offline `evaluate` module."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
from transformers import EvalPrediction

import aduni_hf.evaluation
from aduni_hf.evaluation import EVALUATE_METRIC_PATH, build_compute_metrics, classification_metrics


def confusion_matrix_oracle(predictions, references, class_names):
    """docs/method.md, "Evaluation and folds", with explicit loops: precision = TP / (predicted + 1e-20), recall = TP / support,
    F1 = 2PR / (P + R + 1e-20); macro-F1 over all classes; balanced accuracy = mean recall over the classes
    present in the references. A class with no support gets recall 0 here (the official code would divide
    by zero; every test fold there has every class)."""
    n = len(class_names)
    matrix = [[0] * n for _ in range(n)]  # matrix[true][predicted]
    for p, r in zip(predictions, references, strict=True):
        matrix[r][p] += 1
    f1, recalls = {}, []
    for c in range(n):
        tp = matrix[c][c]
        predicted = sum(matrix[t][c] for t in range(n))
        support = sum(matrix[c])
        precision = tp / (predicted + 1e-20)
        recall = tp / support if support else 0.0
        f1[class_names[c]] = 2 * precision * recall / (precision + recall + 1e-20)
        if support:
            recalls.append(recall)
    correct = sum(matrix[c][c] for c in range(n))
    result = {
        "accuracy": correct / len(references),
        "macro_f1": sum(f1.values()) / n,
        "balanced_accuracy": sum(recalls) / len(recalls),
    }
    result.update({f"f1_{name}": value for name, value in f1.items()})
    return result


def assert_metrics_equal(got, expected, tol=1e-12):
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=tol), key
        assert isinstance(got[key], float), key


# refs [0,0,1,1,2], preds [0,1,1,1,0]:
#   a: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
#   b: TP 2, predicted 3, support 2 -> P 2/3, R 1,   F1 4/5
#   c: TP 0, predicted 0, support 1 -> F1 0 (never predicted)
#   d: absent from both            -> F1 0
HAND_PREDICTIONS = [0, 1, 1, 1, 0]
HAND_REFERENCES = [0, 0, 1, 1, 2]


def test__hand_computed_values():
    got = classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c"])
    expected = {
        "accuracy": 3 / 5,
        "macro_f1": (0.5 + 0.8 + 0.0) / 3,
        "balanced_accuracy": (0.5 + 1.0 + 0.0) / 3,
        "f1_a": 0.5,
        "f1_b": 0.8,
        "f1_c": 0.0,
    }
    assert_metrics_equal(got, expected)


def test__macro_f1_counts_every_class_but_balanced_accuracy_only_present_ones():
    got = classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c", "d"])
    assert got["macro_f1"] == pytest.approx((0.5 + 0.8) / 4, abs=1e-12)
    assert got["balanced_accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert got["f1_d"] == 0.0


def test__perfect_and_all_wrong():
    names = ["x", "y", "z"]
    perfect = classification_metrics([0, 1, 2, 2], [0, 1, 2, 2], names)
    assert perfect["accuracy"] == perfect["macro_f1"] == perfect["balanced_accuracy"] == 1.0
    wrong = classification_metrics([1, 2, 0], [0, 1, 2], names)
    assert wrong["accuracy"] == wrong["macro_f1"] == wrong["balanced_accuracy"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test__matches_confusion_matrix_oracle(seed):
    rng = np.random.default_rng(seed)
    names = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    # imbalanced references; class 3 ("df") is never predicted, class 6 ("vasc") is never a reference
    references = rng.choice(6, size=60, p=[0.05, 0.1, 0.1, 0.05, 0.1, 0.6])
    predictions = rng.choice([0, 1, 2, 4, 5, 6], size=60)
    predictions[:30] = references[:30]
    predictions[predictions == 3] = 5
    got = classification_metrics(predictions, references, names)
    expected = confusion_matrix_oracle(predictions.tolist(), references.tolist(), names)
    assert_metrics_equal(got, expected)
    assert got["f1_df"] == 0.0 and got["f1_vasc"] == 0.0


def test__shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], [0, 1, 1], ["a", "b"])


# ----------------------------------------------------------------------------------------------------------
# Trainer compute_metrics
# ----------------------------------------------------------------------------------------------------------


def hand_logits() -> np.ndarray:
    """Logits whose argmax is HAND_PREDICTIONS."""
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    logits[np.arange(5), HAND_PREDICTIONS] += 10.0
    return logits


def test__compute_metrics_on_eval_prediction():
    compute_metrics = build_compute_metrics(["a", "b", "c"])
    logits = hand_logits()
    got = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array(HAND_REFERENCES)))
    assert_metrics_equal(got, classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c"]))


def test__compute_metrics_on_tuple_of_predictions():
    compute_metrics = build_compute_metrics(["a", "b", "c"])
    features = np.random.default_rng(1).normal(size=(5, 128)).astype(np.float32)
    got = compute_metrics(
        EvalPrediction(predictions=(hand_logits(), features), label_ids=np.array(HAND_REFERENCES))
    )
    assert_metrics_equal(got, classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c"]))
    assert got["accuracy"] == pytest.approx(0.6)


# ----------------------------------------------------------------------------------------------------------
# evaluate module, offline
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(EVALUATE_METRIC_PATH)


def test__evaluate_module_loads_offline_from_package(metric):
    assert aduni_hf.evaluation.EVALUATE_METRIC_PATH == EVALUATE_METRIC_PATH
    assert isinstance(metric, evaluate.Metric)
    assert type(metric).__name__ == "AduniClassification"


def test__evaluate_compute_matches_library(metric):
    names = ["a", "b", "c", "d"]
    got = metric.compute(predictions=HAND_PREDICTIONS, references=HAND_REFERENCES, class_names=names)
    assert_metrics_equal(got, classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, names))


def test__evaluate_add_batch_matches_library(metric):
    rng = np.random.default_rng(3)
    references = rng.integers(0, 4, size=25)
    predictions = np.where(rng.random(25) < 0.5, references, rng.integers(0, 4, size=25))
    for start in range(0, 25, 10):
        metric.add_batch(
            predictions=predictions[start : start + 10].tolist(),
            references=references[start : start + 10].tolist(),
        )
    names = ["w", "x", "y", "z"]
    got = metric.compute(class_names=names)
    assert_metrics_equal(got, confusion_matrix_oracle(predictions.tolist(), references.tolist(), names))


def test__evaluate_default_class_names(metric):
    got = metric.compute(predictions=[0, 2], references=[0, 1])
    assert set(got) == {"accuracy", "macro_f1", "balanced_accuracy", "f1_0", "f1_1", "f1_2"}
    assert got["macro_f1"] == pytest.approx(1 / 3)
