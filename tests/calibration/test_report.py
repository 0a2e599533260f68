"""The calibration session summary and report, from a label store with known rows."""

from __future__ import annotations

import base64
import io
import json
import re

import matplotlib.image as mpimg
import numpy as np
import pytest

from bci_affect.core.errors import ConfigError
from calibration.report import (
    format_session_summary,
    majority_so_far,
    predicted_class,
    session_summary,
    write_session_report,
)
from calibration.store import LabelStore
from calibration.ui import Answer

CLASSES = ("LVLA", "LVHA", "HVLA", "HVHA")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def onehot(k: int, n: int = 4) -> list[float]:
    p = [0.1 / (n - 1)] * n
    p[k] = 0.9
    return p


# (valence, arousal, class under "quadrant", fused, teacher, student argmax, model version,
#  shown_wall, answered_wall)
ANSWERS = [
    (7, 3, 2, 2, 0, None, 0, 100.0, 102.0),
    (2, 8, 1, 1, 1, 3, 0, 110.0, 114.0),
    (8, 2, 2, 3, 2, 2, 0, None, 125.0),
    (6, 2, 2, 2, 0, 2, 1, 130.0, 131.0),
    (5, 5, 0, 3, 0, None, 1, 140.0, 143.0),
]


def _prediction(fused, teacher, student, as_dict=False):
    def probs(k):
        if k is None:
            return None
        p = onehot(k)
        return dict(zip(CLASSES, p, strict=True)) if as_dict else p

    return {"probs": probs(fused), "probs_teacher": probs(teacher), "probs_student": probs(student)}


def _add(store, sid, t0, pred, version, shown=None):
    q = store.add_query(
        sid,
        t_start=t0,
        t_end=t0 + 8.0,
        score=0.3,
        method="disagreement",
        model_version=version,
        prediction=pred,
        triggered_wall=t0,
    )
    if shown is not None:
        store.mark_shown(q.id, shown)
    return q


@pytest.fixture
def filled(tmp_path):
    """A store with one session of five answers with known predictions, a skip, an expiry and
    an open query; two model versions; a second session and another subject."""
    store = LabelStore(tmp_path / "labels.sqlite")
    store.register_model("S01", path=None, parent=None, n_labels=0, session=None)
    s = store.start_session(
        "S01", name="first", config={"budget": 20}, label_scheme="quadrant", class_names=CLASSES
    )
    for i, (v, a, _, f, t, st, ver, shown, ans) in enumerate(ANSWERS):
        if i == 3:
            store.register_model("S01", path="m1", parent=0, n_labels=3, session=s.id)
        q = _add(store, s.id, 20.0 * i, _prediction(f, t, st, as_dict=i == 3), ver, shown)
        store.answer(Answer(q.id, v, a, False, ans))
    q = _add(store, s.id, 200.0, _prediction(0, 0, 0), 1, shown=150.0)
    store.answer(Answer(q.id, None, None, True, 156.0))
    q = _add(store, s.id, 220.0, _prediction(0, 0, 0), 1)
    store.expire(q.id, 170.0)
    _add(store, s.id, 240.0, _prediction(0, 0, 0), 1)
    # a second session of S01: one more answer predicted by version 1 (right)
    s2 = store.start_session(
        "S01", name="second", config={}, label_scheme="quadrant", class_names=CLASSES
    )
    q = _add(store, s2.id, 0.0, _prediction(3, 3, 3), 1)
    store.answer(Answer(q.id, 9, 9, False, 300.0))
    # another subject: never counted for S01
    s3 = store.start_session(
        "S02", name="x", config={}, label_scheme="quadrant", class_names=CLASSES
    )
    q = _add(store, s3.id, 0.0, _prediction(0, 0, 0), 1)
    store.answer(Answer(q.id, 9, 9, False, 300.0))
    yield store, s.id, s2.id
    store.close()


