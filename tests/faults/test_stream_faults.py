"""Faults of live LSL input during ``bci-affect run --lsl``: a publisher killed and restarted
(the same, then with another montage), NaN and inf bursts, a channel that goes flat or rails.

The EEG comes from ``eeg_publisher.py``, a separate process that pushes synthetic EEG on LSL
(localhost) in real time and injects faults on request, printing when each one began and
ended (LSL clock). ``run`` is a real child process in a user's environment (stream errors
reported, not re-raised); the test reads its lines and its predictions file.
"""

from __future__ import annotations

import re
import signal

import numpy as np
import pylsl
import pytest

from bci_affect.engine import read_jsonl

from .processes import (
    Child,
    bci_affect,
    read_records,
    run_args,
    start_publisher,
    summary_counts,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.lsl]

SFREQ = 250.0
#: One sample period: how far a window edge may lie from a fault's first/last sample.
TOL = 1.0 / SFREQ
#: Seconds a run may take to start (imports, model, first window) on a loaded machine.
START_S = 60.0


def _start(tmp_path, uid, *extra):
    """A publisher and a ``run --lsl`` reading it, once the run has scored two windows."""
    name, sid = f"EEG-{uid}", f"faults-{uid}"
    publisher, _ = start_publisher(name, sid)
    out = tmp_path / "p.jsonl"
    run = Child(bci_affect(*run_args(uid, out, "--lsl", f"source_id={sid}", *extra)))
    try:
        wait_until(lambda: len(read_records(out)) >= 2, START_S, "the first predictions")
    except BaseException:
        run.stop()
        publisher.stop()
        raise
    return publisher, run, out


def _overlaps(r: dict, start: float, end: float) -> bool:
    """Whether the window of prediction ``r`` holds samples from ``start`` to ``end``."""
    return r["t_window_end"] > start + TOL and r["t_window_end"] - r["window_s"] < end - TOL


def _stop_cleanly(run: Child) -> None:
    run.proc.send_signal(signal.SIGINT)
    rc = run.wait(60)
    assert rc == 0, (rc, run.out, run.err)
    assert not any("Traceback" in line for line in run.out + run.err), run.err


def test_publisher_killed_and_restarted_gap_is_marked_and_never_scored(tmp_path, uid):
    """The publisher is SIGKILLed mid-run and started again with the same source_id: the run
    says the stream is lost, back, and where the gap is; predictions resume; no prediction's
    window holds any part of the gap. Killed again and restarted with another montage (4
    channels instead of 8), the stream cannot be read on: the run ends at once with one error
    line saying so, exit status 2, every prediction kept."""
    name, sid = f"EEG-{uid}", f"faults-{uid}"
    publisher, run, out = _start(tmp_path, uid, "--status-every", "0")
    try:
        t_kill = pylsl.local_clock()
        publisher.proc.kill()
        publisher.wait(30)
        run.wait_line(rf"\] stream '{name}' lost; waiting for it to come back; no predict", 30)
        publisher, t_restart = start_publisher(name, sid)
        run.wait_line(rf"\] stream '{name}' is back", 30)
        gap = run.wait_line(rf"\] stream '{name}': [\d.]+ s gap \(t=([\d.]+) to ([\d.]+) s\)", 5)
        start, end = float(gap.group(1)), float(gap.group(2))
        assert start < t_kill < t_restart <= end + TOL

        def resumed() -> int:
            return sum(r["t_window_end"] - r["window_s"] >= end - TOL for r in read_records(out))

        wait_until(lambda: resumed() >= 2, 30, "predictions after the gap")
        publisher.proc.kill()  # and back at once, before the run may notice it was gone
        publisher.wait(30)
        publisher, _ = start_publisher(name, sid, "--n-chans", "4")
        rc = run.wait(60)
    finally:
        run.stop()
        publisher.stop()
    assert rc == 2, (run.out, run.err)
    assert not any("Traceback" in line for line in run.out + run.err), run.err
    final = [line for line in run.err if line.startswith("bci-affect run: error:")]
    assert len(final) == 1, run.err
    assert f"{name!r} (source_id {sid!r}) came back with 4 channels" in final[0]
    assert "instead of 8" in final[0] and "start it again" in final[0]
    records = read_jsonl(out)
    assert out.read_text().endswith("\n")
    assert not [r["index"] for r in records if _overlaps(r, start, end)]
    before = [r for r in records if r["t_window_end"] <= start + TOL]
    assert before and len(before) + resumed() == len(records)
    assert all(r["quality"]["complete"] and r["modalities"]["eeg_used"] for r in records)
    counts = summary_counts(run.out)
    assert counts["scored"] == len(records)
    # the windows that would have spanned the gap were cut, counted and left unscored
    assert counts["not scored"] >= round((end - start) / 0.5)


