"""The calibration label store: round trips, validation, concurrency and crash durability."""

from __future__ import annotations

import io
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bci_affect.core.errors import ConfigError, FileFormatError
from calibration.store import (
    SCHEMA_VERSION,
    AnswerRow,
    LabelStore,
    ModelVersionRow,
    QueryRow,
    SessionRow,
    decode_inputs,
    encode_inputs,
)
from calibration.ui import Answer

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("LVLA", "LVHA", "HVLA", "HVHA")
PRED = {"probs": [0.1, 0.2, 0.3, 0.4], "probs_teacher": [0.7, 0.1, 0.1, 0.1], "probs_student": None}


@pytest.fixture
def store(tmp_path):
    with LabelStore(tmp_path / "deep" / "folder" / "labels.sqlite") as s:
        yield s


def _session(store, subject="S01", **config):
    return store.start_session(
        subject,
        name="morning",
        config={"budget": 20, **config},
        label_scheme="quadrant",
        class_names=CLASSES,
    )


def _query(store, sid, t0, t1=None, **kw):
    args = dict(
        t_start=t0,
        t_end=t0 + 8.0 if t1 is None else t1,
        score=0.5,
        method="disagreement",
        model_version=0,
        prediction=PRED,
        triggered_wall=1000.0 + t0,
    )
    args.update(kw)
    return store.add_query(sid, **args)


def test_opens_with_wal_full_sync_foreign_keys_and_schema_version(store):
    assert store.path.parent.name == "folder" and store.path.exists()
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_subject_and_session_round_trip(store):
    store.ensure_subject("S01")
    store.ensure_subject("S01")  # idempotent
    assert store.subjects() == ["S01"]
    for bad in ("", "a b", "x" * 65, "S/1", 7, "é"):
        with pytest.raises(ConfigError, match="subject id"):
            store.ensure_subject(bad)
    s = _session(store, "S02", nested={"a": [1, 2]}, nan=float("nan"), arr=np.arange(3))
    assert isinstance(s, SessionRow)
    assert s.subject == "S02" and s.name == "morning" and s.status == "running"
    assert s.config == {"budget": 20, "nested": {"a": [1, 2]}, "nan": None, "arr": [0, 1, 2]}
    assert s.class_names == CLASSES and s.label_scheme == "quadrant"
    assert s.ended_wall is None and s.progress_t is None
    assert abs(s.started_wall - time.time()) < 60
    assert store.session(s.id) == s
    store.set_progress(s.id, 1234.5)
    assert store.session(s.id).progress_t == 1234.5
    assert store.latest_session("S02") == store.session(s.id)
    store.end_session(s.id, "interrupted", t_wall=s.started_wall + 10)
    got = store.session(s.id)
    assert got.status == "interrupted" and got.ended_wall == s.started_wall + 10
    assert store.latest_session("S02").id == s.id  # interrupted is unfinished
    assert store.reopen_session(s.id).status == "running"
    assert store.session(s.id).ended_wall is None
    store.end_session(s.id, "finished")
    assert store.latest_session("S02") is None
    assert store.latest_session("S02", unfinished_only=False).id == s.id
    s2 = _session(store, "S03")
    assert store.latest_session().id == s2.id
    assert [x.id for x in store.sessions()] == [s.id, s2.id]
    with pytest.raises(ConfigError, match="finished"):
        store.reopen_session(s.id)
    with pytest.raises(ConfigError, match="'finished' or 'interrupted'"):
        store.end_session(s2.id, "running")
    with pytest.raises(ConfigError, match="no calibration session"):
        store.session(999)
    with pytest.raises(ConfigError, match="class_names"):
        store.start_session("S01", name="x", config={}, label_scheme="q", class_names=["a"])
    with pytest.raises(ConfigError, match="JSON"):
        store.start_session(
            "S01", name="x", config={"f": object()}, label_scheme="q", class_names=CLASSES
        )


