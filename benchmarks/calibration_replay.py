"""The calibration loop, measured: labelled sessions replayed through ``bci-affect calibrate``.

For each subject of a folder of labelled sessions (``bci-affect simulate`` writes one), the
session's XDF drives a real calibration session (``bci-affect calibrate --replay FILE --speed X
--budget 20 --personalise-every 5 --port 0``, a subprocess with its own ``--data-dir`` in a
temporary folder) and a scripted participant answers every query on the web page's interface:
it listens to ``GET /events`` (server-sent events; the open query comes in a ``state`` or
``query`` event), looks the query's span up in the session's label store (``calibration.sqlite``;
spans are in the recording's time base), reports it on screen (``POST /shown``, as the page
does) and answers (``POST /answer``) with the subject's own rating: the ``rating`` marker
(valence, arousal 1-9) of the recording's trial that overlaps the queried span most (trials
from the XDF's ``Markers`` stream, :func:`bci_affect.training.markers.parse_trials`). A span that
overlaps no rated trial is answered ``{"skip": true}``, as the page's Skip button posts.

After each session, from its outputs (the label store, ``predictions-*.jsonl`` and the model
versions under ``subjects/S/models/``):

prequential
    accuracy on each answer of the model version that scored it when it was asked, i.e. before
    the update that used it (fused, teacher and student heads), overall and per model
    version, beside chance (1/K) and the majority class of the answers so far;
never asked
    the windows that lie wholly inside a rated trial of the recording and overlap no queried
    span: accuracy, ECE (15 equal-width confidence bins), mean ``uncertainty`` and the AUROC
    of ``uncertainty`` for telling wrong decisions from right ones, for v0 (the starting model)
    and the final version, both scored by ``bci-affect replay FILE --model <version folder>
    --out F.jsonl`` (in process, deterministic) on the same windows; and the final version's
    teacher-only accuracy (``probs_teacher``);
versions
    where v0 came from (the bundled model, or the untrained face prior when it does not fit),
    which versions were registered (adopted: the engine switched to them) with their label
    counts and the out-of-sample estimate that admitted them, how many windows each scored
    live, why a candidate was rejected where the session records it (``model_rejected``
    markers in the session's XDF, ``adopted: false`` in the registry; ``"n/a"`` when nothing
    records rejections), and personalisation rounds that failed (the session's log);
engine
    predictions scored live and the windows the engine skipped to keep up (the sum of
    ``n_skipped``), and the session's WARNING lines (e.g. a starting model that did not fit).

A table (one row per subject, then mean ± SE over the subjects that completed) goes to stdout,
one progress line per subject (with elapsed time) to stderr, everything to ``--out`` as JSON.

Run (from the repository root)::

    bci-affect simulate --subjects 2 --seed 7 --out /tmp/sim_default
    .venv/bin/python benchmarks/calibration_replay.py --dataset /tmp/sim_default --subjects 2 \\
        --speed 8 --out /tmp/calibration_replay.json

Options: ``--model M`` (the starting model, default ``default``), ``--budget N`` (20),
``--personalise-every K`` (5), ``--keep`` (keep the per-subject folders and print where).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Signal options passed to calibrate and replay (e.g. the mains frequency).
SIGNAL_ARGS: list[str] = []
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROG = "calibration_replay"
#: Seconds to wait for the calibration session to print its page's address.
START_TIMEOUT_S = 300.0
#: Seconds without any byte on the event stream (the server sends a keep-alive every 15 s).
SSE_READ_TIMEOUT_S = 60.0
#: Seconds a stopped subprocess gets to finish after SIGINT (it writes its report), then after
#: SIGTERM.
STOP_WAIT_S = (60.0, 15.0)
ECE_BINS = 15

_URL_RE = re.compile(r"open (http://\S+) in a browser")
_SESSION_RE = re.compile(r"calibration session (\S+) \(#(\d+)\)")
_ROUND_FAILED_RE = re.compile(r"personalisation round failed[^:]*: (.*)$")


class ReplayError(Exception):
    """A session could not be run or measured; the message is one line."""


# --------------------------------------------------------------------------------------------
# Metric maths (small, pure functions)
# --------------------------------------------------------------------------------------------


def accuracy(correct: Sequence[bool | None]) -> dict[str, Any]:
    """Accuracy over the scored entries.

    Parameters
    ----------
    correct : sequence of bool or None
        One entry per item; ``None`` entries (no prediction) are not scored.

    Returns
    -------
    dict
        ``n`` (scored), ``correct`` and ``accuracy`` (``None`` when nothing was scored).
    """
    scored = [bool(c) for c in correct if c is not None]
    n, k = len(scored), sum(scored)
    return {"n": n, "correct": k, "accuracy": k / n if n else None}


def prequential_accuracy(
    labels: Sequence[int],
    predicted: Sequence[int | None],
    versions: Sequence[int],
) -> dict[str, Any]:
    """Accuracy of each answer's prediction made before any update used the answer.

    Parameters
    ----------
    labels : sequence of int, length n_answers
        The class of each answer, in the order they were given.
    predicted : sequence of int or None, length n_answers
        The class the live model predicted for the answer's span when it was asked (``None``:
        no prediction).
    versions : sequence of int, length n_answers
        The model version that made each prediction.

    Returns
    -------
    dict
        ``overall`` and ``by_version`` (``{"v<N>": ...}``), each as :func:`accuracy` returns.
    """
    correct = [None if p is None else p == y for p, y in zip(predicted, labels, strict=True)]
    by_version = {}
    for v in sorted(set(versions)):
        by_version[f"v{v}"] = accuracy(
            [c for c, w in zip(correct, versions, strict=True) if w == v]
        )
    return {"overall": accuracy(correct), "by_version": by_version}


def majority_so_far_accuracy(labels: Sequence[int], n_classes: int) -> dict[str, Any]:
    """Accuracy of predicting, for each answer, the most frequent class among the earlier
    answers (ties: the lowest index; the first answer is not scored).

    Parameters
    ----------
    labels : sequence of int
        Answer classes in order.
    n_classes : int

    Returns
    -------
    dict
        As :func:`accuracy` returns.
    """
    from calibration.report import majority_so_far  # noqa: PLC0415

    maj = majority_so_far(list(labels), n_classes)
    return accuracy([None if m is None else m == y for m, y in zip(maj, labels, strict=True)])


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> float | None:
    """Expected calibration error with equal-width confidence bins.

    Parameters
    ----------
    confidence : ndarray, shape (n_windows,)
        The probability of the predicted class, in [0, 1].
    correct : ndarray of bool, shape (n_windows,)
        Whether each prediction was right.
    n_bins : int
        Bins ``[0, 1/n_bins], (1/n_bins, 2/n_bins], ...``.

    Returns
    -------
    float or None
        ``sum_b n_b / n * |accuracy_b - mean confidence_b|``; ``None`` without windows.
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    if confidence.size == 0:
        return None
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for telling positives from negatives.

    scikit-learn's ``roc_auc_score`` when it is installed, else the rank (Mann-Whitney)
    formula with average ranks for ties, which gives the same value.

    Parameters
    ----------
    scores : ndarray, shape (n,)
        Higher should mean "more likely positive" (here: the uncertainty).
    positive : ndarray of bool, shape (n,)
        The positives (here: wrong decisions).

    Returns
    -------
    float or None
        ``None`` when either class is empty.
    """
    scores = np.asarray(scores, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    try:
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415
    except ImportError:
        from scipy.stats import rankdata  # noqa: PLC0415

        ranks = rankdata(scores)
        return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(roc_auc_score(positive, scores))


def mean_se(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and standard error (sample SD / sqrt(n)) of the finite values.

    Returns
    -------
    dict
        ``n``, ``mean`` (``None`` without values) and ``se`` (``None`` below two values).
    """
    x = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not x:
        return {"n": 0, "mean": None, "se": None}
    se = statistics.stdev(x) / math.sqrt(len(x)) if len(x) > 1 else None
    return {"n": len(x), "mean": statistics.fmean(x), "se": se}


