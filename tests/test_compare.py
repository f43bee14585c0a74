"""scripts/compare.py: Table 1/2 rows from cv_results.json, the paper's numbers beside ours, paired t-tests."""

import csv
import io
import json
import math
from pathlib import Path

import pytest
from scipy import stats

from aduni_hf.evaluation.compare import comparison_markdown, comparison_rows, load_run, paired_test
from aduni_hf.evaluation.paper_results import PAPER_FIXED_ALPHA_001, rows_of
from aduni_hf.methods import METHODS, MethodArguments
from tests.script_runs import run_script_here

ROOT = Path(__file__).resolve().parents[1]


def write_run(
    folder: Path, method: str, sampler: str, accuracies, f1s, dataset="isic2018", alpha_max=1.0, paper=None,
    kappas=None,
):  # fmt: skip
    folds = {
        str(k): {"accuracy": a, "macro_f1": f, "balanced_accuracy": f, "f1": {}, "seconds": 10.0}
        for k, (a, f) in enumerate(zip(accuracies, f1s, strict=True))
    }
    for k, kappa in enumerate(kappas or []):
        folds[str(k)]["quadratic_kappa"] = kappa
    names = ("accuracy", "macro_f1", "balanced_accuracy") + (("quadratic_kappa",) if kappas else ())
    mean = {m: sum(v[m] for v in folds.values()) / len(folds) for m in names}
    std = {m: float(__import__("statistics").stdev([v[m] for v in folds.values()])) for m in mean}
    folder.mkdir(parents=True)
    results = {"method": method, "sampler": sampler, "dataset": f"data/{dataset}", "dataset_name": dataset,
               "folds": folds, "mean": mean, "std": std, "selection": "the model after the last epoch",
               "recipe": {"alpha_max": alpha_max}}  # fmt: skip
    if paper is not None:  # the paper's row the run's method chose for it (cv_results.json's "paper")
        results["paper"] = paper
    (folder / "cv_results.json").write_text(json.dumps(results))
    return folder


def test_paired_t_test_against_a_hand_computation(tmp_path):
    aduni = load_run(write_run(tmp_path / "a", "aduni", "none", [0.80, 0.82, 0.85, 0.81, 0.84], [0.70] * 5))
    ce = load_run(
        write_run(tmp_path / "c", "ce", "none", [0.78, 0.81, 0.80, 0.80, 0.79], [0.6, 0.65, 0.62, 0.61, 0.66])
    )
    difference, p_value, shared = paired_test(ce, aduni, "accuracy")
    d = [0.78 - 0.80, 0.81 - 0.82, 0.80 - 0.85, 0.80 - 0.81, 0.79 - 0.84]
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    t = mean / (sd / math.sqrt(5))
    assert shared == 5 and difference == pytest.approx(mean)
    assert p_value == pytest.approx(2 * stats.t.sf(abs(t), df=4))
    assert paired_test(aduni, aduni, "accuracy")[1] is None  # no spread in the differences: no test


def test_rows_carry_the_papers_numbers_and_the_tests(tmp_path):
    runs = [
        load_run(write_run(tmp_path / "aduni", "aduni", "none", [0.88, 0.87, 0.89], [0.80, 0.81, 0.79])),
        load_run(write_run(tmp_path / "ce", "ce", "none", [0.84, 0.85, 0.83], [0.70, 0.72, 0.69])),
        load_run(write_run(tmp_path / "up", "aduni", "upsample", [0.89, 0.88, 0.90], [0.81, 0.80, 0.82])),
        load_run(
            write_run(tmp_path / "bs", "balanced_softmax", "none", [0.86, 0.86, 0.85], [0.75, 0.74, 0.76])
        ),
    ]
    rows = {row["label"]: row for row in comparison_rows(runs)}
    assert rows["ce"]["paper_accuracy_mean"] == 0.841 and rows["ce"]["paper_macro_f1_std"] == 1.21e-3
    assert rows["aduni + upsample"]["paper_macro_f1_mean"] == 0.808
    assert rows["balanced_softmax"]["paper_accuracy_mean"] is None  # not a row of the paper
    assert rows["aduni"]["macro_f1_vs_aduni"] is None
    assert (
        rows["ce"]["macro_f1_vs_aduni"] == pytest.approx(-0.0967, abs=1e-4)
        and rows["ce"]["macro_f1_p"] < 0.05
    )