def test_query_round_trip_numbers_and_overlap(store):
    sid = _session(store).id
    q1 = _query(store, sid, 100.0)
    assert isinstance(q1, QueryRow)
    assert (q1.number, q1.t_start, q1.t_end, q1.span_s) == (1, 100.0, 108.0, 8.0)
    assert (q1.status, q1.score, q1.method, q1.model_version) == ("open", 0.5, "disagreement", 0)
    assert q1.prediction == PRED and q1.triggered_wall == 1100.0
    assert q1.shown_wall is None and q1.closed_wall is None
    assert store.open_query(sid) == q1 == store.query(q1.id)
    q2 = _query(store, sid, 108.0)  # touching is not overlapping
    assert q2.number == 2
    for t0, t1 in ((107.9, 110.0), (90.0, 100.1), (101.0, 102.0), (95.0, 120.0)):
        with pytest.raises(ConfigError, match="overlaps query 1"):
            _query(store, sid, t0, t1)
    # a span overlapping an expired query is refused too
    store.expire(q2.id, 2000.0)
    with pytest.raises(ConfigError, match="overlaps query 2"):
        _query(store, sid, 110.0)
    # another session may ask about the same times
    other = _session(store).id
    assert _query(store, other, 100.0).number == 1
    with pytest.raises(ConfigError, match="t_end > t_start"):
        _query(store, sid, 200.0, 200.0)
    with pytest.raises(ConfigError, match="finite"):
        _query(store, sid, math.nan)
    with pytest.raises(ConfigError, match="model_version"):
        _query(store, sid, 300.0, model_version=-1)
    store.end_session(sid, "finished")
    with pytest.raises(ConfigError, match="resume it"):
        _query(store, sid, 400.0)
    assert [q.number for q in store.queries(sid)] == [1, 2]
    # ending the session expired the open query
    assert store.query(q1.id).status == "expired"


def test_answers_validation_and_idempotence(store):
    sid = _session(store).id
    q1, q2, q3 = (_query(store, sid, t) for t in (0.0, 10.0, 20.0))
    store.mark_shown(q1.id, 500.0)
    store.mark_shown(q1.id, 600.0)  # the first call wins
    assert store.query(q1.id).shown_wall == 500.0
    got = store.answer(Answer(q1.id, valence=7, arousal=3, skipped=False, t_wall=502.5))
    assert (got.status, got.closed_wall) == ("answered", 502.5)
    assert store.answers(sid) == [AnswerRow(q1.id, 7, 3, False, 502.5, 2.5)]
    # identical reply again (a double click): no change, first time kept
    again = store.answer(Answer(q1.id, valence=7, arousal=3, skipped=False, t_wall=503.0))
    assert again == got and store.answers(sid)[0].answered_wall == 502.5
    with pytest.raises(ConfigError, match="already answered"):
        store.answer(Answer(q1.id, valence=6, arousal=3, skipped=False, t_wall=504.0))
    with pytest.raises(ConfigError, match="already answered"):
        store.answer(Answer(q1.id, valence=None, arousal=None, skipped=True, t_wall=504.0))
    # a skip, never shown: no response time
    skipped = store.answer(Answer(q2.id, None, None, skipped=True, t_wall=510.0))
    assert skipped.status == "skipped"
    assert store.answers(sid)[1] == AnswerRow(q2.id, None, None, True, 510.0, None)
    store.answer(Answer(q2.id, None, None, skipped=True, t_wall=511.0))  # idempotent
    # an expired query takes no answer; expiring a closed query is a no-op
    assert store.expire(q3.id, 520.0) is True
    assert store.expire(q3.id, 530.0) is False
    assert store.query(q3.id).closed_wall == 520.0
    with pytest.raises(ConfigError, match="already expired"):
        store.answer(Answer(q3.id, 5, 5, skipped=False, t_wall=540.0))
    assert store.expire(q1.id, 540.0) is False and store.query(q1.id).status == "answered"
    for call in (
        lambda: store.answer(Answer(999, 5, 5, False, 1.0)),
        lambda: store.mark_shown(999, 1.0),
        lambda: store.expire(999, 1.0),
    ):
        with pytest.raises(ConfigError, match="no query 999"):
            call()
    with pytest.raises(ConfigError, match="Answer"):
        store.answer((q1.id, 5, 5))
    assert store.open_query(sid) is None
    assert store.counts(sid) == {"open": 0, "answered": 1, "skipped": 1, "expired": 1, "total": 3}

    labelled = store.answered(sid)
    assert len(labelled) == 1
    lq = labelled[0]
    assert lq.query == store.query(q1.id) and lq.answer.valence == 7
    assert (lq.subject, lq.label_scheme, lq.class_names) == ("S01", "quadrant", CLASSES)
    # by subject, across sessions, in order
    sid2 = _session(store).id
    q4 = _query(store, sid2, 0.0)
    store.answer(Answer(q4.id, 2, 8, False, 600.0))
    _session(store, "S09")
    assert [x.query.id for x in store.answered(subject="S01")] == [q1.id, q4.id]
    assert [x.query.id for x in store.answered()] == [q1.id, q4.id]
    assert store.answered(subject="S09") == []


