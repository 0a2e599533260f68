"""Faults during ``bci-affect calibrate`` and in its label store.

Real processes and real POSIX signals: a ``calibrate --replay`` session of the bundled sample
recording (LSL on localhost, the web page's API as the participant, the session's XDF written
by LabRecorder), then SIGINT, SIGTERM or SIGKILL at a seeded random moment, a disk that fills
up, a store held locked by another process, a damaged store file, and a second process
resuming a session that is still running. Every case checks the SQLite file itself
(``PRAGMA integrity_check``, every answer stored before the fault), the session's status, and
what the user reads: one clear line, no traceback.

The moment of each signal is drawn from ``random.Random(f"{seed}-{signal}")`` with ``seed``
from ``$BCI_AFFECT_FAULT_SEED`` (default 0); the chosen moment is printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from acquisition.xdf import RecordingWarning, load_xdf
from calibration.store import LabelStore, StorageError
from calibration.ui import Answer, QueryView
from calibration.web import WebUI

from ..calibration.test_calibrate_cli import SESSION, Cli, _alive, _children, page_query, wait_until
from ..calibration.util import DEMO
from .processes import fill_disk, tmpfs

SEED = int(os.environ.get("BCI_AFFECT_FAULT_SEED", "0"))
#: The session of the calibrate tests without personalisation rounds (a busy worker process
#: slows every step on a shared machine and is not what these tests are about).
FAST = [*SESSION, "--personalise-every", "0"]
#: Production behaviour in the child: stream errors reported, not raised.
ENV = {"BCI_AFFECT_RAISE_STREAM_ERRORS": "0"}
OPEN = r"open (http://127\.0\.0\.1:\d+/\S*) in a browser"
MOMENTS = ("answer stored", "next query open", "random delay")


def answer(url: str, query_id: int, valence: int, arousal: int) -> tuple[int, dict]:
    """POST an answer as the page does: (HTTP status, JSON reply)."""
    body = json.dumps({"query_id": query_id, "valence": valence, "arousal": arousal}).encode()
    req = urllib.request.Request(
        url.split("?")[0] + "answer", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` of the file, read by plain sqlite3."""
    conn = sqlite3.connect(db)
    try:
        return "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def answered(db: Path, session_id: int = 1) -> list[tuple[int, int, int]]:
    with LabelStore(db) as store:
        return [
            (q.query.id, q.answer.valence, q.answer.arousal) for q in store.answered(session_id)
        ]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("bci-affect calibrate: error")]


def small_store(db: Path) -> tuple[int, int]:
    """A store with a finished session of S01 holding one answered query: (session, query)."""
    with LabelStore(db) as store:
        ses = store.start_session(
            "S01", name="ses-a", config={}, label_scheme="quadrant", class_names=list("abcd")
        )
        q = store.add_query(
            ses.id, t_start=10.0, t_end=18.0, score=0.5, method="random", model_version=0,
            prediction={},
        )  # fmt: skip
        store.add_query_windows(q.id, [(3, 17.5, {"eeg_de": np.ones((19, 5), np.float32)})])
        store.answer(Answer(q.id, 7, 3, False, 1.0))
        store.end_session(ses.id, "finished")
    return ses.id, q.id