def overlap_s(a0: float, a1: float, b0: float, b1: float) -> float:
    """Length of the overlap of ``[a0, a1]`` and ``[b0, b1]`` (0 when disjoint)."""
    return max(0.0, min(a1, b1) - max(a0, b0))


# --------------------------------------------------------------------------------------------
# The recording: trials and the answers they give
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """A labelled session: its file, its rated trials and its time range (recording seconds)."""

    path: Path
    subject: str
    trials: list  # of bci_affect.training.markers.TrialSpan with both ratings
    t_first: float
    t_last: float


def load_recording(path: Path, subject: str) -> Recording:
    """Read the trials of ``path`` (its ``Markers`` stream) and its time range.

    Raises
    ------
    ReplayError
        The file cannot be read or has no rated trial.
    """
    from acquisition.xdf import RecordingWarning, XdfSource  # noqa: PLC0415
    from bci_affect.core.errors import BciAffectError  # noqa: PLC0415
    from bci_affect.training.markers import parse_trials, pick_session_streams  # noqa: PLC0415

    try:
        with warnings.catch_warnings():
            # NaN face frames and the like: the calibrate subprocess reports them itself
            warnings.simplefilter("ignore", RecordingWarning)
            with XdfSource(path) as source:
                chunks = {c.name: c for c in source.load()}
                t_first, t_last = source.t_first, source.t_last
        _, _, markers = pick_session_streams(chunks, session=str(path))
    except (BciAffectError, OSError) as exc:
        raise ReplayError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    trials = [
        t
        for t in parse_trials(markers, session=str(path))
        if t.valence is not None and t.arousal is not None
    ]
    if not trials:
        raise ReplayError(f"{path}: no rated trial in its Markers stream")
    return Recording(path, subject, trials, float(t_first), float(t_last))


def choose_answer(trials: Sequence, t_start: float, t_end: float) -> dict[str, Any]:
    """The subject's answer about ``[t_start, t_end]``: the rating of the trial that overlaps
    it most, or a skip when no rated trial overlaps it.

    Returns
    -------
    dict
        ``trial`` (or ``None``), ``overlap_s`` and the ``/answer`` body fields: ``valence`` and
        ``arousal`` (ints 1-9) or ``skip: True``.
    """
    best, best_s = None, 0.0
    for tr in trials:
        ov = overlap_s(t_start, t_end, tr.start, tr.end)
        if ov > best_s:
            best, best_s = tr, ov
    if best is None:
        return {"trial": None, "overlap_s": 0.0, "skip": True}
    return {
        "trial": best.trial,
        "overlap_s": best_s,
        "valence": int(round(best.valence)),
        "arousal": int(round(best.arousal)),
    }