def fixed_alpha_row(dataset: str, sampler: str, alpha_max: float):
    return METHODS["aduni_fixed"].paper_row(
        dataset, sampler, MethodArguments(method="aduni_fixed", alpha_max=alpha_max)
    )


def test_fixed_alpha_rows_follow_alpha_max():
    # Table 1's "AdUni w/o AduC" with the official alpha, Table 2's fixed-alpha row with alpha 0.01
    assert fixed_alpha_row("aptos2019", "none", 1.0)["macro_f1"] == (0.682, 1.63e-3)
    assert fixed_alpha_row("aptos2019", "none", 0.01)["macro_f1"] == (0.675, 1.63e-3)
    assert fixed_alpha_row("isic2018", "sqrt", 0.01)["macro_f1"] == (0.769, 2.94e-3)
    assert fixed_alpha_row("isic2018", "sqrt", 1.0) is None  # Table 1 has no sampler rows
    assert METHODS["aduni_fixed"].paper_row("aptos2019", "none")["macro_f1"] == (0.682, 1.63e-3)  # no fields
    assert METHODS["aduni"].paper_row("digits_lt", "none") is None
    assert METHODS["aduni"].paper_row("isic2018", "upsample") == rows_of("aduni")[("isic2018", "upsample")]
    assert METHODS["balanced_softmax"].paper_row("isic2018", "none") is None  # not a row of the paper
    assert rows_of("ce")[("aptos2019", "none")]["accuracy"] == (0.813, 6.09e-3)


def test_rows_take_the_papers_row_the_run_recorded(tmp_path):
    """cv_results.json's "paper" (the row the method chose: aduni_fixed at alpha 0.01 is Table 2's) wins over the
    method's row of the tables, which is the fallback for a run that recorded none."""
    table2 = fixed_alpha_row("isic2018", "none", 0.01)
    assert table2 == PAPER_FIXED_ALPHA_001[("isic2018", "none")]
    runs = [
        load_run(write_run(tmp_path / "a", "aduni", "none", [0.88, 0.87], [0.80, 0.81])),
        load_run(
            write_run(
                tmp_path / "f",
                "aduni_fixed",
                "none",
                [0.86, 0.87],
                [0.76, 0.77],
                alpha_max=0.01,
                paper=table2,
            )
        ),
        load_run(write_run(tmp_path / "t1", "aduni_fixed", "none", [0.87, 0.88], [0.77, 0.78])),
    ]
    rows = {Path(row["run"]).name: row for row in comparison_rows(runs)}
    assert (rows["f"]["paper_accuracy_mean"], rows["f"]["paper_accuracy_std"]) == (0.867, 4.49e-3)
    assert (rows["f"]["paper_macro_f1_mean"], rows["f"]["paper_macro_f1_std"]) == (0.760, 2.16e-3)
    table1 = (rows["t1"]["paper_macro_f1_mean"], rows["t1"]["paper_macro_f1_std"])
    assert table1 == (0.778, 1.94e-3)  # Table 1: the run recorded no row
    assert rows["a"]["paper_macro_f1_mean"] == 0.805


