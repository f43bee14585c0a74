"""Tests of the classification metrics against hand-computed values and a confusion-matrix loop oracle
written from docs/method.md, "Evaluation and folds", and of the offline `evaluate` module."""

from __future__ import annotations

import math

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
        "quadratic_kappa": quadratic_kappa_oracle(matrix),
    }
    result.update({f"f1_{name}": value for name, value in f1.items()})
    return result


def quadratic_kappa_oracle(matrix):
    """Cohen's quadratic weighted kappa from its definition, with loops over the confusion matrix
    (matrix[true][predicted]): kappa = 1 - sum w_ij O_ij / sum w_ij E_ij, w_ij = (i - j)^2 / (C - 1)^2, O the
    observed proportions, E_ij = (row share of i) x (column share of j) the proportions expected by chance; NaN
    when the expected disagreement is 0."""
    n = len(matrix)
    total = sum(sum(row) for row in matrix)
    rows = [sum(matrix[i]) / total for i in range(n)]
    columns = [sum(matrix[i][j] for i in range(n)) / total for j in range(n)]
    observed = expected = 0.0
    for i in range(n):
        for j in range(n):
            weight = (i - j) ** 2 / (n - 1) ** 2
            observed += weight * matrix[i][j] / total
            expected += weight * rows[i] * columns[j]
    return 1 - observed / expected if expected else math.nan


def roc_auc_oracle(probabilities, references):
    """Macro one-vs-rest ROC-AUC from its definition: for each class present in the references, the share of
    (positive, negative) pairs whose positive scores higher for that class (a tie counts one half); the mean
    over those classes (a class absent from the references has no positive and is left out)."""
    aucs = []
    for c in sorted(set(references)):
        positives = [p[c] for p, r in zip(probabilities, references, strict=True) if r == c]
        negatives = [p[c] for p, r in zip(probabilities, references, strict=True) if r != c]
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in positives for b in negatives)
        aucs.append(wins / (len(positives) * len(negatives)))
    return sum(aucs) / len(aucs)


def assert_metrics_equal(got, expected, tol=1e-12):
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert isinstance(got[key], float), key
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=tol), key