# --------------------------------------------------------------------------------------------
# Subprocesses
# --------------------------------------------------------------------------------------------


def cli_command() -> list[str]:
    """The ``bci-affect`` command of this interpreter's environment."""
    exe = Path(sys.executable).parent / "bci-affect"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bci_affect"]


def stop_process(proc: subprocess.Popen) -> int | None:
    """End ``proc`` cleanly: SIGINT (as Ctrl-C), wait; then SIGTERM, wait; then SIGKILL.

    Returns
    -------
    int or None
        The exit status.
    """
    if proc.poll() is not None:
        return proc.returncode
    for sig, wait_s in ((signal.SIGINT, STOP_WAIT_S[0]), (signal.SIGTERM, STOP_WAIT_S[1])):
        try:
            proc.send_signal(sig)
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return proc.wait()
    proc.kill()
    return proc.wait()


def run_cli(args: Sequence[str], *, timeout_s: float, log: Path) -> None:
    """Run ``bci-affect ARGS`` to the end, output to ``log``.

    Raises
    ------
    ReplayError
        It failed or ran past ``timeout_s`` (it is stopped with SIGINT then).
    """
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*cli_command(), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our Ctrl-C reaches it once, through stop_process
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ReplayError(f"bci-affect {args[0]} ran past {timeout_s:.0f} s") from None
        finally:
            stop_process(proc)
    if rc != 0:
        raise ReplayError(f"bci-affect {args[0]} exited with status {rc}: {_last_line(log)}")


def _last_line(log: Path) -> str:
    return why_failed(log.read_text(errors="replace").splitlines())


def why_failed(lines: Sequence[str]) -> str:
    """The last line of ``lines`` that mentions an error (else the last line)."""
    lines = [x for x in lines if x.strip()]
    errs = [x for x in lines if "error" in x.lower()]
    return (errs or lines or ["(no output)"])[-1].strip()


