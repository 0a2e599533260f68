"""The README's first command, `bci-affect demo` with no arguments: it writes into `out/demo/`
of the current folder and scores the sample recording with the bundled model."""

import numpy as np
import pytest

from bci_affect.cli import main
from bci_affect.cli.demo import SAMPLE
from bci_affect.engine import UNTRAINED_MODEL, read_jsonl

#: How the engine names the bundled model in its output.
BUNDLED = "bundled (default)"


@pytest.mark.slow
def test_demo_without_arguments_uses_out_demo_and_the_bundled_model(tmp_path, monkeypatch, capsys):
    assert SAMPLE.is_file()
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert f"with {BUNDLED} on" in out
    assert sorted(p.name for p in (tmp_path / "out" / "demo").iterdir()) == [
        "predictions.jsonl",
        "report.html",
        "report.png",
    ]
    bundled = read_jsonl(tmp_path / "out" / "demo" / "predictions.jsonl")
    assert bundled and {r["model"] for r in bundled} == {BUNDLED}

    # The face-prior-only fallback scores the same windows differently.
    assert main(["demo", "--model", "untrained", "--out-dir", "fallback"]) == 0
    capsys.readouterr()
    fallback = read_jsonl(tmp_path / "fallback" / "predictions.jsonl")
    assert {r["model"] for r in fallback} == {UNTRAINED_MODEL}
    assert [r["t_window_end"] for r in fallback] == [r["t_window_end"] for r in bundled]
    classes = bundled[0]["classes"]
    probs = np.array([[r["probs"][c] for c in classes] for r in bundled])
    probs_fallback = np.array([[r["probs"][c] for c in classes] for r in fallback])
    diff = np.abs(probs - probs_fallback).max(axis=1)
    assert np.median(diff) > 0.1, diff
