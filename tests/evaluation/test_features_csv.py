"""The feature-table mode: reading a plain CSV, its errors, and the benchmark on it."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.evaluation.arms import ModelSettings
from bci_affect.evaluation.experiments import BenchmarkConfig, run_benchmark
from bci_affect.evaluation.features_csv import load_features_csv, write_features_csv


def _write(path, header, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _table(path, rng, *, n_subjects=2, n_trials=8, per_trial=5, signal=2.0, labels=("lo", "hi")):
    """Two classes; feature f0 carries the class, the others are noise."""
    rows = []
    for s in range(n_subjects):
        for t in range(n_trials):
            y = t % 2
            for _ in range(per_trial):
                f = rng.normal(size=5)
                f[0] += signal * y
                rows.append([f"s{s}", f"t{t}", labels[y], *(f"{v:.6f}" for v in f)])
    return _write(path, ["subject", "trial", "label", "f0", "f1", "f2", "f3", "f4"], rows)


def test_load_a_feature_table(tmp_path, rng):
    es = load_features_csv(_table(tmp_path / "f.csv", rng))
    assert len(es) == 80 and es.eeg_de.shape == (80, 5, 1)
    assert es.class_names == ("hi", "lo")  # text labels: alphabetical
    assert es.feature_names == ("f0", "f1", "f2", "f3", "f4")
    assert es.subjects == ("s0", "s1") and es.source == "features"
    assert np.unique(es.trial_keys).size == 16
    # rows of a subject are consecutive windows in time
    assert np.array_equal(es.t_start[es.subject == "s1"], np.arange(40.0))


def test_label_order_rules(tmp_path):
    header = ["Subject", "TRIAL", "label", "x"]  # column names are case-insensitive
    rows = [["a", "1", lab, "0.5"] for lab in ("10", "9", "2")]
    assert load_features_csv(_write(tmp_path / "n.csv", header, rows)).class_names == (
        "2",
        "9",
        "10",
    )
    rows = [["a", str(i), lab, "1"] for i, lab in enumerate(("HVHA", "LVLA", "LVHA", "HVLA"))]
    # the class names of a rating scheme keep the scheme's order
    assert load_features_csv(_write(tmp_path / "q.csv", header, rows)).class_names == (
        "LVLA",
        "LVHA",
        "HVLA",
        "HVHA",
    )
    rows = [["a", "1", "x", ""], ["a", "2", "y", "NaN"], ["a", "3", "y", "2"]]
    es = load_features_csv(_write(tmp_path / "m.csv", header, rows))
    assert np.isnan(es.eeg_de[:2, 0, 0]).all() and es.eeg_de[2, 0, 0] == 2.0


@pytest.mark.parametrize(
    ("header", "rows", "error", "match"),
    [
        (["subject", "trial", "x"], [["a", "1", "0"]], FileFormatError, "missing column.*label"),
        (["subject", "trial", "label"], [["a", "1", "y"]], FileFormatError, "no feature column"),
        (
            ["subject", "trial", "label", "x", "y"],
            [["a", "1", "u", "1", "2"], ["a", "2", "v", "1", "high"]],
            FileFormatError,
            r"line 3, column 'y': 'high' is not a number",
        ),
        (
            ["subject", "trial", "label", "x"],
            [["a", "1", "u", "1", "2"]],
            FileFormatError,
            "line 2: 5 cells for 4 columns",
        ),
        (["subject", "trial", "label", "x"], [["a", "1", "u", "1"]], ConfigError, "two classes"),
        (["subject", "trial", "label", "x"], [], FileFormatError, "no data rows"),
    ],
)
def test_bad_tables_are_refused_clearly(tmp_path, header, rows, error, match):
    with pytest.raises(error, match=match):
        load_features_csv(_write(tmp_path / "bad.csv", header, rows))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        load_features_csv(tmp_path / "nope.csv")


def test_write_then_read_round_trips(tmp_path, rng):
    es = load_features_csv(_table(tmp_path / "f.csv", rng))
    back = load_features_csv(write_features_csv(es, tmp_path / "out.csv"))
    np.testing.assert_array_equal(back.eeg_de, es.eeg_de)
    assert back.class_names == es.class_names
    np.testing.assert_array_equal(back.labels, es.labels)
    np.testing.assert_array_equal(back.trial_keys, es.trial_keys)


def test_benchmark_on_a_feature_table(tmp_path, rng):
    es = load_features_csv(_table(tmp_path / "f.csv", rng))
    cfg = BenchmarkConfig(
        n_folds=2,
        tables=("main", "active-learning", "label-noise", "muscle"),
        budgets=(0.3, 1.0),
        noise_levels=(0.0, 0.5),
        models=ModelSettings(epochs=4, batch_size=16, device="cpu"),
    )
    res = run_benchmark(es, cfg)
    rows = res["tables"]["main"]["rows"]
    assert list(rows) == ["eeg_student", "logistic", "majority", "chance"]
    assert rows["chance"]["mean"]["accuracy"] == 0.5
    # f0 separates the classes by 2 sd: the models beat chance and the majority class
    assert rows["logistic"]["mean"]["accuracy"] > 0.75
    assert rows["logistic"]["mean"]["accuracy"] > rows["majority"]["mean"]["accuracy"] + 0.15
    assert rows["logistic"]["n_subjects"] == 2
    for key in ("ece", "ece_raw", "nll", "coverage", "set_size", "auroc_error", "macro_f1"):
        assert key in rows["logistic"]["mean"]
    al = res["tables"]["active-learning"]
    assert list(al["arms"]) == ["eeg_only"]  # no face: no cross-modal policy
    assert set(al["arms"]["eeg_only"]) == {"random", "entropy"}
    assert set(al["arms"]["eeg_only"]["random"]) == {"0.3", "1"}
    noise = res["tables"]["label-noise"]["variants"]
    assert list(noise) == ["0 %", "50 %"]
    # half the training trials with the wrong class: the informative feature no longer helps
    assert (
        noise["50 %"]["logistic"]["mean"]["accuracy"] < noise["0 %"]["logistic"]["mean"]["accuracy"]
    )
    assert "muscle" in res["skipped"] and "muscle" not in res["tables"]
