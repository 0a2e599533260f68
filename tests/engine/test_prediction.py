"""The prediction record (JSON, LSL row), conformal sets per window, summary and report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.engine import (
    EngineConfig,
    JsonlWriter,
    Prediction,
    StreamSignature,
    format_summary,
    prediction_channels,
    predictions_chunk,
    predictions_stream_info,
    read_jsonl,
    summarize,
    write_report,
)
from bci_affect.engine.inference import conformal_sets
from bci_affect.engine.models import untrained_model
from bci_affect.engine.prediction import prediction_units
from bci_affect.uncertainty.conformal import ConformalPredictor

from .util import replay

CLASSES = ("LVLA", "LVHA", "HVLA", "HVHA")


def _prediction(**kw) -> Prediction:
    base = dict(
        session="s",
        index=3,
        t_window_end=812345.125,
        window_s=4.0,
        classes=CLASSES,
        probs=np.array([0.1, 0.2, 0.3, 0.4]),
        probs_teacher=np.array([0.25, 0.25, 0.25, 0.25]),
        probs_student=np.array([0.4, 0.3, 0.2, 0.1]),
        uncertainty=0.5,
        uncertainty_teacher=0.5,
        uncertainty_student=1.0,
        disagreement=0.05,
        conformal_set=np.array([False, False, True, True]),
        face_available=True,
        eeg_available=False,
        face_used=True,
        eeg_used=False,
        face_reliability=0.9,
        eeg_reliability=0.0,
        quality={"eeg_quality": 0.0, "muscle_score": math.nan, "bad_channels": ("O2",)},
        latency_ms={"signals": 1.0, "queue": 0.5, "model": 2.0, "total": 3.5},
    )
    base.update(kw)
    return Prediction(**base)


def test_lsl_layout_matches_the_row():
    p = _prediction()
    names = prediction_channels(CLASSES)
    assert len(names) == len(set(names)) == len(prediction_units(CLASSES)) == p.to_row().size
    row = dict(zip(names, p.to_row(), strict=True))
    assert row["t_window_end"] == 812345.125  # exact: the stream is double64
    assert row["predicted"] == 3 and row["p_HVHA"] == 0.4 and row["p_student_LVLA"] == 0.4
    assert row["set_HVLA"] == 1 and row["set_LVLA"] == 0
    assert row["n_bad_channels"] == 1 and np.isnan(row["muscle"]) and np.isnan(row["lag_ms"])
    info = predictions_stream_info(CLASSES, session="s", model="m")
    assert info.channel_format == "double64" and info.sfreq == 0
    assert info.desc["classes"] == ",".join(CLASSES)
    chunk = predictions_chunk([p, _prediction(index=4, t_window_end=812345.625)], info)
    assert chunk.data.shape == (len(names), 2)
    np.testing.assert_array_equal(chunk.times, [812345.125, 812345.625])
    with pytest.raises(ConfigError, match=r"need >= 2 unique class names, got \['only'\]"):
        prediction_channels(["only"])


def test_json_record_has_no_nan_and_round_trips(tmp_path):
    p = _prediction()
    rec = json.loads(p.to_json())
    assert rec["quality"]["muscle_score"] is None and rec["lag_ms"] is None
    assert rec["conformal_set"] == ["HVLA", "HVHA"] and rec["predicted"] == "HVHA"
    assert rec["probs"] == dict(zip(CLASSES, [0.1, 0.2, 0.3, 0.4], strict=True))
    assert rec["quality"]["bad_channels"] == ["O2"]
    path = tmp_path / "sub" / "p.jsonl"
    with JsonlWriter(path) as w:
        w(p)
        w(_prediction(conformal_set=None, index=4))
    back = read_jsonl(path)
    assert [r["index"] for r in back] == [3, 4] and back[1]["conformal_set"] is None
    path.write_text('{"t_window_end": 1, "probs": {}}\nnot json\n')
    with pytest.raises(FileFormatError, match=":2: not JSON"):
        read_jsonl(path)
    with pytest.raises(ConfigError, match="folder"):
        JsonlWriter(tmp_path)


def test_conformal_sets_do_not_depend_on_batching():
    cp = ConformalPredictor(method="aps", coverage=0.8, randomized=True, seed=3)
    g = torch.Generator().manual_seed(0)
    cal = torch.softmax(torch.randn(200, 4, generator=g) * 2, dim=-1)
    cp.fit(cal, torch.randint(0, 4, (200,), generator=g))
    probs = torch.softmax(torch.randn(40, 4, generator=g) * 2, dim=-1)
    keys = list(range(100, 140))
    whole = conformal_sets(cp, probs, keys)
    parts = np.concatenate(
        [conformal_sets(cp, probs[i : i + 7], keys[i : i + 7]) for i in range(0, 40, 7)]
    )
    np.testing.assert_array_equal(whole, parts)
    assert whole[np.arange(40), probs.argmax(1).numpy()].all()  # the top class is always in
    assert whole.sum(1).min() >= 1 and (whole.sum(1) > 1).any()
    assert conformal_sets(None, probs, keys) is None


def test_engine_writes_conformal_sets_deterministically(short_xdf):
    sig = StreamSignature(("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"), 250.0, 1000)
    model = untrained_model(sig)
    g = torch.Generator().manual_seed(1)
    model.conformal = ConformalPredictor(coverage=0.9, seed=5).fit(
        torch.softmax(torch.randn(100, 4, generator=g), -1),
        torch.randint(0, 4, (100,), generator=g),
    )
    a = replay(short_xdf, model=model)
    b = replay(short_xdf, model=model, config=EngineConfig(realtime=False, max_batch=3))
    assert all(p.conformal_set is not None for p in a)
    assert [p.conformal_set.tolist() for p in a] == [p.conformal_set.tolist() for p in b]
    assert any(p.conformal_set.sum() > 1 for p in a)


@pytest.mark.slow
def test_summary_and_report(short_xdf, tmp_path):
    records = [p.to_dict() for p in replay(short_xdf)]
    records += [dict(r, session="other") for r in records[:5]]
    s = summarize(records)
    assert s["n_predictions"] == len(records)
    one = s["sessions"]["s"]
    assert one["n_predictions"] == len(records) - 5
    assert sum(one["predicted_counts"].values()) == one["n_predictions"]
    assert one["face_available"] == 1.0 and one["mean_set_size"] is None
    assert one["latency_ms"]["total"]["p99"] >= one["latency_ms"]["total"]["p50"] > 0
    text = format_summary(s)
    assert "session 's'" in text and "session 'other'" in text and "latency" in text
    png = write_report(records, tmp_path / "r.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    html = write_report(records, tmp_path / "r.html", notes=["recording: short.xdf"]).read_text()
    assert html.count("<h2>session") == 2 and "short.xdf" in html and "base64," in html
    with pytest.raises(ConfigError, match="unknown format"):
        write_report(records, tmp_path / "r.svg")
    with pytest.raises(ConfigError, match="no predictions"):
        write_report([], tmp_path / "r.png")


def test_trials_from_markers():
    from bci_affect.engine.report import trials_from_markers

    markers = [
        (10.0, '{"event": "session_start", "seed": 7}'),
        (11.0, '{"event": "trial_start", "trial": 1, "stimulus": "stim-1"}'),
        (35.5, '{"event": "rating", "trial": 1, "valence": 7, "arousal": 3}'),
        (37.0, '{"event": "trial_end", "trial": 1}'),
        (40.0, "not json"),
        (45.0, '{"event": "trial_start", "trial": 2}'),
        (60.0, '{"event": "rating", "trial": 2, "valence": 2}'),
    ]
    assert trials_from_markers(markers) == [
        (11.0, 37.0, "trial 1: V7 A3"),
        (45.0, 60.0, "trial 2: V2"),
    ]
    assert trials_from_markers([]) == []


def test_aps_with_given_uniforms_equals_drawn_uniforms():
    from bci_affect.engine.inference import window_uniforms
    from bci_affect.uncertainty.conformal import aps_sets

    g = torch.Generator().manual_seed(4)
    probs = torch.softmax(torch.randn(300, 4, generator=g) * 2, dim=-1)
    for threshold, allow_empty in ((0.5, False), (0.8, True), (0.95, False), (math.inf, False)):
        ref = aps_sets(
            probs,
            threshold,
            randomized=True,
            generator=torch.Generator().manual_seed(9),
            allow_empty=allow_empty,
        )
        u = torch.rand(300, generator=torch.Generator().manual_seed(9), dtype=torch.float32)
        got = aps_sets(probs, threshold, allow_empty=allow_empty, u=u)
        assert torch.equal(ref, got)
    u = window_uniforms(3, range(100_000))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert np.array_equal(window_uniforms(3, [7, 8]), u[7:9])
    assert not np.array_equal(window_uniforms(4, [7, 8]), u[7:9])