def test_the_script_writes_markdown_and_csv(tmp_path):
    a = write_run(tmp_path / "aduni", "aduni", "none", [0.88, 0.87], [0.80, 0.81], dataset="aptos2019",
                  kappas=[0.85, 0.83])  # fmt: skip
    c = write_run(tmp_path / "ce", "ce", "none", [0.84, 0.85], [0.70, 0.72], dataset="aptos2019",
                  kappas=[0.80, 0.79])  # fmt: skip
    result = run_script_here("compare.py", str(a), str(c), "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # APTOS2019's own metric, quadratic weighted kappa, is its headline (bold), beside accuracy and macro-F1
    assert "| method | folds | accuracy | macro-F1 | quadratic weighted kappa | paper accuracy |" in result.stdout
    assert (
        "| ce | 0,1 | 0.845 ± 7.07e-03 | 0.710 ± 1.41e-02 | **0.795 ± 7.07e-03** | 0.813 ± 6.09e-03 | "
        "0.603 ± 7.81e-03 |" in result.stdout
    )
    assert "aptos2019: headline metric (in bold): quadratic weighted kappa, the metric the APTOS 2019" in result.stdout
    assert (tmp_path / "out" / "comparison.md").read_text() == result.stdout
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "comparison.csv").read_text())))
    assert [row["method"] for row in rows] == ["aduni", "ce"]
    assert rows[1]["headline_metric"] == "quadratic_kappa"
    assert float(rows[1]["quadratic_kappa_vs_aduni"]) == pytest.approx(-0.045)
    missing = run_script_here("compare.py", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode != 0 and "no cv_results.json" in missing.stderr


def test_each_data_sets_own_metric_gets_a_column_and_the_paired_test(tmp_path):
    """ISIC2018 ranks by balanced multi-class accuracy, APTOS2019 by quadratic weighted kappa: each run shows its
    own (bold) and '–' for the other's; the paired t-test runs on every metric, here against a hand computation."""
    runs = [
        load_run(write_run(tmp_path / "ia", "aduni", "none", [0.88, 0.87, 0.86], [0.80, 0.81, 0.78])),
        load_run(write_run(tmp_path / "ic", "ce", "none", [0.84, 0.85, 0.85], [0.70, 0.72, 0.74])),
        load_run(write_run(tmp_path / "aa", "aduni", "none", [0.8, 0.8, 0.8], [0.6, 0.6, 0.6], dataset="aptos2019",
                           kappas=[0.85, 0.83, 0.80])),
        load_run(write_run(tmp_path / "ac", "ce", "none", [0.8, 0.8, 0.8], [0.6, 0.6, 0.6], dataset="aptos2019",
                           kappas=[0.80, 0.79, 0.78])),
    ]  # fmt: skip
    rows = comparison_rows(runs)
    isic_ce, aptos_ce = rows[1], rows[3]
    assert isic_ce["headline_metric"] == "balanced_accuracy" and isic_ce["quadratic_kappa_mean"] is None
    assert aptos_ce["headline_metric"] == "quadratic_kappa" and aptos_ce["balanced_accuracy_mean"] is None
    # balanced accuracy (written equal to macro-F1 here): differences -0.10, -0.09, -0.04
    d = [-0.10, -0.09, -0.04]
    mean, sd = sum(d) / 3, math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    assert isic_ce["balanced_accuracy_vs_aduni"] == pytest.approx(mean)
    assert isic_ce["balanced_accuracy_p"] == pytest.approx(2 * stats.t.sf(abs(mean / (sd / math.sqrt(3))), df=2))
    assert aptos_ce["quadratic_kappa_vs_aduni"] == pytest.approx((-0.05 - 0.04 - 0.02) / 3)
    markdown = comparison_markdown(rows)
    line = next(row for row in markdown.splitlines() if row.startswith("| ce | 0,1,2 | 0.847"))
    assert "| **0.720 ± 2.00e-02** | – |" in line  # ISIC's balanced accuracy in bold, no kappa
    assert "isic2018: headline metric (in bold): balanced multi-class accuracy" in markdown
    assert "ISIC 2018 Task 3's ranking metric" in markdown


def test_an_older_cv_results_without_the_new_metrics_still_compares(tmp_path):
    """A cv_results.json written before kappa was computed: its kappa cell is '–', its other columns stand."""
    runs = [
        load_run(write_run(tmp_path / "a", "aduni", "none", [0.8, 0.82], [0.7, 0.72], dataset="aptos2019")),
        load_run(write_run(tmp_path / "c", "ce", "none", [0.78, 0.8], [0.6, 0.65], dataset="aptos2019",
                           kappas=[0.7, 0.72])),
    ]  # fmt: skip
    rows = comparison_rows(runs)
    assert rows[0]["quadratic_kappa_mean"] is None and rows[1]["quadratic_kappa_vs_aduni"] is None
    assert rows[1]["macro_f1_vs_aduni"] == pytest.approx(-0.085)