def test_query_windows_round_trip_exactly(store):
    sid = _session(store).id
    q = _query(store, sid, 0.0)
    rng = np.random.default_rng(0)
    face = rng.standard_normal((30, 12)).astype(np.float32)
    face[3, 4] = np.nan
    face[5, 0] = -np.inf
    windows = [
        (
            17,
            1.5,
            {
                "face": face,
                "face_mask": rng.random(30) > 0.2,
                "eeg_de": rng.standard_normal((8, 5)),
                "eeg_raw": None,
                "emg_score": np.float32(0.25),
                "eeg_quality": 0.75,
            },
        ),
        (18, 2.0, {"face": None, "eeg_de": np.zeros((8, 5), np.float16)}),
    ]
    store.add_query_windows(q.id, windows)
    loaded = store.load_query_windows([q.id, 12345])
    assert loaded[12345] == []
    got = loaded[q.id]
    assert [(i, t) for i, t, _ in got] == [(17, 1.5), (18, 2.0)]
    for (_, _, want), (_, _, have) in zip(windows, got, strict=True):
        assert set(have) == set(want)
        for key, value in want.items():
            if value is None:
                assert have[key] is None
            else:
                arr = np.asarray(value)
                assert have[key].dtype == arr.dtype and have[key].shape == arr.shape
                np.testing.assert_array_equal(have[key], arr)  # NaN equal to NaN
    assert np.isnan(got[0][2]["face"][3, 4]) and got[0][2]["face"].dtype == np.float32
    # re-adding a window replaces it
    store.add_query_windows(q.id, [(18, 2.0, {"face": None})])
    assert store.load_query_windows([q.id])[q.id][1][2] == {"face": None}
    with pytest.raises(ConfigError, match="no query"):
        store.add_query_windows(999, windows)
    with pytest.raises(ConfigError, match="dtype object"):
        store.add_query_windows(q.id, [(1, 0.5, {"x": np.array([None, 1], dtype=object)})])
    with pytest.raises(ConfigError, match="window_index"):
        store.add_query_windows(q.id, [(-1, 0.5, {})])


def test_inputs_load_without_pickle():
    blob = encode_inputs({"a": np.arange(3), "b": None})
    out = decode_inputs(blob)
    assert out["b"] is None and out["a"].tolist() == [0, 1, 2]
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FileFormatError, match="unreadable"):
        decode_inputs(buf.getvalue())  # not an npz
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([{"x": 1}], dtype=object))
    with pytest.raises(FileFormatError, match="unreadable"):
        decode_inputs(buf.getvalue())  # would need pickle


def test_model_versions_increment_per_subject(store):
    sid = _session(store).id
    assert store.latest_model("S01") is None
    assert store.register_model("S01", path=None, parent=None, n_labels=0, session=None) == 0
    v1 = store.register_model(
        "S01",
        path=Path("/models/s01_v1"),
        parent=0,
        n_labels=5,
        session=sid,
        metrics={"val_acc": np.float64(0.6), "nan": math.nan},
    )
    assert v1 == 1
    assert store.register_model("S02", path="x", parent=None, n_labels=0, session=None) == 0
    assert store.register_model("S01", path="y", parent=1, n_labels=10, session=sid) == 2
    rows = store.model_versions("S01")
    assert [r.version for r in rows] == [0, 1, 2]
    assert rows[0] == ModelVersionRow("S01", 0, None, rows[0].created_wall, None, 0, None, {})
    assert rows[1].path == "/models/s01_v1" and rows[1].parent == 0 and rows[1].session == sid
    assert rows[1].metrics == {"val_acc": 0.6, "nan": None} and rows[1].n_labels == 5
    assert store.latest_model("S01") == rows[2]
    assert store.model_version("S01", 1) == rows[1]
    assert [r.version for r in store.model_versions("S02")] == [0]
    with pytest.raises(ConfigError, match="no model version 7"):
        store.register_model("S01", path="z", parent=7, n_labels=1, session=None)
    with pytest.raises(ConfigError, match="no calibration session"):
        store.register_model("S01", path="z", parent=0, n_labels=1, session=999)
    with pytest.raises(ConfigError, match="n_labels"):
        store.register_model("S01", path="z", parent=0, n_labels=-1, session=None)
    assert store.latest_model("S01").version == 2  # failed registrations left nothing