# refs [0,0,1,1,2], preds [0,1,1,1,0]:
#   a: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
#   b: TP 2, predicted 3, support 2 -> P 2/3, R 1,   F1 4/5
#   c: TP 0, predicted 0, support 1 -> F1 0 (never predicted)
#   d: absent from both            -> F1 0
HAND_PREDICTIONS = [0, 1, 1, 1, 0]
HAND_REFERENCES = [0, 0, 1, 1, 2]
# Quadratic weighted kappa, by hand. Confusion matrix O[true][predicted]: O00 1, O01 1, O11 2, O20 1 (n 5).
# Weights (i - j)^2 / (C - 1)^2 with C 3: w01 = w10 = w12 = w21 = 1/4, w02 = w20 = 1.
#   observed disagreement  sum w O / n         = (1/4 . 1 + 1 . 1) / 5 = 1/4
#   row shares (true) 2/5, 2/5, 1/5; column shares (predicted) 2/5, 3/5, 0
#   expected disagreement  sum w r_i c_j       = (1/4 . 2 . 3 + 1/4 . 2 . 2 + 1 . 1 . 2 + 1/4 . 1 . 3) / 25
#                                              = (1.5 + 1 + 2 + 0.75) / 25 = 0.21
#   kappa = 1 - 0.25 / 0.21 = -4/21
HAND_KAPPA = -4 / 21
# Softmax-like probabilities whose argmax is HAND_PREDICTIONS, and their macro one-vs-rest ROC-AUC by hand
# (pairs of a positive and a negative image; the positive scoring higher wins, a tie counts 1/2):
#   a: positives .6 .3, negatives .2 .1 .5      -> .6 beats 3, .3 beats 2      -> 5/6
#   b: positives .7 .6, negatives .3 .5 .2      -> every pair                  -> 1
#   c: positive .3, negatives .1 .2 .1 .3       -> 3 wins and a tie            -> 3.5/4 = 7/8
#   macro: (5/6 + 1 + 7/8) / 3 = 65/72
HAND_PROBABILITIES = np.array(
    [[0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]
)
HAND_ROC_AUC = 65 / 72


def test__hand_computed_values():
    got = classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c"], HAND_PROBABILITIES)
    expected = {
        "accuracy": 3 / 5,
        "macro_f1": (0.5 + 0.8 + 0.0) / 3,
        "balanced_accuracy": (0.5 + 1.0 + 0.0) / 3,
        "quadratic_kappa": HAND_KAPPA,
        "roc_auc": HAND_ROC_AUC,
        "f1_a": 0.5,
        "f1_b": 0.8,
        "f1_c": 0.0,
    }
    assert_metrics_equal(got, expected)
    assert HAND_PROBABILITIES.argmax(axis=1).tolist() == HAND_PREDICTIONS


def test__macro_f1_counts_every_class_but_balanced_accuracy_and_roc_auc_only_present_ones():
    # class d is in no reference: its AUC has no positive, so the macro AUC is over a, b, c (module docstring)
    probabilities = np.hstack([HAND_PROBABILITIES * 0.9, np.full((5, 1), 0.1)])
    got = classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c", "d"], probabilities)
    assert got["macro_f1"] == pytest.approx((0.5 + 0.8) / 4, abs=1e-12)
    assert got["balanced_accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert got["f1_d"] == 0.0
    assert got["roc_auc"] == pytest.approx(HAND_ROC_AUC, abs=1e-12)  # scaling a column keeps its ranking
    # the kappa weights are spread over 4 grades: (i - j)^2 / 9 instead of / 4, a common factor that cancels
    assert got["quadratic_kappa"] == pytest.approx(HAND_KAPPA, abs=1e-12)


def test__kappa_weighs_the_distance_between_grades():
    """Five grades, one image each (row shares 1/5), weights (i - j)^2 / 16; sum over i of (i - j)^2 is 30, 15,
    10, 15, 30 for j = 0..4, so the expected disagreement is (1/5)(1/16) sum_j (column share j)(that sum).
    One grade off everywhere, predictions 1 0 3 2 3 (column shares 1/5 1/5 1/5 2/5 0):
        observed 1/16, expected (1/80)(6 + 3 + 2 + 6) = 17/80, kappa 1 - 5/17 = 12/17.
    Two grades off everywhere, predictions 2 3 0 1 2 (column shares 1/5 1/5 2/5 1/5 0):
        observed 4/16, expected (1/80)(6 + 3 + 4 + 3) = 16/80, kappa 1 - 5/4 = -1/4."""
    references, names = [0, 1, 2, 3, 4], list("01234")
    one_off = classification_metrics([1, 0, 3, 2, 3], references, names)["quadratic_kappa"]
    two_off = classification_metrics([2, 3, 0, 1, 2], references, names)["quadratic_kappa"]
    assert one_off == pytest.approx(12 / 17, abs=1e-12)
    assert two_off == pytest.approx(-1 / 4, abs=1e-12)
    assert classification_metrics(references, references, names)["quadratic_kappa"] == 1.0


def test__two_classes_take_the_binary_auc():
    """References a a b b, P(b) .2 .7 .4 .9: positives of b .4 .9 against negatives .2 .7 win 3 of 4 pairs; the
    one-vs-rest AUC of a is the same pairs mirrored, so the macro average is 3/4."""
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    got = classification_metrics([0, 1, 0, 1], [0, 0, 1, 1], ["a", "b"], probabilities)
    assert got["roc_auc"] == pytest.approx(3 / 4, abs=1e-12)


def test__undefined_kappa_and_auc_are_nan():
    one_class = classification_metrics([0, 0, 0], [0, 0, 0], ["a", "b"], np.array([[0.9, 0.1]] * 3))
    assert math.isnan(one_class["quadratic_kappa"]) and math.isnan(one_class["roc_auc"])
    diverged = np.array([[math.nan, math.nan]] * 2)
    assert math.isnan(classification_metrics([0, 1], [0, 1], ["a", "b"], diverged)["roc_auc"])


def test__probabilities_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"probabilities \(5, 2\) must be"):
        classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c"], HAND_PROBABILITIES[:, :2])


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
    probabilities = rng.dirichlet(np.ones(7), size=60)
    got = classification_metrics(predictions, references, names, probabilities)
    expected = confusion_matrix_oracle(predictions.tolist(), references.tolist(), names)
    expected["roc_auc"] = roc_auc_oracle(probabilities.tolist(), references.tolist())
    assert_metrics_equal(got, expected)
    assert got["f1_df"] == 0.0 and got["f1_vasc"] == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test__every_class_present_matches_the_oracles(seed):
    """Every class in the references: ROC-AUC is sklearn's multi-class one-vs-rest call."""
    rng = np.random.default_rng(seed)
    references = np.concatenate([np.arange(5), rng.integers(0, 5, size=45)])
    logits = rng.normal(size=(50, 5)) + 2.0 * np.eye(5)[references]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predictions = probabilities.argmax(axis=1)
    got = classification_metrics(predictions, references, list("01234"), probabilities)
    expected = confusion_matrix_oracle(predictions.tolist(), references.tolist(), list("01234"))
    expected["roc_auc"] = roc_auc_oracle(probabilities.tolist(), references.tolist())
    assert_metrics_equal(got, expected)


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


def softmax_oracle(logits):
    return [[math.exp(v) / sum(math.exp(w) for w in row) for v in row] for row in logits.tolist()]


def test__compute_metrics_on_eval_prediction():
    compute_metrics = build_compute_metrics(["a", "b", "c"])
    logits = hand_logits()
    got = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array(HAND_REFERENCES)))
    expected = classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c"])
    expected["roc_auc"] = roc_auc_oracle(softmax_oracle(logits), HAND_REFERENCES)  # from the same logits
    assert_metrics_equal(got, expected)