def test_helpers():
    assert majority_so_far([2, 1, 2, 2, 0], 4) == [None, 2, 1, 2, 2]
    assert predicted_class({"probs": [0.1, 0.5, 0.4]}, "fused", "abc") == 1
    assert predicted_class({"fused": {"a": 0.1, "b": 0.2, "c": 0.7}}, "fused", "abc") == 2
    assert predicted_class({"probs": [0.1, None, 0.4]}, "fused", "abc") is None
    assert predicted_class({"probs": [0.5, 0.5]}, "fused", "abc") is None
    assert predicted_class({"probs_teacher": None}, "teacher", "abc") is None
    # the session's naming: "fused"/"teacher"/"student", None where a model had no input
    pred = {"fused": [0.2, 0.8], "teacher": [0.6, 0.4], "student": [None, None]}
    assert [predicted_class(pred, h, "ab") for h in ("fused", "teacher", "student")] == [1, 0, None]


def test_summary_numbers_exact(filled):
    store, sid, _ = filled
    s = session_summary(store, sid)
    assert s["counts"] == {"open": 1, "answered": 5, "skipped": 1, "expired": 1, "total": 8}
    assert s["budget"] == 20 and s["n_classes"] == 4 and s["chance"] == 0.25
    assert s["mean_response_s"] == pytest.approx((2 + 4 + 1 + 3 + 6) / 5)
    assert [a["label"] for a in s["answers"]] == [row[2] for row in ANSWERS]
    assert s["label_counts"] == {"LVLA": 1, "LVHA": 1, "HVLA": 3, "HVHA": 0}
    assert s["accuracy"]["fused"] == {"n": 5, "correct": 3, "accuracy": 0.6}
    assert s["accuracy"]["teacher"] == {"n": 5, "correct": 3, "accuracy": 0.6}
    assert s["accuracy"]["student"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert s["running_accuracy"]["fused"] == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5])
    assert s["running_accuracy"]["teacher"] == pytest.approx([0, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    assert s["running_accuracy"]["student"][0] is None
    assert s["running_accuracy"]["student"][1:] == pytest.approx([0, 1 / 2, 2 / 3, 2 / 3])
    # majority so far: [-, 2, 1 (tie -> lowest), 2, 2] against [2, 1, 2, 2, 0]
    assert s["majority_baseline"] == {"n": 4, "correct": 1, "accuracy": 0.25}
    assert s["running_majority"][0] is None
    assert s["running_majority"][1:] == pytest.approx([0, 0, 1 / 3, 1 / 4])
    assert [a["predicted"]["fused"] for a in s["answers"]] == [row[3] for row in ANSWERS]
    # label efficiency of S01 over both sessions: v0 2/3 right, v1 1/2 here + 1/1 in session 2
    eff = {e["version"]: e for e in s["efficiency"]}
    assert set(eff) == {0, 1}
    assert (eff[0]["n_labels"], eff[0]["n_scored"], eff[0]["n_correct"]) == (0, 3, 2)
    assert (eff[1]["n_labels"], eff[1]["n_scored"], eff[1]["n_correct"]) == (3, 3, 2)
    assert eff[0]["accuracy"] == pytest.approx(2 / 3)
    assert s["uncertainty"] is None
    json.dumps(s)  # JSON-able
    text = format_session_summary(s)
    assert "5 answered, 1 skipped, 1 expired, 1 open of a budget of 20" in text
    assert "fused 3/5 (60 %)" in text and "student 2/3 (67 %)" in text
    assert "chance 25 %, majority so far 1/4 (25 %)" in text
    assert "v0: 0 -> 2/3 (67 %); v1: 3 -> 2/3 (67 %)" in text


def test_summary_with_predictions_and_other_scheme(tmp_path):
    with LabelStore(tmp_path / "v.sqlite") as store:
        s = store.start_session(
            "S05",
            name="v",
            config={},
            label_scheme="valence",
            class_names=("low_valence", "high_valence"),
        )
        q = store.add_query(
            s.id,
            t_start=0.0,
            t_end=8.0,
            score=1.0,
            method="m",
            model_version=0,
            prediction={"probs": [0.2, 0.8], "probs_teacher": [0.9, 0.1]},
        )
        store.answer(Answer(q.id, 7, 1, False, 10.0))
        records = [
            {"t_window_end": 1.0 + i, "uncertainty": u, "model": m, "disagreement": 0.1}
            for i, (u, m) in enumerate([(0.2, "a"), (0.4, "a"), (None, "b"), (0.9, "b")])
        ]
        summary = session_summary(store, s.id, predictions=records)
        assert summary["chance"] == 0.5 and summary["budget"] is None
        assert summary["answers"][0]["label_name"] == "high_valence"
        assert summary["accuracy"]["fused"]["accuracy"] == 1.0
        assert summary["accuracy"]["teacher"]["accuracy"] == 0.0
        u = summary["uncertainty"]
        assert u["n_predictions"] == 4 and u["n"] == 3 and u["mean"] == pytest.approx(0.5)
        assert u["by_model"] == {
            "a": {"n": 2, "mean": pytest.approx(0.3)},
            "b": {"n": 1, "mean": pytest.approx(0.9)},
        }
        assert (u["t_first"], u["t_last"]) == (1.0, 4.0)
        assert "uncertainty: mean 0.500 over 3 windows" in format_session_summary(summary)
        out = write_session_report(store, s.id, tmp_path / "v.png", predictions=iter(records))
        assert out.read_bytes()[:8] == PNG_MAGIC


def _embedded_png(html_text: str) -> bytes:
    m = re.search(r"<img[^>]*src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html_text)
    assert m, "no embedded PNG"
    return base64.b64decode(m.group(1))


def test_html_and_png_reports(filled, tmp_path):
    store, sid, _ = filled
    records = [
        {
            "t_window_end": t,
            "uncertainty": 0.5 + 0.4 * np.sin(t / 10),
            "model": "m",
            "disagreement": 0.2,
        }
        for t in np.arange(0.0, 260.0, 0.5)
    ]
    page = write_session_report(store, sid, tmp_path / "r" / "report.html", predictions=records)
    text = page.read_text(encoding="utf-8")
    assert "<img" in text and "fused 3/5 (60 %)" in text
    png = _embedded_png(text)
    assert png[:8] == PNG_MAGIC
    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.shape[0] > 300 and img.shape[1] > 500
    out = write_session_report(store, sid, tmp_path / "report.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert mpimg.imread(out).shape[0] > 300
    with pytest.raises(ConfigError, match="unknown format"):
        write_session_report(store, sid, tmp_path / "report.pdf")
    with pytest.raises(ConfigError, match="no calibration session"):
        write_session_report(store, 999, tmp_path / "x.png")


def test_empty_session(tmp_path):
    with LabelStore(tmp_path / "e.sqlite") as store:
        s = store.start_session(
            "S07",
            name="empty",
            config={"budget": 10},
            label_scheme="quadrant",
            class_names=CLASSES,
        )
        summary = session_summary(store, s.id)
        assert summary["counts"]["total"] == 0 and summary["answers"] == []
        assert summary["accuracy"]["fused"] == {"n": 0, "correct": 0, "accuracy": None}
        assert summary["majority_baseline"]["accuracy"] is None
        assert summary["mean_response_s"] is None and summary["efficiency"] == []
        assert summary["chance"] == 0.25 and summary["budget"] == 10
        text = format_session_summary(summary)
        assert "0 answered" in text and "no answers yet" in text
        page = write_session_report(store, s.id, tmp_path / "e.html", predictions=[])
        assert _embedded_png(page.read_text(encoding="utf-8"))[:8] == PNG_MAGIC
        png = write_session_report(store, s.id, tmp_path / "e.png")
        assert png.read_bytes()[:8] == PNG_MAGIC