@dataclass
class Answerer:
    """The scripted participant: reads the page's event stream and answers each query.

    Parameters
    ----------
    url : str
        The page's address as printed by ``bci-affect calibrate``.
    store_path : Path
        The session's ``calibration.sqlite`` (query spans are read from it).
    trials : sequence of TrialSpan
        The recording's rated trials (recording seconds).
    """

    url: str
    store_path: Path
    trials: Sequence
    answers: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    _done: set = field(default_factory=set)

    def _endpoint(self, path: str) -> str:
        base, _, query = self.url.partition("?")
        return base.rstrip("/") + path + (f"?{query}" if query else "")

    def _post(self, path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(
            self._endpoint(path),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30.0) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}

    def _answer(self, store, query: Mapping[str, Any]) -> None:
        qid = int(query["query_id"])
        if qid in self._done:
            return
        self._done.add(qid)
        row = store.query(qid)  # committed before the page is told
        choice = choose_answer(self.trials, row.t_start, row.t_end)
        self._post("/shown", {"query_id": qid})
        body = {"query_id": qid}
        if choice.get("skip"):
            body["skip"] = True
        else:
            body.update(valence=choice["valence"], arousal=choice["arousal"])
        status, reply = self._post("/answer", body)
        self.answers.append(
            {
                "query": qid,
                "number": row.number,
                "t_start": row.t_start,
                "t_end": row.t_end,
                **choice,
                "http_status": status,
                **({"error": reply.get("error")} if status != 200 else {}),
            }
        )

    def run(self) -> None:
        """Follow the event stream until the session closes it (run in a thread)."""
        from calibration.store import LabelStore  # noqa: PLC0415

        try:
            with (
                LabelStore(self.store_path) as store,
                urllib.request.urlopen(
                    self._endpoint("/events"), timeout=SSE_READ_TIMEOUT_S
                ) as stream,
            ):
                event, data = None, []
                for raw in stream:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and event is not None:
                        payload = json.loads("\n".join(data)) if data else None
                        if event == "closed":
                            return
                        if event == "state" and payload and payload.get("query"):
                            self._answer(store, payload["query"])
                        elif event == "query" and payload:
                            self._answer(store, payload)
                        event, data = None, []
        except (OSError, ValueError) as exc:  # the server went away, or a bad event
            self.errors.append(f"event stream: {type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001  (reported, the session goes on unanswered)
            self.errors.append(f"answering: {type(exc).__name__}: {exc}")
        finally:
            self.closed.set()


def run_session(
    rec: Recording, work: Path, *, speed: float, budget: int, model: str, every: int
) -> dict[str, Any]:
    """Run one calibration session on ``rec`` and answer its queries.

    Returns
    -------
    dict
        ``data_dir``, ``session_id``, ``session_name``, ``returncode``, ``wall_s``,
        ``answers`` (what was answered), ``answerer_errors``, ``stdout_tail``, ``log``.

    Raises
    ------
    ReplayError
        The session did not start, or ran far past the recording's length.
    """
    data_dir = work / "data"
    log = work / "calibrate.log"
    args = [
        *cli_command(), "calibrate", "--subject", rec.subject, "--replay", str(rec.path),
        "--speed", f"{speed:g}", "--budget", str(budget), "--personalise-every", str(every),
        "--data-dir", str(data_dir), "--port", "0", "--model", model, *SIGNAL_ARGS,
    ]  # fmt: skip
    timeout_s = 3.0 * (rec.t_last - rec.t_first) / speed + START_TIMEOUT_S
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lines: queue.Queue = queue.Queue()
    stdout: list[str] = []
    stderr_tail: deque[str] = deque(maxlen=200)
    t0 = time.monotonic()
    with open(log, "w") as log_f:
        lock = threading.Lock()

        def pump(pipe, keep, tag: str) -> None:
            for line in pipe:
                keep.append(line.rstrip("\n"))
                with lock:
                    log_f.write(f"{tag}{line}")
                    log_f.flush()
                if tag == "":
                    lines.put(line)
            if tag == "":
                lines.put(None)

        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # our Ctrl-C reaches it once, through stop_process
        )
        readers = [
            threading.Thread(target=pump, args=(proc.stdout, stdout, ""), daemon=True),
            threading.Thread(
                target=pump, args=(proc.stderr, stderr_tail, "[stderr] "), daemon=True
            ),
        ]
        for r in readers:
            r.start()
        answerer = None
        session_id = session_name = None
        try:
            url = None
            deadline = time.monotonic() + START_TIMEOUT_S
            while url is None:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise ReplayError(
                        f"calibrate printed no page address within {START_TIMEOUT_S:.0f} s"
                    ) from None
                if line is None:
                    proc.wait()
                    err = [x for x in stderr_tail if x.strip()]
                    raise ReplayError(
                        f"calibrate exited with status {proc.returncode} before the session "
                        f"started: {err[-1].strip() if err else '(no output)'}"
                    )
                if m := _SESSION_RE.search(line):
                    session_name, session_id = m.group(1), int(m.group(2))
                if m := _URL_RE.search(line):
                    url = m.group(1)
            answerer = Answerer(url, data_dir / "calibration.sqlite", rec.trials)
            threading.Thread(target=answerer.run, name="answerer", daemon=True).start()
            try:
                rc = proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                raise ReplayError(
                    f"the session ran past {timeout_s:.0f} s (recording "
                    f"{rec.t_last - rec.t_first:.0f} s at speed {speed:g})"
                ) from None
        finally:
            rc = stop_process(proc)
            for r in readers:
                r.join(timeout=10.0)
            if answerer is not None:
                answerer.closed.wait(timeout=SSE_READ_TIMEOUT_S)
    return {
        "data_dir": str(data_dir),
        "session_id": session_id,
        "session_name": session_name,
        "returncode": rc,
        "wall_s": time.monotonic() - t0,
        "answers": answerer.answers if answerer else [],
        "answerer_errors": answerer.errors if answerer else [],
        "stdout_tail": stdout[-12:],
        "stderr_tail": [x for x in stderr_tail if x.strip()][-20:],
        "log": str(log),
    }


# --------------------------------------------------------------------------------------------
# Measuring a finished session
# --------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file (blank lines skipped)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_session_predictions(ses_dir: Path) -> list[dict]:
    """The live predictions of a calibration session, times moved to the recording's time
    base (``predictions-<part>.time.json`` holds the shift)."""
    out = []
    for f in sorted(ses_dir.glob("predictions-*.jsonl")):
        t = f.with_suffix(".time.json")
        off = json.loads(t.read_text())["lsl_minus_input_s"] if t.exists() else 0.0
        for r in read_jsonl(f):
            if r.get("t_window_end") is not None:
                r["t_window_end"] -= off
            out.append(r)
    return out


def _probs(record: Mapping[str, Any], key: str, classes: Sequence[str]) -> np.ndarray | None:
    p = record.get(key)
    if not isinstance(p, Mapping):
        return None
    v = np.array([np.nan if p.get(c) is None else float(p[c]) for c in classes])
    return v if np.isfinite(v).all() else None


def window_key(t_window_end: float) -> int:
    """A window's key: its end in recording milliseconds (the same window scored by two
    models, or live and offline, gets the same key, whatever its index)."""
    return int(round(1e3 * float(t_window_end)))


def never_asked_windows(
    records: Sequence[Mapping[str, Any]],
    trials: Sequence,
    spans: Sequence[tuple[float, float]],
    tol_s: float = 1e-3,
) -> dict[int, Any]:
    """The windows wholly inside a rated trial that overlap no queried span.

    Parameters
    ----------
    records : sequence of dict
        Prediction records (``index``, ``t_window_end``, ``window_s``), recording seconds.
    trials : sequence of TrialSpan
        Rated trials.
    spans : sequence of (float, float)
        Every queried span (answered, skipped or expired).

    Returns
    -------
    dict
        ``{window key: trial}`` (see :func:`window_key`).
    """
    out = {}
    for r in records:
        t1, w = r.get("t_window_end"), r.get("window_s")
        if t1 is None or w is None:
            continue
        t0 = t1 - w
        tr = next((x for x in trials if t0 + tol_s >= x.start and t1 - tol_s <= x.end), None)
        if tr is None or any(overlap_s(t0, t1, a, b) > 0 for a, b in spans):
            continue
        out[window_key(t1)] = tr
    return out


