"""The commands: demo, replay with a model, run on a (synthetic) board."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bci_affect.cli import main
from bci_affect.engine import PREDICTIONS_TYPE, read_jsonl

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "recordings" / "sample" / "demo.xdf"


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("latency_ms", "lag_ms")} for r in records]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert SAMPLE.is_file() and SAMPLE.stat().st_size < 5e6  # a few MB at most
    t0 = time.monotonic()
    assert main(["demo", "--out-dir", str(tmp_path / "demo")]) == 0
    elapsed = time.monotonic() - t0
    assert elapsed < 120, elapsed
    out = capsys.readouterr().out
    assert "100 %" in out and "predictions over" in out  # progress, then the summary
    records = read_jsonl(tmp_path / "demo" / "predictions.jsonl")
    span = records[-1]["t_window_end"] - records[0]["t_window_end"]
    assert len(records) == round(span / 0.5) + 1 > 100
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-5 for r in records)
    assert {r["predicted"] for r in records} <= set(records[0]["classes"])
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "<img" in html and "latency" in html and "session demo" in html
    png = tmp_path / "demo" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_with_model_is_deterministic(short_xdf, tmp_path, capsys):
    paths = []
    for i in range(2):
        out = tmp_path / f"p{i}.jsonl"
        args = ["replay", str(short_xdf), "--model", "untrained", "--out", str(out)]
        if i == 0:
            args += ["--report", str(tmp_path / "r.png")]
        assert main(args) == 0
        paths.append(out)
    text = capsys.readouterr().out
    assert "replayed and scored" in text and "EEG" in text  # the stream table is still there
    a, b = (read_jsonl(p) for p in paths)
    assert len(a) == 33 and _strip(a) == _strip(b)
    assert (tmp_path / "r.png").stat().st_size > 10_000
    first = a[0]
    assert set(first) >= {
        "t_window_end",
        "probs",
        "probs_teacher",
        "probs_student",
        "uncertainty",
        "disagreement",
        "conformal_set",
        "modalities",
        "quality",
        "latency_ms",
    }
    json.dumps(first, allow_nan=False)


def test_replay_without_model_keeps_statistics(short_xdf, capsys):
    assert main(["replay", str(short_xdf)]) == 0
    out = capsys.readouterr().out
    assert "FaceFeatures" in out and "x real time" in out and "scored" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "no/such/model"], "no such model folder"),
        (["--report", "r.pdf"], ".png or .html"),
        (["--model", "default", "--chunk-s", "2"], "--chunk-s"),
        (["--model", "untrained", "--window-s", "0"], "window_s"),
        (["--model", "default", "--window-s", "3"], "trained on"),
    ],
)
def test_replay_errors_are_one_line(short_xdf, capsys, extra, message):
    assert main(["replay", str(short_xdf), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.slow
@pytest.mark.lsl
def test_run_on_a_synthetic_board_publishes_predictions(tmp_path, uid, capsys):
    """`run` on BrainFlow's synthetic board: predictions reach an LSL inlet and the file."""
    from acquisition.lsl_inlet import LslSource

    out = tmp_path / "live.jsonl"
    argv = [
        "run",
        "--board",
        "synthetic",
        "--no-publish-inputs",
        "--session",
        uid,
        "--predictions-name",
        f"AffectPredictions-{uid}",
        "--duration",
        "7",
        "--status-every",
        "2",
        "--out",
        str(out),
        "--report",
        str(tmp_path / "live.html"),
    ]
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(main(argv)))
    thread.start()
    received = []
    try:
        with LslSource(f"source_id=bci-affect:predictions:{uid}", timeout_s=20) as src:
            (info,) = [s for s in src.streams if s.type == PREDICTIONS_TYPE]
            for chunk in src:
                if chunk.info.type == PREDICTIONS_TYPE:
                    received.append(chunk)
                if sum(c.n_times for c in received) >= 3:
                    break
    finally:
        thread.join(60)
    assert status == [0]
    records = read_jsonl(out)
    assert len(records) >= 3
    data = np.concatenate([c.data for c in received], axis=1)
    t_end = data[info.ch_names.index("t_window_end")]
    by_t = {r["t_window_end"]: r for r in records}
    for i, t in enumerate(t_end):
        r = by_t[t]  # the same window, on the stream and in the file
        p = data[info.ch_names.index(f"p_{r['classes'][0]}"), i]
        assert p == r["probs"][r["classes"][0]]
    text = capsys.readouterr().out
    assert "predictions over" in text and (tmp_path / "live.html").is_file()
    lat = [r["latency_ms"]["total"] for r in records]
    assert np.isfinite(lat).all() and all(r["lag_ms"] is not None for r in records)