def test__compute_metrics_on_tuple_of_predictions():
    compute_metrics = build_compute_metrics(["a", "b", "c"])
    features = np.random.default_rng(1).normal(size=(5, 128)).astype(np.float32)
    got = compute_metrics(
        EvalPrediction(predictions=(hand_logits(), features), label_ids=np.array(HAND_REFERENCES))
    )
    expected = classification_metrics(HAND_PREDICTIONS, HAND_REFERENCES, ["a", "b", "c"])
    expected["roc_auc"] = roc_auc_oracle(softmax_oracle(hand_logits()), HAND_REFERENCES)
    assert_metrics_equal(got, expected)
    assert got["accuracy"] == pytest.approx(0.6) and got["quadratic_kappa"] == pytest.approx(HAND_KAPPA)


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
    assert set(got) == {"accuracy", "macro_f1", "balanced_accuracy", "quadratic_kappa", "f1_0", "f1_1", "f1_2"}
    assert got["macro_f1"] == pytest.approx(1 / 3)


def test__the_console_table_sets_validation_beside_test_aligned_on_the_decimal_point():
    from aduni_hf.evaluation import format_results_table

    metrics = {"eval_accuracy": 0.5, "eval_quadratic_kappa": -0.25, "test_accuracy": 0.75, "test_f1_b": 1.0}
    lines = format_results_table(metrics, ["a", "b"], prefix=("eval", "test")).splitlines()
    assert len(lines) == 2 + 5 + 2  # header, rule, the summary metrics, one F1 per class
    assert lines[0].split() == ["metric", "eval", "test"]
    assert lines[2].split() == ["accuracy", "0.5000", "0.7500"] and lines[-1].split() == ["F1", "b", "-", "1.0000"]
    assert lines[5].endswith("-0.2500        -")  # quadratic weighted kappa: signed, then not computed
    assert len({len(line) for line in lines}) == 1  # right-aligned: every row as wide as the rule
    assert format_results_table(metrics, ["a", "b"]).splitlines()[2].split() == ["accuracy", "0.7500"]
