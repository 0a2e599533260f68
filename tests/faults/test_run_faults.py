"""Faults of ``bci-affect run`` (and ``replay --realtime``), seen as a user sees them.

Real processes and real POSIX signals: ``bci-affect run`` on BrainFlow's synthetic board or on
an EEG stream that a separate publisher process puts on LSL (localhost), real checkpoints, the
bundled sample recording. Each case checks the exit status, the lines printed, and that the
predictions file holds every prediction the summary counts, each line complete.

The runs of one input are started together by a module fixture (they share the start-up
time); each test then acts on its own run. Signals land at a random moment after the first
predictions.
"""

from __future__ import annotations

import random
import signal
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from acquisition.lsl_inlet import LslSource
from bci_affect.engine import PREDICTIONS_TYPE, bundled_model_path, read_jsonl
from bci_affect.models.checkpoint import load_checkpoint, save_checkpoint

from .processes import (
    ROOT,
    Child,
    bci_affect,
    read_records,
    run_args,
    start_publisher,
    summary_counts,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.lsl]

SAMPLE = ROOT / "recordings" / "sample" / "demo.xdf"
#: Seconds a run may take to start (imports, model, first window) on a loaded machine.
START_S = 60.0


class _Run:
    """One ``bci-affect run`` child (session ``session``) and its predictions file."""

    def __init__(self, session: str, out: Path, *extra: str) -> None:
        self.session, self.out = session, out
        self.child = Child(bci_affect(*run_args(session, out, *extra)))


class _Runs(dict):
    """Runs by role, started together, and what they read (``publisher``, ``stream``)."""

    publisher: Child | None = None
    stream: str = ""
    model: Path | None = None

    def stop(self) -> None:
        for run in self.values():
            run.child.stop()
        if self.publisher is not None:
            self.publisher.stop()


def _signal_at_random(run: _Run, sig: signal.Signals) -> int:
    """Send ``sig`` after the k-th prediction (k random in 1..2) plus a random part of a hop,
    so that it lands anywhere in the loop (waiting, scoring, writing); returns k."""
    rng = random.Random(run.session)
    k = rng.randint(1, 2)
    wait_until(lambda: len(read_records(run.out)) >= k, START_S, f"{k} predictions")
    threading.Event().wait(rng.uniform(0.0, 0.5))  # the random moment itself, not a wait
    run.child.proc.send_signal(sig)
    return k


def _assert_clean_stop(run: _Run, k: int) -> list[dict]:
    """Exit status 0, one summary line, no error, every counted prediction in the file."""
    child = run.child
    rc = child.wait(60)
    assert rc == 0, (rc, child.out, child.err)
    assert not [line for line in child.err if "Traceback" in line or "error" in line], child.err
    assert "interrupted" not in " ".join(child.err)
    counts = summary_counts(child.out)
    assert run.out.read_text(encoding="utf-8").endswith("\n")  # no half-written line
    records = read_jsonl(run.out)
    assert len(records) == counts["scored"] >= k
    assert [r["index"] for r in records] == sorted({r["index"] for r in records})
    assert any(line.startswith(f"session {run.session!r}: ") for line in child.out)
    return records


def _diverged_copy(folder: Path) -> Path:
    """The bundled model with every weight scaled by 1e30: it loads, and its forward pass
    overflows to NaN, as a training run that diverged would leave it."""
    model = load_checkpoint(bundled_model_path())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)
    return save_checkpoint(model, folder)


# --------------------------------------------------------------------------------------------
# on BrainFlow's synthetic board


@pytest.fixture(scope="module")
def board_runs(tmp_path_factory):
    """Three runs on the synthetic board: two to stop with SIGINT and SIGTERM, one scoring
    with a model whose forward pass overflows (it ends by itself after 6 s)."""
    tmp = tmp_path_factory.mktemp("board")
    uid = uuid.uuid4().hex[:10]
    model = _diverged_copy(tmp / "diverged")
    board = ("--board", "synthetic", "--no-publish-inputs")
    runs = _Runs(
        {
            "SIGINT": _Run(f"{uid}i", tmp / "i.jsonl", *board, "--report", str(tmp / "i.html")),
            "SIGTERM": _Run(f"{uid}t", tmp / "t.jsonl", *board, "--report", str(tmp / "t.html")),
            "crash": _Run(
                f"{uid}c",
                tmp / "c.jsonl",
                *board,
                "--model",
                str(model),
                "--duration",
                "6",
                "--status-every",
                "0",
            ),
        }
    )
    runs.model = model
    yield runs
    runs.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_board_run_ends_cleanly_on_signal(board_runs, sig):
    """SIGINT (Ctrl-C) or SIGTERM (a service manager) at a random moment after the first
    predictions: the run stops, prints its summary, keeps its file and report, exits 0."""
    run = board_runs[sig.name]
    _assert_clean_stop(run, _signal_at_random(run, sig))
    html = run.out.with_suffix(".html").read_text(encoding="utf-8")
    assert "<img" in html and "latency" in html