def test_threads_add_answer_and_register_at_once(store):
    sid = _session(store).id
    n_threads, per_thread = 6, 15
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def work(k: int) -> None:
        try:
            start.wait(timeout=10)
            for i in range(per_thread):
                t0 = 1000.0 * k + 10.0 * i
                q = _query(store, sid, t0)
                store.mark_shown(q.id, t0)
                store.add_query_windows(q.id, [(i, t0 + 8.0, {"face": np.full(4, k, np.float32)})])
                if i % 3 == 2:
                    store.answer(Answer(q.id, None, None, True, t0 + 1))
                else:
                    store.answer(Answer(q.id, 1 + k, 1 + i % 9, False, t0 + 1))
                store.register_model("S01", path=None, parent=None, n_labels=i, session=sid)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    n = n_threads * per_thread
    assert sorted(q.number for q in store.queries(sid)) == list(range(1, n + 1))
    counts = store.counts(sid)
    assert counts["answered"] == n_threads * 10 and counts["skipped"] == n_threads * 5
    assert [m.version for m in store.model_versions("S01")] == list(range(n))
    windows = store.load_query_windows([q.id for q in store.queries(sid)])
    assert sum(len(w) for w in windows.values()) == n


_CHILD = textwrap.dedent(
    """
    import sys
    from calibration.store import LabelStore
    from calibration.ui import Answer

    store = LabelStore(sys.argv[1])
    s = store.start_session("S01", name="crash", config={}, label_scheme="quadrant",
                            class_names=["LVLA", "LVHA", "HVLA", "HVHA"])
    print("session", s.id, flush=True)
    for i in range(100000):
        q = store.add_query(s.id, t_start=10.0 * i, t_end=10.0 * i + 8, score=1.0,
                            method="disagreement", model_version=0,
                            prediction={"probs": [0.25] * 4}, triggered_wall=float(i))
        store.mark_shown(q.id, float(i))
        store.answer(Answer(q.id, 1 + i % 9, 9 - i % 9, False, float(i) + 0.5))
        print("answered", i + 1, flush=True)
    """
)


def test_answers_survive_sigkill(tmp_path):
    path = tmp_path / "crash.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("session"), first + proc.stderr.read()
        sid = int(first.split()[1])
        reported = 0
        deadline = time.monotonic() + 20
        while reported < 25 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line.startswith("answered"), line + proc.stderr.read()
            reported = int(line.split()[1])
        proc.send_signal(signal.SIGKILL)  # right after reading "answered N"
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert reported >= 25
    with LabelStore(path) as store:
        answered = store.answered(sid)
        assert len(answered) >= reported
        for i, lq in enumerate(answered[:reported]):
            assert lq.query.number == i + 1
            assert (lq.answer.valence, lq.answer.arousal) == (1 + i % 9, 9 - i % 9)
            assert lq.answer.response_s == 0.5
        assert store.session(sid).status == "running"  # resumable
        # the file is consistent and writable after the crash
        q = store.open_query(sid)
        if q is not None:
            store.expire(q.id, time.time())
        _query(store, sid, 1e7)


def test_not_sqlite_gives_file_format_error(tmp_path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(FileFormatError, match="not an SQLite file"):
        LabelStore(path)
    # an SQLite header followed by junk
    path.write_bytes(b"SQLite format 3\x00" + np.random.default_rng(2).bytes(4096))
    with pytest.raises(FileFormatError, match="not a readable label store"):
        LabelStore(path)


def test_newer_schema_and_foreign_database_are_refused(tmp_path):
    path = tmp_path / "labels.sqlite"
    LabelStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(FileFormatError, match="newer"):
        LabelStore(path)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(FileFormatError, match="another program"):
        LabelStore.open(other)
    with pytest.raises(ConfigError, match="folder"):
        LabelStore(tmp_path)


def test_reopen_keeps_everything_and_closed_store_refuses(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path) as store:
        sid = _session(store).id
        q = _query(store, sid, 0.0)
        store.answer(Answer(q.id, 4, 6, False, 5.0))
    with LabelStore.open(path) as store:
        assert store.answered(sid)[0].answer.valence == 4
        assert store.session(sid).config == {"budget": 20}
    store.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        store.counts(sid)