# --------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.lsl
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name
)
def test_signal_at_a_random_moment_keeps_every_answer_and_resumes(tmp_path, sig):
    rng = random.Random(f"{SEED}-{sig.name}")
    moment, delay_s = rng.choice(MOMENTS), rng.uniform(0.0, 1.5)
    print(f"seed {SEED}: {sig.name} at '{moment}' (random delay {delay_s:.2f} s)")
    killed = sig == signal.SIGKILL
    data = tmp_path / "data"
    db = data / "calibration.sqlite"
    cli = Cli(["--subject", "S01", "--data-dir", str(data), "--port", "0", *FAST], env=ENV)
    open_query = None
    try:
        url = cli.wait_for(OPEN).group(1)
        qid = page_query(url)
        assert answer(url, qid, 8, 2)[0] == 200
        if moment == "next query open":
            open_query = page_query(url, other_than=qid)
        elif moment == "random delay":
            threading.Event().wait(delay_s)  # the injected moment, not a wait for anything
        children = _children(cli.proc.pid)  # the recorder finishes its file when left alone
        cli.proc.send_signal(sig)
        rc = cli.finish(90)
        wait_until(lambda: not any(_alive(c) for c in children), 60, "the recording process")
    finally:
        cli.kill()
    out = "".join(cli.output)
    assert "Traceback" not in out, out
    if killed:
        assert rc == -signal.SIGKILL
    else:  # a clean stop: the session is resumable, and says how
        assert rc == 0, out
        assert "session interrupted; continue it with: bci-affect calibrate --resume 1" in out

    assert integrity(db) == "ok"
    assert answered(db) == [(qid, 8, 2)]
    with LabelStore(db) as store:
        ses = store.session(1)
        status = {q.id: q.status for q in store.queries(1)}
    # a killed process cannot say so: the next calibrate marks its session (below)
    assert ses.status == ("running" if killed else "interrupted")
    if not killed:
        assert ses.ended_wall is not None and "open" not in status.values()
    if open_query is not None:
        assert status[open_query] == ("open" if killed else "expired")

    # the recording is readable up to the cut
    xdf = data / "subjects" / "S01" / "sessions" / ses.name / "calibration-1.xdf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)
        streams = {c.name: c for c in load_xdf(xdf)}
    eeg = streams["EEG"]
    assert eeg.n_times > 0 and np.all(np.diff(eeg.times) > 0)
    if not killed:  # a complete file holds the answer in the training schema
        markers = [json.loads(m) for m in streams["Markers"].data[0]]
        assert {"event": "rating", "trial": qid, "valence": 8, "arousal": 2} in markers

    resumed = Cli(["--resume", "--data-dir", str(data), "--port", "0"], env=ENV)
    try:
        if killed:
            resumed.wait_for(
                r"session 1 \(ses-[\d-]+\) of S01 was left running by a process that ended "
                r"without closing it; marked interrupted"
            )
        resumed.wait_for(r"resumed, 1 answers so far")
        url = resumed.wait_for(OPEN).group(1)
        nxt = page_query(url, other_than=qid)
        assert answer(url, nxt, 3, 7)[0] == 200
    finally:
        resumed.kill()
    assert integrity(db) == "ok"
    assert answered(db) == [(qid, 8, 2), (nxt, 3, 7)]
    with LabelStore(db) as store:
        queries = store.queries(1)
    spans = sorted((q.t_start, q.t_end) for q in queries)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # never re-asked
    if open_query is not None:  # asked before the cut: expired, never answered late
        assert next(q for q in queries if q.id == open_query).status == "expired"