def test_model_crash_ends_with_status_1_and_one_line(board_runs):
    """A model that returns NaN on every window: acquisition goes on, nothing is scored (no NaN
    prediction reaches the file), one error line names the model and what to do; status 1."""
    run = board_runs["crash"]
    child = run.child
    rc = child.wait(START_S + 30)
    assert rc == 1, (child.out, child.err)
    assert not any("Traceback" in line for line in child.err), child.err
    final = [line for line in child.err if line.startswith("bci-affect run: error:")]
    assert len(final) == 1, child.err
    assert "model error" in final[0] and str(board_runs.model) in final[0]
    assert "NaN or infinite probabilities" in final[0] and "--model" in final[0]
    counts = summary_counts(child.out)
    assert counts["scored"] == 0 and counts["windows"] >= 1
    assert any("failed (model error)" in line for line in child.out)
    assert any("the model failed on every window" in line for line in child.out)
    assert run.out.is_file() and run.out.read_text() == ""


# --------------------------------------------------------------------------------------------
# on an EEG stream on LSL


class _PredictionsInlet:
    """Reads an ``AffectPredictions`` stream in a thread (the way a dashboard would)."""

    def __init__(self, source_id: str) -> None:
        self.source = LslSource(f"source_id={source_id}", timeout_s=30)
        self.chunks: list = []
        self.info = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._opened = threading.Event()
        self._thread.start()
        assert self._opened.wait(60), "the predictions stream did not appear"

    def _run(self) -> None:
        with self.source as src:
            (self.info,) = [s for s in src.streams if s.type == PREDICTIONS_TYPE]
            self._opened.set()
            for chunk in src:
                if chunk.info.type == PREDICTIONS_TYPE:
                    self.chunks.append(chunk)

    def n(self) -> int:
        return sum(c.n_times for c in list(self.chunks))

    def close(self) -> None:
        self.source.stop()
        self._thread.join(30)


@pytest.fixture(scope="module")
def lsl_runs(tmp_path_factory):
    """An EEG publisher (its own process) and three ``run --lsl`` reading it: two to stop with
    SIGINT and SIGTERM, one that gives a lost stream 1 s (``--lost-timeout 1``)."""
    tmp = tmp_path_factory.mktemp("lsl")
    uid = uuid.uuid4().hex[:10]
    publisher, _ = start_publisher(f"EEG-{uid}", f"faults-{uid}")
    lsl = ("--lsl", f"source_id=faults-{uid}")
    runs = _Runs(
        {
            "SIGINT": _Run(f"{uid}i", tmp / "i.jsonl", *lsl, "--status-every", "1"),
            "SIGTERM": _Run(f"{uid}t", tmp / "t.jsonl", *lsl, "--status-every", "0"),
            "gone": _Run(
                f"{uid}g", tmp / "g.jsonl", *lsl, "--status-every", "0", "--lost-timeout", "1"
            ),
        }
    )
    runs.publisher, runs.stream = publisher, f"EEG-{uid}"
    yield runs
    runs.stop()


