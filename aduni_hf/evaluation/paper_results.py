"""The paper's published results (Cong et al., MLMI 2022, Tables 1 and 2): 5-fold mean and standard deviation of
test accuracy and macro-F1 on ISIC2018 and APTOS2019, keyed by this project's (data set, method, sampler).

Table 1 compares methods without sampling; Table 2 compares samplers for AdUni with alpha 1 -> 0.01 (the
`aduni` rows) and with alpha fixed at 0.01 (`PAPER_FIXED_ALPHA_001`: the `aduni_fixed` method with
`alpha_max: 0.01`, aduni_hf/methods/aduni.py). Each method object takes its rows from here (`rows_of`). Two standard
deviations are printed without the minus of their exponent in the paper (SqRt sampling, "2.94e03" and
"1.89e03"); they are read as e-03 like every other entry.
"""

from __future__ import annotations

PaperEntry = dict[str, tuple[float, float]]  # {"accuracy": (mean, std), "macro_f1": (mean, std)}


def _row(acc: float, acc_std: float, f1: float, f1_std: float) -> PaperEntry:
    return {"accuracy": (acc, acc_std), "macro_f1": (f1, f1_std)}


# (data set, method, sampler) -> {"accuracy": (mean, std), "macro_f1": (mean, std)}; Table 1 then Table 2.
PAPER_RESULTS: dict[tuple[str, str, str], PaperEntry] = {
    ("isic2018", "ce", "none"): _row(0.841, 5.37e-3, 0.701, 1.21e-3),
    ("isic2018", "balms", "none"): _row(0.862, 2.28e-3, 0.756, 1.94e-3),
    ("isic2018", "ldam_drw", "none"): _row(0.851, 2.28e-3, 0.728, 1.94e-3),
    ("isic2018", "decouple", "none"): _row(0.861, 2.32e-4, 0.738, 4.01e-3),
    ("isic2018", "cicl", "none"): _row(0.866, 7.39e-3, 0.760, 9.71e-3),
    ("isic2018", "paco", "none"): _row(0.864, 2.33e-3, 0.768, 4.49e-3),
    ("isic2018", "paco_aduc", "none"): _row(0.869, 1.79e-3, 0.773, 1.25e-3),
    ("isic2018", "aduni_fixed", "none"): _row(0.876, 2.65e-3, 0.778, 1.94e-3),
    ("isic2018", "aduni", "none"): _row(0.878, 4.36e-3, 0.805, 1.18e-3),
    ("aptos2019", "ce", "none"): _row(0.813, 6.09e-3, 0.603, 7.81e-3),
    ("aptos2019", "balms", "none"): _row(0.826, 3.46e-3, 0.649, 3.19e-3),
    ("aptos2019", "ldam_drw", "none"): _row(0.815, 2.05e-3, 0.636, 3.46e-3),
    ("aptos2019", "decouple", "none"): _row(0.822, 2.83e-3, 0.661, 3.31e-3),
    ("aptos2019", "cicl", "none"): _row(0.828, 2.05e-3, 0.676, 1.24e-3),
    ("aptos2019", "paco", "none"): _row(0.825, 2.00e-3, 0.680, 3.31e-3),
    ("aptos2019", "paco_aduc", "none"): _row(0.828, 2.05e-3, 0.687, 1.73e-3),
    ("aptos2019", "aduni_fixed", "none"): _row(0.826, 2.44e-3, 0.682, 1.63e-3),
    ("aptos2019", "aduni", "none"): _row(0.839, 4.92e-3, 0.695, 5.51e-3),
    # Table 2, alpha 1 -> 0.01 (AdUni); "w/o sampling" equals Table 1's AdUni row.
    ("isic2018", "aduni", "upsample"): _row(0.886, 2.87e-3, 0.808, 2.78e-3),
    ("isic2018", "aduni", "sqrt"): _row(0.877, 3.19e-3, 0.776, 1.72e-3),
    ("isic2018", "aduni", "progressive"): _row(0.880, 1.72e-3, 0.793, 3.27e-3),
    ("aptos2019", "aduni", "upsample"): _row(0.841, 2.78e-3, 0.711, 3.54e-3),
    ("aptos2019", "aduni", "sqrt"): _row(0.823, 2.49e-3, 0.676, 4.90e-3),
    ("aptos2019", "aduni", "progressive"): _row(0.810, 3.99e-3, 0.682, 3.26e-3),
}

# Table 2, alpha fixed at 0.01: (data set, sampler) -> entry, for `aduni_fixed` runs with alpha_max 0.01.
PAPER_FIXED_ALPHA_001: dict[tuple[str, str], PaperEntry] = {
    ("isic2018", "none"): _row(0.867, 4.49e-3, 0.760, 2.16e-3),
    ("isic2018", "upsample"): _row(0.876, 3.55e-3, 0.782, 5.79e-3),
    ("isic2018", "sqrt"): _row(0.869, 3.29e-3, 0.769, 2.94e-3),
    ("isic2018", "progressive"): _row(0.873, 1.70e-3, 0.767, 4.77e-3),
    ("aptos2019", "none"): _row(0.822, 2.44e-3, 0.675, 1.63e-3),
    ("aptos2019", "upsample"): _row(0.830, 1.34e-3, 0.684, 3.74e-3),
    ("aptos2019", "sqrt"): _row(0.789, 3.87e-3, 0.643, 1.89e-3),
    ("aptos2019", "progressive"): _row(0.787, 6.48e-3, 0.641, 6.02e-3),
}


def rows_of(method: str) -> dict[tuple[str, str], PaperEntry]:
    """The rows of `method` in Tables 1-2 (`PAPER_RESULTS`), keyed by (data set, sampler)."""
    return {(dataset, sampler): entry for (dataset, name, sampler), entry in PAPER_RESULTS.items() if name == method}