def score_windows(
    records: Sequence[Mapping[str, Any]],
    windows: Mapping[int, Any],
    scheme: str,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, ECE, mean uncertainty and AUROC(uncertainty; wrong) of ``records`` on
    ``windows``, plus the teacher's and the student's accuracy.

    Parameters
    ----------
    records : sequence of dict
        Prediction records (``probs``, ``probs_teacher``, ``probs_student`` as
        ``{class: p}``, ``uncertainty``).
    windows : mapping
        ``{window key: trial}`` (the label is the trial's rating under ``scheme``).
    scheme : str
        The label scheme (``quadrant``, ``valence``, ``arousal``).
    class_names : sequence of str
        Class names in label-index order.

    Returns
    -------
    dict
        ``n`` (windows scored), ``n_missing`` (windows without finite probabilities),
        ``accuracy``, ``ece``, ``mean_uncertainty``, ``auroc_uncertainty_wrong``,
        ``accuracy_teacher``, ``accuracy_student``.
    """
    from calibration.report import answer_label  # noqa: PLC0415

    by_key = {
        window_key(r["t_window_end"]): r for r in records if r.get("t_window_end") is not None
    }
    conf, right, unc = [], [], []
    heads: dict[str, list[bool | None]] = {"probs_teacher": [], "probs_student": []}
    missing = 0
    for key, tr in windows.items():
        r = by_key.get(key)
        p = None if r is None else _probs(r, "probs", class_names)
        if p is None:
            missing += 1
            continue
        y = answer_label(int(round(tr.valence)), int(round(tr.arousal)), scheme)
        k = int(np.argmax(p))
        conf.append(float(p[k]))
        right.append(k == y)
        u = r.get("uncertainty")
        unc.append(np.nan if u is None else float(u))
        for key, out in heads.items():
            q = _probs(r, key, class_names)
            out.append(None if q is None else int(np.argmax(q)) == y)
    right_a = np.array(right, dtype=bool)
    unc_a = np.array(unc, dtype=float)
    ok = np.isfinite(unc_a)
    return {
        "n": len(right),
        "n_missing": missing,
        "accuracy": accuracy(right)["accuracy"],
        "ece": expected_calibration_error(np.array(conf), right_a),
        "mean_uncertainty": float(unc_a[ok].mean()) if ok.any() else None,
        "auroc_uncertainty_wrong": auroc(unc_a[ok], ~right_a[ok]),
        "accuracy_teacher": accuracy(heads["probs_teacher"])["accuracy"],
        "accuracy_student": accuracy(heads["probs_student"])["accuracy"],
    }


def _records_by_model(records: Sequence[Mapping[str, Any]], t0: float) -> list[dict]:
    """Per model name in the live predictions: windows scored and the first one's end
    (seconds from the recording's start ``t0``)."""
    out: dict[str, dict] = {}
    for r in records:
        name = str(r.get("model"))
        if name not in out:
            out[name] = {"model": name, "n_windows": 0, "first_t_rel_s": r["t_window_end"] - t0}
        out[name]["n_windows"] += 1
    return list(out.values())


def find_rejections(versions: Sequence, marker_events: Sequence[dict]) -> list[dict] | str:
    """The candidates the session kept out, with the reasons it recorded.

    Parameters
    ----------
    versions : sequence of ModelVersionRow
        The registry (a version whose metrics say ``adopted: false`` was kept out).
    marker_events : sequence of dict
        The session's ``Markers`` events (``model_rejected`` and any other event naming a
        rejection).

    Returns
    -------
    list of dict or str
        One entry per rejection (``source`` and what it recorded: ``n_answers``, ``reason``,
        the out-of-sample estimate); an empty list when the session records its decisions
        (``adopted`` in the registry, or rejection markers) and rejected nothing; ``"n/a"``
        when nothing in the session records rejections.
    """
    found: list[dict] = []
    records_decisions = any("adopted" in v.metrics for v in versions)
    for v in versions:
        if v.metrics.get("adopted") is False:
            found.append({"source": "registry", "version": v.version, **v.metrics})
    for body in marker_events:
        if re.search(r"reject", str(body.get("event", "")), re.IGNORECASE):
            found.append({"source": "markers", **body})
    if not found and not records_decisions:
        return "n/a"
    return found


def failed_rounds(log_lines: Sequence[str]) -> dict[str, Any]:
    """Personalisation rounds that failed, from the session's log (``n``, ``first_error``)."""
    errors = [m.group(1) for x in log_lines if (m := _ROUND_FAILED_RE.search(x))]
    return {"n": len(errors), "first_error": errors[0] if errors else None}


def _session_markers(ses_dir: Path) -> list[dict]:
    """The calibration ``Markers`` events of the session's recordings."""
    from acquisition.xdf import RecordingWarning, XdfSource  # noqa: PLC0415
    from bci_affect.training.markers import marker_events  # noqa: PLC0415

    out = []
    for f in sorted(ses_dir.glob("calibration-*.xdf")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecordingWarning)
            with XdfSource(f, streams=["Markers"]) as src:
                for chunk in src.load():
                    out.extend(body for _, body in marker_events(chunk))
    return out


def measure_session(
    rec: Recording, run: Mapping[str, Any], work: Path, *, replay_timeout_s: float
) -> dict[str, Any]:
    """Every measure of one finished session (see the module docstring).

    Raises
    ------
    ReplayError
        The session left no row in its store, or a scoring replay failed.
    """
    from calibration.report import answer_label, predicted_class  # noqa: PLC0415
    from calibration.store import LabelStore  # noqa: PLC0415

    data_dir = Path(run["data_dir"])
    store_file = data_dir / "calibration.sqlite"
    if not store_file.exists():
        raise ReplayError(f"no label store in {data_dir}")
    with LabelStore(store_file) as store:
        sid = run["session_id"]
        row = store.session(sid) if sid is not None else store.latest_session(rec.subject)
        if row is None:
            raise ReplayError(f"no session of {rec.subject} in {store_file}")
        counts = store.counts(row.id)
        queries = store.queries(row.id)
        labelled = store.answered(row.id)
        versions = store.model_versions(rec.subject)
    scheme, classes = row.label_scheme, list(row.class_names)
    ses_dir = data_dir / "subjects" / rec.subject / "sessions" / row.name

    # -- prequential ----------------------------------------------------------------------
    labels = [answer_label(q.answer.valence, q.answer.arousal, scheme) for q in labelled]
    used = [q.query.model_version for q in labelled]
    preq = {
        head: prequential_accuracy(
            labels, [predicted_class(q.query.prediction, head, classes) for q in labelled], used
        )
        for head in ("fused", "teacher", "student")
    }
    preq["chance"] = 1.0 / len(classes)
    preq["majority_so_far"] = majority_so_far_accuracy(labels, len(classes))

    # -- versions -------------------------------------------------------------------------
    by_v = {v.version: v for v in versions}
    models_dir = data_dir / "subjects" / rec.subject / "models"
    written = {
        int(d.name[1:]) for d in models_dir.glob("v*") if d.is_dir() and d.name[1:].isdigit()
    }
    live = read_session_predictions(ses_dir)
    try:
        markers = _session_markers(ses_dir)
    except Exception as exc:  # noqa: BLE001  (only the rejection search needs them)
        markers = [{"event": "unreadable", "error": str(exc)}]
    log_lines = Path(run["log"]).read_text(errors="replace").splitlines()
    adopted = [
        {
            "version": v.version,
            "n_labels": v.n_labels,
            "parent": v.parent,
            "path": v.path,
            "estimate": v.metrics.get("estimate"),
        }
        for v in versions
        if v.version == 0 or v.session == row.id
    ]
    final = versions[-1]
    v0 = by_v.get(0)
    if v0 is None or not v0.path:
        raise ReplayError(f"no v0 model folder registered for {rec.subject}")

    # -- never-asked windows, v0 vs final ---------------------------------------------------
    spans = [(q.t_start, q.t_end) for q in queries]
    scored = {}
    for tag, version in (("v0", v0), ("final", final)):
        if tag == "final" and version.version == 0:
            scored["final"] = scored["v0"]
            continue
        out = work / f"replay-{tag}.jsonl"
        run_cli(
            [
                "replay",
                str(rec.path),
                "--model",
                str(version.path),
                "--out",
                str(out),
                *SIGNAL_ARGS,
            ],
            timeout_s=replay_timeout_s,
            log=work / f"replay-{tag}.log",
        )
        scored[tag] = read_jsonl(out)
    windows = never_asked_windows(scored["v0"], rec.trials, spans)
    never = {
        "n_windows": len(windows),
        "n_trials": len({tr.trial for tr in windows.values()}),
        "v0": score_windows(scored["v0"], windows, scheme, classes),
        "final": {
            "version": final.version,
            **score_windows(scored["final"], windows, scheme, classes),
        },
        "live": score_windows(live, never_asked_windows(live, rec.trials, spans), scheme, classes),
    }

    skipped = sum(int(r.get("n_skipped") or 0) for r in live)
    return {
        "session": {"id": row.id, "name": row.name, "status": row.status, "counts": counts},
        "label_scheme": scheme,
        "classes": classes,
        "prequential": preq,
        "never_asked": never,
        "versions": {
            "adopted": adopted,
            "final": final.version,
            "written": sorted(written),
            "v0_from": v0.metrics.get("from"),
            "scored_live": _records_by_model(live, rec.t_first),
            "rejections": find_rejections(versions, markers),
            "failed_rounds": failed_rounds(log_lines),
            # a rejected candidate's folder stays; it is not a version
            "unregistered_folders": sorted(written - set(by_v)),
        },
        "engine": {
            "n_predictions": len(live),
            "n_skipped": skipped,
            "skipped_fraction": skipped / (len(live) + skipped) if live else None,
            "warnings": [x for x in log_lines if "WARNING" in x][:10],
        },
    }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def find_sessions(dataset: Path, n: int | None) -> list[tuple[str, Path]]:
    """``(subject, first .xdf of the subject's folder)`` for the first ``n`` subjects.

    Raises
    ------
    ReplayError
        The folder is missing or holds no session.
    """
    if not dataset.is_dir():
        raise ReplayError(f"--dataset {dataset}: no such folder")
    out = []
    for sub in sorted(p for p in dataset.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.xdf"))
        if files:
            out.append((sub.name, files[0]))
    if not out:
        raise ReplayError(f"--dataset {dataset}: no <subject>/<session>.xdf files in it")
    return out if n is None else out[:n]


def _g(*keys: str):
    """A getter of ``d[keys[0]][keys[1]]...`` (``None`` where a key is missing)."""

    def get(d: Mapping[str, Any]) -> Any:
        for k in keys:
            if not isinstance(d, Mapping) or d.get(k) is None:
                return None
            d = d[k]
        return d

    return get


#: The two tables' columns: (header, number format, getter on a subject's result).
SESSION_COLUMNS: list[tuple[str, str, Any]] = [
    ("wall_s", "{:.0f}", _g("wall_s")),
    ("answered", "{:.0f}", _g("session", "counts", "answered")),
    ("skipped", "{:.0f}", _g("session", "counts", "skipped")),
    ("expired", "{:.0f}", _g("session", "counts", "expired")),
    ("final_v", "{:.0f}", _g("versions", "final")),
    ("preq_acc", "{:.3f}", _g("prequential", "fused", "overall", "accuracy")),
    ("preq_teacher", "{:.3f}", _g("prequential", "teacher", "overall", "accuracy")),
    ("preq_student", "{:.3f}", _g("prequential", "student", "overall", "accuracy")),
    ("majority", "{:.3f}", _g("prequential", "majority_so_far", "accuracy")),
    ("chance", "{:.3f}", _g("prequential", "chance")),
    ("skipped_win", "{:.0f}", _g("engine", "n_skipped")),
]
NEVER_COLUMNS: list[tuple[str, str, Any]] = [
    ("n_win", "{:.0f}", _g("never_asked", "n_windows")),
    ("acc_v0", "{:.3f}", _g("never_asked", "v0", "accuracy")),
    ("acc_fin", "{:.3f}", _g("never_asked", "final", "accuracy")),
    ("teach_fin", "{:.3f}", _g("never_asked", "final", "accuracy_teacher")),
    ("ece_v0", "{:.3f}", _g("never_asked", "v0", "ece")),
    ("ece_fin", "{:.3f}", _g("never_asked", "final", "ece")),
    ("unc_v0", "{:.3f}", _g("never_asked", "v0", "mean_uncertainty")),
    ("unc_fin", "{:.3f}", _g("never_asked", "final", "mean_uncertainty")),
    ("auroc_v0", "{:.3f}", _g("never_asked", "v0", "auroc_uncertainty_wrong")),
    ("auroc_fin", "{:.3f}", _g("never_asked", "final", "auroc_uncertainty_wrong")),
]
COLUMNS = SESSION_COLUMNS + NEVER_COLUMNS


def _fmt(fmt: str, v: Any) -> str:
    return "-" if v is None else fmt.format(v)


def _table(
    results: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    columns: Sequence[tuple[str, str, Any]],
) -> list[str]:
    head = ["subject", *[c[0] for c in columns]]
    rows = [
        [r["subject"], *[_fmt(f, get(r)) for _, f, get in columns]]
        for r in results
        if r["status"] == "ok"
    ]
    stat = ["mean±SE"]
    for name, fmt, _ in columns:
        m = summary[name]
        cell = "-" if m["mean"] is None else fmt.format(m["mean"])
        stat.append(cell + ("" if m["se"] is None else "±" + fmt.format(m["se"])))
    widths = [max(len(x[i]) for x in [head, stat, *rows]) for i in range(len(head))]
    return [
        "  ".join(x.rjust(w) for x, w in zip(row, widths, strict=True))
        for row in [head, *rows, stat]
    ]


def format_table(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """The session table and the never-asked table (one row per completed subject, then
    mean ± SE), each subject's prequential accuracy per model version with the versions
    adopted, and the failed subjects."""
    lines = ["calibration session (prequential: answers scored before the update using them)"]
    lines += _table(results, summary, SESSION_COLUMNS)
    lines += ["", "windows inside rated trials never asked about: v0 (start) vs final version"]
    lines += _table(results, summary, NEVER_COLUMNS)
    lines.append("")
    for r in results:
        if r["status"] != "ok":
            lines.append(f"{r['subject']}: FAILED: {r['error']}")
            continue
        bv = r["prequential"]["fused"]["by_version"]
        per = ", ".join(f"{v} {d['correct']}/{d['n']}" for v, d in bv.items())
        ad = ", ".join(
            f"v{a['version']} ({a['n_labels']} labels)" for a in r["versions"]["adopted"]
        )
        rej = r["versions"]["rejections"]
        lines.append(
            f"{r['subject']}: prequential by version: {per or '-'}; adopted: {ad}; "
            f"rejected: {rej if isinstance(rej, str) else len(rej)}; "
            f"v0: {r['versions']['v0_from']}"
        )
        fr = r["versions"]["failed_rounds"]
        if fr["n"]:
            lines.append(f"  personalisation rounds failed: {fr['n']}; first: {fr['first_error']}")
        for x in [] if isinstance(rej, str) else rej:
            lines.append(
                f"  rejected after {x.get('n_answers', '?')} answers: {x.get('reason', '?')}"
            )
    return "\n".join(lines)


def summarise(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± SE of every table column over the subjects that completed."""
    ok = [r for r in results if r["status"] == "ok"]
    return {name: mean_se(get(r) for r in ok) for name, _, get in COLUMNS}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Replay labelled sessions through `bci-affect calibrate`, answer every "
        "query with the subject's own rating, and measure the calibration loop.",
    )
    p.add_argument("--dataset", type=Path, required=True, help="folder of <subject>/*.xdf")
    p.add_argument("--subjects", type=int, metavar="N", help="the first N subjects (default all)")
    p.add_argument("--speed", type=float, default=8.0, metavar="X", help="replay speed (8)")
    p.add_argument("--model", default="default", metavar="M", help="starting model (default)")
    p.add_argument(
        "--line-freq",
        type=float,
        choices=[50.0, 60.0],
        help="mains frequency of the recordings (default: the model's)",
    )
    p.add_argument("--budget", type=int, default=20, metavar="N", help="queries (20)")
    p.add_argument(
        "--personalise-every", type=int, default=5, metavar="K", help="answers per round (5)"
    )
    p.add_argument("--out", type=Path, default=Path("calibration_replay.json"), help="JSON out")
    p.add_argument("--keep", action="store_true", help="keep each subject's working folder")
    args = p.parse_args(argv)
    if args.line_freq is not None:
        SIGNAL_ARGS[:] = ["--line-freq", f"{args.line_freq:g}"]
    if not args.speed > 0:
        p.error(f"--speed must be > 0, got {args.speed:g}")
    if args.subjects is not None and args.subjects < 1:
        p.error(f"--subjects must be >= 1, got {args.subjects}")
    try:
        sessions = find_sessions(args.dataset, args.subjects)
    except ReplayError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    results: list[dict[str, Any]] = []
    interrupted = False
    t_all = time.monotonic()
    for i, (subject, path) in enumerate(sessions, 1):
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"calib-replay-{subject}-"))
        res: dict[str, Any] = {"subject": subject, "file": str(path), "work": str(work)}
        try:
            rec = load_recording(path, subject)
            res["recording_s"] = rec.t_last - rec.t_first
            res["n_rated_trials"] = len(rec.trials)
            run = run_session(
                rec,
                work,
                speed=args.speed,
                budget=args.budget,
                model=args.model,
                every=args.personalise_every,
            )
            res.update(
                wall_s=run["wall_s"],
                returncode=run["returncode"],
                answers=run["answers"],
                answerer_errors=run["answerer_errors"],
                calibrate_stdout_tail=run["stdout_tail"],
            )
            measure_error = None
            try:  # measured even when the session failed: what it left is reported
                res.update(
                    measure_session(rec, run, work, replay_timeout_s=600.0 + res["recording_s"])
                )
            except ReplayError as exc:
                measure_error = str(exc)
            if run["returncode"] != 0:
                why = why_failed(run["stderr_tail"])
                raise ReplayError(f"calibrate exited with status {run['returncode']}: {why}")
            if run["answerer_errors"]:
                raise ReplayError(run["answerer_errors"][0])
            if measure_error is not None:
                raise ReplayError(measure_error)
            res["status"], res["error"] = "ok", None
        except ReplayError as exc:
            res["status"], res["error"] = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001  (one subject's bug; the others go on)
            res["status"], res["error"] = "failed", f"{type(exc).__name__}: {exc}"
        except KeyboardInterrupt:  # the session was stopped; write what we have
            res["status"], res["error"] = "failed", "interrupted (Ctrl-C)"
            interrupted = True
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        res["elapsed_s"] = time.monotonic() - t0
        results.append(res)
        c = res.get("session", {}).get("counts", {})
        what = (
            f"{c.get('answered', 0)} answered, {c.get('skipped', 0)} skipped, "
            f"final v{res['versions']['final']}, "
            f"{res['versions']['failed_rounds']['n']} personalisation rounds failed"
            if res["status"] == "ok"
            else f"FAILED: {res['error']}"
        )
        print(
            f"[{i}/{len(sessions)}] {subject}: {what} "
            f"(session {_fmt('{:.0f} s', res.get('wall_s'))}, all {res['elapsed_s']:.0f} s)"
            + (f" -> {work}" if args.keep else ""),
            file=sys.stderr,
            flush=True,
        )
        if interrupted:
            break

    summary = summarise(results)
    failures = [{"subject": r["subject"], "error": r["error"]} for r in results if r["error"]]
    doc = {
        "command": [sys.argv[0], *(sys.argv[1:] if argv is None else argv)],
        "dataset": str(args.dataset),
        "speed": args.speed,
        "budget": args.budget,
        "personalise_every": args.personalise_every,
        "model": args.model,
        "ece_bins": ECE_BINS,
        "elapsed_s": time.monotonic() - t_all,
        "subjects": results,
        "summary": summary,
        "failures": failures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(format_table(results, summary))
    for f in failures:
        print(f"{PROG}: {f['subject']} failed: {f['error']}", file=sys.stderr)
    print(f"results: {args.out}", file=sys.stderr)
    return 130 if interrupted else 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