def _fault(publisher: Child, kind: str) -> tuple[float, float]:
    """First and last sample time of the ``kind`` fault the publisher reports."""
    m = publisher.wait_line(rf"^fault {kind} (\S+) (\S+)", 30)
    return float(m.group(1)), float(m.group(2))


def test_nan_inf_flat_and_railed_input_mid_session(tmp_path, uid):
    """A bad stretch of a live session: bursts of NaN then +inf on every channel, then O1 flat
    (a lead off) and C3 railed at +187,500 µV for 5 s. No crash; one warning line when a run of
    NaN/inf samples starts and ends, and the windows over them are not scored; the flat and
    railed channels are shown as bad in the windows they spoil (lower quality), scoring goes on
    with the other channels, and the run says which channels it leaves out and when they are
    good again; every prediction is finite, and scoring goes on after the faults."""
    publisher, run, out = _start(tmp_path, uid, "--status-every", "0")
    try:
        publisher.send("nan 0.3")
        nan = _fault(publisher, "nan")
        publisher.send("inf 0.3")
        inf = _fault(publisher, "inf")
        publisher.send("flat O1 5")
        publisher.send("rail C3 5")
        flat, rail = _fault(publisher, "flat"), _fault(publisher, "rail")
        end = max(flat[1], rail[1])
        wait_until(
            lambda: sum(r["t_window_end"] - r["window_s"] > end for r in read_records(out)) >= 2,
            30,
            "predictions after the faults",
        )
        run.wait_line(r"\] every EEG channel good again", 10)
        _stop_cleanly(run)
    finally:
        run.stop()
        publisher.stop()
    records = read_jsonl(out)
    assert len(records) == summary_counts(run.out)["scored"]
    probs = np.array([[r["probs"][c] for c in r["classes"]] for r in records], dtype=float)
    assert np.isfinite(probs).all()

    # NaN and inf: left out, said so, and no window over them scored
    starts = [re.search(r"sends NaN or inf samples from t=([\d.]+) s", x) for x in run.err]
    ends = [re.search(r"finite again at t=[\d.]+ s \((\d+) samples", x) for x in run.err]
    starts, ends = [m for m in starts if m], [m for m in ends if m]
    assert 1 <= len(starts) == len(ends) <= 2, run.err  # the bursts may run into each other
    assert abs(float(starts[0].group(1)) - nan[0]) < TOL / 2
    assert sum(int(m.group(1)) for m in ends) == 2 * 75  # 0.3 s at 250 Hz, twice
    assert "150 EEG samples with NaN or inf left out" in next(x for x in run.out if x[:4] == "ran ")
    assert not [r["index"] for r in records if any(_overlaps(r, *b) for b in (nan, inf))]
    assert summary_counts(run.out)["not scored"] >= 8  # every window over a burst

    # flat and railed: flagged in the windows they spoil, scored with the other channels
    lines = [x for x in run.out if "EEG channels flagged bad (flat, railed or noisy)" in x]
    assert any(x.split("left out: ")[1].startswith("C3, O1 ") for x in lines), run.out
    t0, t1 = max(flat[0], rail[0]), min(flat[1], rail[1])
    inside = [r for r in records if r["t_window_end"] - r["window_s"] >= t0 - TOL]
    inside = [r for r in inside if r["t_window_end"] <= t1 + TOL]
    assert inside, "no window lay wholly inside the flat and railed stretch"
    for r in inside:
        assert r["quality"]["bad_channels"] == ["C3", "O1"], r["quality"]
        assert r["quality"]["eeg_quality"] == pytest.approx(6 / 8)
        assert r["quality"]["complete"] and r["modalities"]["eeg_used"]
    touched = [r for r in records if _overlaps(r, *rail)]
    assert touched and all("C3" in r["quality"]["bad_channels"] for r in touched)

    # before and after: clean windows, scored from the EEG
    clean = [r for r in records if not _overlaps(r, nan[0], end)]
    before = [r for r in clean if r["t_window_end"] <= nan[0] + TOL]
    after = [r for r in clean if r["t_window_end"] - r["window_s"] >= end - TOL]
    assert before and len(after) >= 2 and len(before) + len(after) == len(clean)
    for r in clean:
        assert r["quality"]["bad_channels"] == [] and r["quality"]["complete"]
        assert r["modalities"]["eeg_used"] and r["quality"]["eeg_quality"] > 0.5