# --------------------------------------------------------------------------------------------
# a full disk
# --------------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """``(data_dir, fill)``: after ``fill(pid)`` every further write of the session fails.

    The data folder is on a 16 MiB tmpfs (needs root to mount) and ``fill`` takes its last
    byte. Where no tmpfs can be mounted, ``fill`` sets the running process's file-size limit to
    0 instead (``prlimit``, Linux; Python ignores SIGXFSZ, so writes fail with EFBIG).
    """
    mnt = tmp_path / "disk"
    with tmpfs(mnt, "16m") as why:
        if why is None:
            yield mnt / "data", lambda pid: fill_disk(mnt / "filler")
            return
        resource = pytest.importorskip("resource")
        if not hasattr(resource, "prlimit"):
            pytest.skip(f"cannot mount a tmpfs ({why}) and no prlimit")

        def limit(pid: int) -> None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, 0))

        yield mnt / "data", limit


@pytest.mark.slow
@pytest.mark.lsl
def test_full_disk_stops_the_session_with_one_line_and_keeps_the_answers(full_disk):
    data, fill = full_disk
    db = data / "calibration.sqlite"
    cli = Cli(["--subject", "S01", "--data-dir", str(data), "--port", "0", *FAST], env=ENV)
    try:
        url = cli.wait_for(OPEN).group(1)
        qid = page_query(url)
        assert answer(url, qid, 8, 2)[0] == 200
        fill(cli.proc.pid)
        rc = cli.finish(90)  # the next write fails: the session stops by itself
    finally:
        cli.kill()
    out = "".join(cli.output)
    print(out)  # what the user saw
    assert rc == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert line == out.rstrip("\n").splitlines()[-1]  # the last word, on one line
    assert line.startswith(f"bci-affect calibrate: error: cannot write the label store {db}: ")
    assert re.search(r"the disk is full|file size limit", line), line
    assert line.endswith(
        "the answers stored before are kept: once fixed, continue with: "
        "bci-affect calibrate --resume 1"
    )
    (data.parent / "filler").unlink(missing_ok=True)
    assert integrity(db) == "ok"
    assert answered(db) == [(qid, 8, 2)]
    with LabelStore(db) as store:
        # "running" when not even the end could be written: the next session marks it
        assert store.session(1).status in ("running", "interrupted")
        (closed,) = store.close_abandoned() or [store.session(1)]
        answered_wall = store.answered(1)[0].answer.answered_wall
    assert closed.status == "interrupted" and closed.ended_wall >= answered_wall


def test_the_page_is_told_when_an_answer_is_not_stored():
    """An answer the store refused is never confirmed to the participant."""

    def refuse(ans: Answer) -> None:
        raise StorageError("cannot write the label store x.sqlite: the disk is full")

    ui = WebUI(refuse, lambda qid, t: None, port=0)
    ui.start()
    try:
        ui.show_query(QueryView(query_id=4, span_s=8.0, prompt="How?", number=1, budget=3))
        status, reply = answer(ui.url, 4, 5, 5)
    finally:
        ui.close()
    assert status == 503
    assert reply["error"] == (
        "The answer was not stored: cannot write the label store x.sqlite: the disk is full"
    )


# --------------------------------------------------------------------------------------------
# the store locked, damaged, or its session run elsewhere
# --------------------------------------------------------------------------------------------

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA locking_mode = " + sys.argv[2])
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE subjects SET created_wall = created_wall")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def _bci_affect(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "bci-affect"
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **ENV, **(env or {})},
    )


def _hold(args: list[str], code: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() in ("locked", "held")
    return proc


def _release(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(30)


@pytest.mark.slow
def test_a_locked_store_ends_calibrate_and_readers_with_one_line(tmp_path):
    data = tmp_path / "data"
    db = data / "calibration.sqlite"
    small_store(db)
    wait = {"BCI_AFFECT_STORE_TIMEOUT_S": "1"}
    locked = (
        f"the label store {db} is locked by another process (waited 1 s); close the other "
        "program using it (another bci-affect calibrate, a database browser) and try again "
        "($BCI_AFFECT_STORE_TIMEOUT_S sets the wait)"
    )
    # a writer holds a transaction: calibrate cannot store anything, so it does not start
    holder = _hold([str(db), "NORMAL"], _HOLDER)
    try:
        res = _bci_affect(
            "calibrate", "--subject", "S01", "--replay", str(DEMO), "--data-dir", str(data),
            env=wait,
        )  # fmt: skip
    finally:
        _release(holder)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    assert res.stderr == f"bci-affect calibrate: error: {locked}\n"
    # exclusive locking mode keeps readers out too: a command that reads the store
    holder = _hold([str(db), "EXCLUSIVE"], _HOLDER)
    try:
        res = _bci_affect(
            "run", "--board", "synthetic", "--subject", "S01", "--data-dir", str(data), env=wait
        )
    finally:
        _release(holder)
    assert res.returncode == 2 and res.stderr == f"bci-affect run: error: {locked}\n"
    assert integrity(db) == "ok" and answered(db) == [(1, 7, 3)]


def _damage(kind: str, good: bytes) -> bytes:
    rng = np.random.default_rng(7)
    if kind == "garbage":
        return rng.bytes(len(good))
    if kind == "truncated":
        return good[: len(good) // 2]
    # a page in the middle overwritten: the header is fine, the tree is not
    page = 4096
    return good[:page] + rng.bytes(page) + good[2 * page :]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["garbage", "truncated", "damaged page"])
def test_a_damaged_store_is_refused_and_never_written(tmp_path, kind):
    data = tmp_path / "data"
    db = data / "calibration.sqlite"
    small_store(db)
    with LabelStore(db) as store:  # a few pages more, so that the damage hits the tree
        for i in range(40):
            store.register_model("S01", path=None, parent=None, n_labels=0, session=None,
                                 metrics={"note": "x" * 400, "i": i})  # fmt: skip
    bad = _damage(kind, db.read_bytes())
    db.write_bytes(bad)
    before = sorted(p.name for p in data.iterdir())
    res = _bci_affect(
        "calibrate", "--subject", "S01", "--replay", str(DEMO), "--data-dir", str(data)
    )
    assert res.returncode == 2 and res.stdout == "", res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    if kind == "garbage":
        expected = f"{db} is not an SQLite file, so not a label store; it was left as it is"
    else:
        expected = rf"{re.escape(str(db))} is not a readable label store \(.+\); it was left as"
    assert re.match(rf"bci-affect calibrate: error: {expected}", lines[0]), lines[0]
    assert "move it away" in lines[0]
    # a command that only reads the store says the same
    res = _bci_affect("run", "--board", "synthetic", "--subject", "S01", "--data-dir", str(data))
    assert res.returncode == 2 and res.stderr == lines[0].replace("calibrate", "run", 1) + "\n"
    # nothing was written: the same bytes, no new files beside it
    assert hashlib.sha256(db.read_bytes()).digest() == hashlib.sha256(bad).digest()
    assert sorted(p.name for p in data.iterdir()) == before


@pytest.mark.slow
def test_a_session_running_elsewhere_is_not_resumed_and_a_killed_one_is_marked(tmp_path):
    data = tmp_path / "data"
    db = data / "calibration.sqlite"
    with LabelStore(db) as store:
        ses = store.start_session(
            "S01", name="ses-b", config={}, label_scheme="quadrant", class_names=list("abcd")
        )
        t0 = ses.started_wall
        q = store.add_query(
            ses.id, t_start=5.0, t_end=13.0, score=0.1, method="random", model_version=0,
            prediction={}, triggered_wall=t0 + 10,
        )  # fmt: skip
        store.answer(Answer(q.id, 2, 8, False, t0 + 20))
        q2 = store.add_query(
            ses.id, t_start=30.0, t_end=38.0, score=0.1, method="random", model_version=0,
            prediction={}, triggered_wall=t0 + 30,
        )  # fmt: skip
    code = (
        "import sys; from calibration.store import LabelStore; "
        "s = LabelStore(sys.argv[1]); s.hold_session(int(sys.argv[2])); "
        "print('held', flush=True); sys.stdin.readline()"
    )
    runner = _hold([str(db), str(ses.id)], code)  # stands for the process running the session
    try:
        res = _bci_affect("calibrate", "--resume", str(ses.id), "--data-dir", str(data))
        with LabelStore(db) as store:
            assert store.close_abandoned() == []  # it is running: nothing to mark
            assert store.session(ses.id).status == "running"
        runner.send_signal(signal.SIGKILL)
        runner.wait(30)
    finally:
        _release(runner)
    assert res.returncode == 2, res.stderr
    assert res.stderr == (
        f"bci-affect calibrate: error: calibration session {ses.id} is running in another "
        f"process (it holds {db}.locks/session-{ses.id}.lock); stop that one first, or wait "
        "for it to end\n"
    )
    with LabelStore(db) as store:
        (closed,) = store.close_abandoned()
        assert closed.id == ses.id and closed.status == "interrupted"
        assert closed.ended_wall == t0 + 30  # its last sign of life, not when it was found
        assert store.query(q2.id).status == "expired" and store.query(q.id).status == "answered"
        store.hold_session(ses.id)  # free to resume now
        store.reopen_session(ses.id)
    assert integrity(db) == "ok"