def test_lsl_run_prints_writes_and_publishes_the_same_predictions(lsl_runs):
    """``run --lsl`` on an EEG stream published by another process: it names the stream, the
    model and the channels it uses, prints status lines, and every prediction it publishes on
    LSL is the one it writes to its file."""
    run = lsl_runs["SIGINT"]
    child = run.child
    scoring = child.wait_line(r"^scoring 'EEG-\w+' with (.+) on cpu", START_S)
    assert "bundled" in scoring.group(1)
    child.wait_line(r"^EEG montage: 8 of 8 channels used", 5)
    inlet = _PredictionsInlet(f"bci-affect:predictions:{run.session}")
    try:
        wait_until(lambda: inlet.n() >= 3, START_S, "3 predictions on LSL")
        child.wait_line(r"\] \d+ predictions; last: (LVLA|LVHA|HVLA|HVHA) p=", 10)
    finally:
        inlet.close()
    data = np.concatenate([c.data for c in inlet.chunks], axis=1)
    col = {name: i for i, name in enumerate(inlet.info.ch_names)}
    t_sent = set(data[col["t_window_end"]])

    def written() -> dict | None:  # a window's file line follows its LSL sample
        by_t = {r["t_window_end"]: r for r in read_records(run.out)}
        return by_t if t_sent <= set(by_t) else None

    by_t = wait_until(written, 10, "the published windows in the file")
    for j in range(data.shape[1]):
        r = by_t[data[col["t_window_end"], j]]
        assert data[col["window_index"], j] == r["index"]
        for c in r["classes"]:
            assert data[col[f"p_{c}"], j] == r["probs"][c]
        assert r["modalities"]["eeg_used"] and r["quality"]["complete"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_lsl_run_ends_cleanly_on_signal(lsl_runs, sig):
    """SIGINT or SIGTERM to ``run --lsl`` at a random moment: summary, file kept, status 0."""
    run = lsl_runs[sig.name]
    records = _assert_clean_stop(run, _signal_at_random(run, sig))
    assert all(r["modalities"]["eeg_used"] and r["quality"]["complete"] for r in records)


def test_lsl_stream_gone_for_good_ends_the_run_with_one_line(lsl_runs):
    """The publisher is killed and never comes back: once ``--lost-timeout`` is over, the run
    ends with one error line naming the stream and what to do (no traceback), exit status 2,
    its summary printed and every prediction so far in the file."""
    run, name = lsl_runs["gone"], lsl_runs.stream
    child = run.child
    wait_until(lambda: len(read_records(run.out)) >= 1, START_S, "a prediction")
    lsl_runs.publisher.proc.kill()
    rc = child.wait(60)
    assert rc == 2, (child.out, child.err)
    assert not any("Traceback" in line for line in child.out + child.err), child.err
    final = [line for line in child.err if line.startswith("bci-affect run: error:")]
    assert len(final) == 1, child.err
    assert name in final[0] and "has been gone for 1 s" in final[0]
    assert "restart the program or device that publishes it" in final[0]
    assert "--lost-timeout" in final[0]
    assert any(f"stream '{name}' lost" in line for line in child.out)
    records = read_jsonl(run.out)
    assert run.out.read_text().endswith("\n")
    assert len(records) == summary_counts(child.out)["scored"] >= 1


# --------------------------------------------------------------------------------------------
# replay --realtime


def test_realtime_replay_with_the_bundled_model_equals_in_process_replay(tmp_path, uid):
    """``replay --realtime --model default`` (published on LSL at 10x, read back by inlets,
    scored live) gives the windows and the numbers of the in-process replay, to the
    documented LSL clock-correction jitter."""
    live_out, ref_out = tmp_path / "live.jsonl", tmp_path / "ref.jsonl"
    live = Child(
        bci_affect(
            "replay", str(SAMPLE), "--model", "default", "--realtime", "--speed", "10",
            "--source-id-prefix", f"faults-{uid}", "--session", uid,
            "--predictions-name", f"AffectPredictions-{uid}", "--out", str(live_out),
        )
    )  # fmt: skip
    ref = Child(bci_affect("replay", str(SAMPLE), "--model", "default", "--out", str(ref_out)))
    try:
        assert ref.wait(120) == 0, ref.err
        assert live.wait(120) == 0, live.err
    finally:
        live.stop()
        ref.stop()
    live.wait_line(r"^done: pushed \d+ samples; (\d+) windows, \1 scored, 0 skipped", 1)
    a, b = read_jsonl(ref_out), read_jsonl(live_out)
    assert len(a) == len(b) > 100
    assert [r["index"] for r in a] == [r["index"] for r in b]
    shift = np.array([y["t_window_end"] - x["t_window_end"] for x, y in zip(a, b, strict=True)])
    np.testing.assert_allclose(shift, shift[0], rtol=0, atol=1e-3)
    # A face frame stamped on a window edge may fall on either side once the inlet's clock
    # correction is added: such windows may differ by that one frame, the others must agree.
    exact = 0
    for x, y in zip(a, b, strict=True):
        dframes = abs(x["quality"]["face_frames"] - y["quality"]["face_frames"])
        assert dframes <= 1, (x["index"], dframes)
        if dframes == 0:
            exact += 1
            for c in x["classes"]:
                assert abs(x["probs"][c] - y["probs"][c]) < 1e-4, (x["index"], c)
            assert x["predicted"] == y["predicted"]
    assert exact >= len(a) // 2
