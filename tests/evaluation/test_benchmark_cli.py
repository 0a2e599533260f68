"""``bci-affect benchmark`` end to end on a tiny simulated dataset, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bci_affect.cli import main
from bci_affect.evaluation.data import load_eval_set
from bci_affect.evaluation.features_csv import load_features_csv

FAST = ["--folds", "2", "--epochs", "2", "--batch-size", "16", "--labels", "arousal"]


@pytest.mark.slow
def test_benchmark_sessions_then_features(tiny_dataset, tmp_path, capsys):
    rep, csv_path = tmp_path / "rep", tmp_path / "de.csv"
    rc = main(
        [
            "benchmark",
            "--dataset",
            str(tiny_dataset),
            "--tables",
            "main,muscle",
            *FAST,
            "--hop",
            "1",
            "--face-stride",
            "2",
            "--line-freq",
            "60",
            "--corrupt-noise-uv",
            "0",
            "--report",
            str(rep),
            "--name",
            "tiny",
            "--export-features",
            str(csv_path),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    # the printed table has the model, the baselines and chance
    for label in (
        "model: fused (face + EEG)",
        "teacher only (face)",
        "EEG-only student",
        "logistic regr. (band features)",
        "majority class",
        "chance (uniform guess)",
        "Muscle leakage",
    ):
        assert label in out
    result = json.loads((rep / "tiny.json").read_text())
    rows = result["tables"]["main"]["rows"]
    assert rows["chance"]["mean"]["accuracy"] == 0.5  # arousal: two classes
    assert rows["fused"]["n_subjects"] == 2
    for row in ("fused", "teacher_only", "eeg_student", "logistic", "majority"):
        acc = rows[row]["mean"]["accuracy"]
        assert 0.0 <= acc <= 1.0
        assert rows[row]["pooled"]["n"] > 0
    # trial-level folds: no trial on both sides, every window tested once
    folds = result["folds"]["0"]
    assert len(folds) == 4 and all(f["n_test"] > 0 for f in folds)
    assert sum(f["n_test"] for f in folds) == result["data"]["n_windows"]
    readme = (rep / "README.md").read_text()
    assert "Made by: `bci-affect benchmark --dataset" in readme
    assert "| majority class |" in readme and "## Targets" in readme
    assert (rep / "tiny-muscle.png").stat().st_size > 1000
    # the windows went to the cache; the exported table holds the same features
    (cache,) = (rep / "tmp" / "cache").glob("windows-*.npz")
    cached = load_eval_set(cache)
    table = load_features_csv(csv_path)
    np.testing.assert_array_equal(table.eeg_de[:, :, 0], cached.eeg_de.reshape(len(cached), -1))
    np.testing.assert_array_equal(table.labels, cached.labels)

    # the feature-table mode on the exported features gives the same EEG-only scores
    rc = main(["benchmark", "--features", str(csv_path), "--tables", "main", *FAST, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    feat = json.loads(out)["tables"]["main"]["rows"]
    assert list(feat) == ["eeg_student", "logistic", "majority", "chance"]
    for row in ("eeg_student", "logistic", "majority"):
        assert feat[row]["per_subject"] == rows[row]["per_subject"]


def test_benchmark_errors_are_one_line(tmp_path, capsys):
    rc = main(["benchmark", "--features", str(tmp_path / "missing.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().count("\n") == 0 and "no such file" in err
    rc = main(["benchmark", "--features", str(tmp_path / "x.csv"), "--tables", "main,bogus"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown table(s) bogus" in err
    rc = main(["benchmark", "--dataset", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err
