"""`evaluate` metric module of aduni_hf: accuracy, macro-F1, balanced accuracy, quadratic weighted kappa and
per-class F1 (ROC-AUC needs probabilities: `aduni_hf.evaluation.classification_metrics` takes them).

Load it offline from the installed package:

    >>> import evaluate, aduni_hf.evaluation
    >>> metric = evaluate.load(aduni_hf.evaluation.EVALUATE_METRIC_PATH)
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], class_names=["a", "b"])["macro_f1"]
    0.6666666666666666
"""

import datasets
import evaluate

from aduni_hf.evaluation.metrics import classification_metrics

_DESCRIPTION = """Accuracy, macro-F1 (a never-predicted class scores 0), balanced accuracy, quadratic weighted kappa
(the class indices as ordered grades) and per-class F1, as
reported for imbalanced medical image classification by aduni_hf (Cong et al., MLMI 2022)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class indices.
    references (`list` of `int`): true class indices.
    class_names (`list` of `str`, optional): names of all classes, in index order; defaults to "0".."C-1" for
        C = 1 + the largest index seen. Per-class F1 keys are `f1_<name>`.
Returns:
    accuracy, macro_f1, balanced_accuracy, quadratic_kappa, f1_<name> for every class.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AduniClassification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Cong et al., Adaptive Unified Contrastive Learning for Imbalanced Classification, MLMI 2022",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, class_names=None):
        if class_names is None:
            class_names = [
                str(c) for c in range(1 + max(max(predictions, default=0), max(references, default=0)))
            ]
        return classification_metrics(predictions, references, class_names)
