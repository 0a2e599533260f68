"""The calibration session's controller: predictions in, queries out, answers stored, the
model personalised and switched.

:class:`CalibrationController` is the glue between the streaming engine, the query policy,
the labelling UI, the label store and the personalisation worker. The engine calls
:meth:`~CalibrationController.on_windows` (the windows' inputs, kept for a short while so a
query can store the windows it labels) and :meth:`~CalibrationController.on_prediction`; the UI
calls :meth:`~CalibrationController.on_answer` and :meth:`~CalibrationController.on_shown`.
Those only queue events; :meth:`~CalibrationController.run` handles them one at a time in
the caller's thread, so the policy, the store and the UI are driven from one thread and the
engine's threads never wait for SQLite or the browser.

For each answer, in this order: the answer is committed to SQLite (in the UI's thread, before
the UI confirms it to the participant), the session markers are
published (``trial_start`` / ``rating`` / ``trial_end`` over the queried span, the schema
training reads, and a ``calibration_answer`` event), the query leaves the screen. Every
``personalise_every`` answers a personalisation round starts in the worker process; when it
ends, the new version is registered and the engine switched to it (atomically, between two
batches).

When the label store fails (:class:`~calibration.store.StorageError`: disk full, locked, I/O
error), answers can no longer be kept, so :meth:`~CalibrationController.run` raises it and the
session stops; what was committed before stays.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bci_affect.core.errors import ConfigError
from calibration.personalise import INPUT_KEYS, Personaliser, RoundSettings, save_unlabelled
from calibration.policy import QueryPolicy, Trigger
from calibration.store import StorageError
from calibration.ui import Answer, LabelUI, QueryView, SessionStatus

logger = logging.getLogger(__name__)

__all__ = ["Block", "CalibrationController", "ControllerSettings", "model_name"]

#: ``markers(body, timestamp)`` publishes one session marker (timestamp on the LSL clock, or
#: ``None`` for now).
MarkerSink = Callable[[dict, float | None], None]


def model_name(subject: str, version: int) -> str:
    """How predictions name a subject's model version."""
    return f"subject {subject} v{version}"


@dataclass(frozen=True)
class Block:
    """One block of the session's schedule: ``name`` ("rest", "free", "stimulus <file>"),
    from ``start_s`` for ``duration_s`` seconds of session time (``inf``: to the end)."""

    name: str
    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class ControllerSettings:
    """Settings of :class:`CalibrationController`.

    Parameters
    ----------
    personalise_every : int
        Answers between personalisation rounds (0: never personalise).
    round : RoundSettings
        Each round's training settings.
    keep_s : float
        Seconds of window inputs kept for queries (must exceed the query span).
    status_every_s, progress_every_s : float
        Seconds between status updates to the UI, and progress writes to the store.
    unlabelled_max, unlabelled_every : int
        The unlabelled windows a round distils the face teacher from: every
        ``unlabelled_every``-th window with a usable face (half the window covered) and
        complete EEG, the latest ``unlabelled_max`` of them.
    """

    personalise_every: int = 5
    round: RoundSettings = field(default_factory=RoundSettings)
    keep_s: float = 40.0
    status_every_s: float = 0.5
    progress_every_s: float = 2.0
    unlabelled_max: int = 200
    unlabelled_every: int = 2


class CalibrationController:
    """Drives one calibration session (see the module docstring).

    Parameters
    ----------
    store : calibration.store.LabelStore
    session_id : int
        The session's row in ``store``.
    subject, session_name : str
    engine_session : bci_affect.engine.Session
        The engine session scoring the participant (its model is switched after each round).
    policy : QueryPolicy
    ui : LabelUI
        Constructed with this controller's :meth:`on_answer` and :meth:`on_shown`.
    model_version : int
        The version scoring the session now; ``model_path`` its checkpoint folder.
    models_dir : Path
        Where new versions are written (``v<N>`` folders).
    personaliser : Personaliser, optional
        ``None``: no personalisation.
    markers : callable, optional
        Publishes session markers (see :data:`MarkerSink`).
    input_offset_s : callable, optional
        Seconds from the input's time base to the LSL clock (a replay's recording time +
        offset = published time; 0 for live input). The store keeps spans and progress in the
        input's time base, so that a resumed replay (another offset) finds them again.
    blocks : sequence of Block
        The session's schedule (markers at each block's start and end).
    duration_s : float, optional
        Planned length (shown as progress).
    """

    def __init__(
        self,
        *,
        store,
        session_id: int,
        subject: str,
        session_name: str,
        engine_session,
        policy: QueryPolicy,
        model_version: int,
        model_path: Path,
        models_dir: Path,
        personaliser: Personaliser | None = None,
        markers: MarkerSink | None = None,
        input_offset_s: Callable[[], float] | None = None,
        blocks: Sequence[Block] = (),
        duration_s: float | None = None,
        settings: ControllerSettings | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.subject = subject
        self.session_name = session_name
        self.engine_session = engine_session
        self.policy = policy
        self.model_version = model_version
        self.model_path = Path(model_path)
        self.models_dir = Path(models_dir)
        self.personaliser = personaliser
        self.markers = markers or (lambda body, t: None)
        self.input_offset_s = input_offset_s or (lambda: 0.0)
        self.blocks = list(blocks)
        self.duration_s = duration_s
        self.settings = settings or ControllerSettings()
        self.ui: LabelUI | None = None
        self.events: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.round_error: str | None = None
        self.trigger_latency_ms: list[float] = []  # policy trigger -> query on screen
        self.round_seconds: list[float] = []
        #: Candidates kept out by the out-of-sample check (their round metrics, with why).
        self.rejected: list[dict] = []
        self._windows: collections.deque = collections.deque()  # WindowResult, in order
        self._win_lock = threading.Lock()
        # model inputs of unlabelled windows with a face (teacher -> student distillation)
        self._unlabelled: collections.deque = collections.deque(maxlen=self.settings.unlabelled_max)
        self._preds: collections.deque = collections.deque()  # recent predictions
        self._open: tuple[int, Trigger, float, int] | None = None  # id, trigger, wall, number
        self._triggered_perf: dict[int, float] = {}
        self._last_pred = None
        self._last_t: float | None = None
        self._t0_wall = time.monotonic()
        self._block_index = -1
        self._round_pending = False
        counts = store.counts(session_id)
        self.answered = counts.get("answered", 0)
        self.skipped = counts.get("skipped", 0)
        self._answers_at_version = self._answers_used_by(model_version)

    # -- callbacks (any thread) ---------------------------------------------------------

    def on_windows(self, results) -> None:
        """Engine window sink: keep the recent windows (their inputs label a query), and a
        sample of the windows with a face for distillation."""
        keep = self.settings.keep_s
        every = self.settings.unlabelled_every
        usable = [
            r
            for r in results
            if r.window.index % every == 0 and r.window.complete and r.window.face_coverage >= 0.5
        ]
        with self._win_lock:
            self._windows.extend(results)
            t_last = self._windows[-1].window.t_end
            while self._windows and self._windows[0].window.t_end < t_last - keep:
                self._windows.popleft()
        if usable and self.personaliser is not None and self.settings.personalise_every > 0:
            self._unlabelled.extend(self._inputs(usable))

    def on_prediction(self, prediction) -> None:
        """Engine sink."""
        self.events.put(("prediction", prediction))

    def on_answer(self, answer: Answer) -> None:
        """UI callback: the participant answered or skipped. The answer is committed to the
        store before this returns (the UI confirms it only then); the rest is queued."""
        try:
            self.store.answer(answer)
        except StorageError as exc:  # not stored: the UI must not confirm it; the session stops
            self.events.put(("failed", exc))
            raise
        except ConfigError as exc:  # expired or closed meanwhile: nothing to record
            logger.info("answer to query %d not taken: %s", answer.query_id, exc)
            return
        self.events.put(("answer", answer))

    def on_shown(self, query_id: int, t_wall: float) -> None:
        """UI callback: the query is on screen."""
        self.events.put(("shown", query_id, t_wall, time.perf_counter()))

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Handle events until ``stop`` is set (then drain what is queued).

        Raises
        ------
        StorageError
            The label store failed: the session cannot go on.
        """
        next_status = next_progress = 0.0
        while True:
            try:
                item = self.events.get(timeout=0.05)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            now = time.monotonic()
            self._check_expiry()
            self._check_blocks()
            if now >= next_status:
                self._send_status()
                next_status = now + self.settings.status_every_s
            if now >= next_progress:
                self._save_progress()
                next_progress = now + self.settings.progress_every_s
            if stop.is_set() and self.events.empty():
                break
        self._save_progress()

    def finish(self, *, wait_for_round_s: float = 0.0) -> None:
        """End of session: wait up to ``wait_for_round_s`` for a running round, expire an
        unanswered query, publish the last block's end."""
        deadline = time.monotonic() + wait_for_round_s
        while self._round_pending and time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if item[0] == "round":
                self._handle(item)
        if self._open is not None:
            self._expire(reason="session ended")
        if 0 <= self._block_index < len(self.blocks):
            self.markers({"event": "block_end", "block": self.blocks[self._block_index].name}, None)
            self._block_index = len(self.blocks)
        self._send_status(phase="done")

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        try:
            if kind == "prediction":
                self._prediction(item[1])
            elif kind == "answer":
                self._answer(item[1])
            elif kind == "shown":
                self._shown(*item[1:])
            elif kind == "round":
                self._round_done(item[1])
            elif kind == "failed":
                raise item[1]
        except StorageError:
            raise  # answers can no longer be kept: the session stops
        except Exception as exc:  # noqa: BLE001  (the session goes on; the first is kept)
            logger.exception("calibration: handling %s failed", kind)
            if self.error is None:
                self.error = exc

    # -- predictions and queries ----------------------------------------------------------

    def _prediction(self, p) -> None:
        self._last_pred = p
        self._last_t = p.t_window_end
        preds = self._preds
        preds.append(p)
        while preds and preds[0].t_window_end < p.t_window_end - self.settings.keep_s:
            preds.popleft()
        trigger = self.policy.offer(p.t_window_end, self.policy.window_score(p))
        if trigger is not None:
            self._ask(trigger)

    def _ask(self, trigger: Trigger) -> None:
        t_perf = time.perf_counter()
        t_wall = time.time()
        in_span = [p for p in self._preds if trigger.t_start < p.t_window_end <= trigger.t_end]
        prediction = _span_prediction(in_span)
        off = self.input_offset_s()
        row = self.store.add_query(
            self.session_id,
            t_start=trigger.t_start - off,
            t_end=trigger.t_end - off,
            score=trigger.score,
            method=trigger.method,
            model_version=self.model_version,
            prediction=prediction,
            triggered_wall=t_wall,
        )
        self.policy.asked(trigger)
        self._open = (row.id, trigger, t_wall, row.number)
        if getattr(self.ui, "n_clients", 1) > 0:  # someone is looking: time the display
            self._triggered_perf[row.id] = t_perf
        span = self.policy.config.span_s
        if self.ui is not None:
            self.ui.show_query(
                QueryView(
                    query_id=row.id,
                    span_s=span,
                    prompt=f"How did you feel during the last {span:g} seconds?",
                    number=row.number,
                    budget=self.policy.config.budget,
                )
            )
        self.store.add_query_windows(row.id, self._span_windows(trigger))
        self.markers(
            {
                "event": "calibration_query",
                "query": row.id,
                "number": row.number,
                "t_start": trigger.t_start,
                "t_end": trigger.t_end,
                "score": trigger.score,
                "method": trigger.method,
                "model_version": self.model_version,
            },
            None,
        )

    def _inputs(self, results) -> list[dict]:
        """The model inputs of each window (as the live model reads them), one dict each."""
        from bci_affect.training.inputs import window_arrays  # noqa: PLC0415

        loaded = self.engine_session.model
        raw = loaded is not None and loaded.needs_raw
        sites = loaded is not None and loaded.model.config.montage_free
        out = []
        for r in results:
            arrays = window_arrays([r], eeg_raw=raw, sites=sites)
            out.append(
                {k: (None if arrays[k] is None else np.asarray(arrays[k][0])) for k in INPUT_KEYS}
            )
        return out

    def _span_windows(self, trigger: Trigger) -> list[tuple[int, float, dict]]:
        with self._win_lock:
            results = [
                r for r in self._windows if trigger.t_start < r.window.t_end <= trigger.t_end
            ]
        return [
            (int(r.window.index), float(r.window.t_end), one)
            for r, one in zip(results, self._inputs(results), strict=True)
        ]

    def _shown(self, query_id: int, t_wall: float, t_perf: float) -> None:
        self.store.mark_shown(query_id, t_wall)
        t0 = self._triggered_perf.pop(query_id, None)
        if t0 is not None:
            self.trigger_latency_ms.append(1e3 * (t_perf - t0))

    def _answer(self, answer: Answer) -> None:
        if self._open is None or self._open[0] != answer.query_id:
            logger.info("ignoring an answer to query %d, which is not open", answer.query_id)
            return
        qid, trigger, _, number = self._open
        self._open = None
        self.policy.closed(counted=True)
        if self.ui is not None:
            self.ui.clear_query(qid)
        if answer.skipped:
            self.skipped += 1
            self.markers({"event": "calibration_skip", "query": qid, "number": number}, None)
            return
        self.answered += 1
        self.markers(
            {"event": "trial_start", "trial": qid, "source": "calibration"}, trigger.t_start
        )
        self.markers(
            {
                "event": "rating",
                "trial": qid,
                "valence": answer.valence,
                "arousal": answer.arousal,
            },
            trigger.t_end,
        )
        self.markers({"event": "trial_end", "trial": qid}, trigger.t_end)
        self.markers(
            {
                "event": "calibration_answer",
                "query": qid,
                "number": number,
                "valence": answer.valence,
                "arousal": answer.arousal,
            },
            None,
        )
        self._maybe_personalise()

    def _check_expiry(self) -> None:
        if self._open is None:
            return
        if time.time() - self._open[2] >= self.policy.config.answer_timeout_s:
            self._expire(reason="no answer")

    def _expire(self, *, reason: str) -> None:
        assert self._open is not None
        qid, _, _, number = self._open
        self.store.expire(qid, time.time())
        self._open = None
        self.policy.closed(counted=False)
        if self.ui is not None:
            self.ui.clear_query(qid)
        self.markers(
            {"event": "calibration_expired", "query": qid, "number": number, "reason": reason},
            None,
        )

    # -- personalisation ------------------------------------------------------------------

    def _answers_used_by(self, version: int) -> int:
        row = next(
            (m for m in self.store.model_versions(self.subject) if m.version == version), None
        )
        return int((row.metrics or {}).get("n_answers", 0)) if row is not None else 0

    def _maybe_personalise(self) -> None:
        k = self.settings.personalise_every
        if self.personaliser is None or k <= 0 or self._round_pending:
            return
        n_subject = len(self.store.answered(subject=self.subject))
        if n_subject - self._answers_at_version < k:
            return
        latest = self.store.latest_model(self.subject)
        version = (latest.version if latest is not None else self.model_version) + 1
        out = self.models_dir / f"v{version}"
        unlabelled = save_unlabelled(
            list(self._unlabelled), self.models_dir / f".unlabelled-v{version}.npz"
        )
        future = self.personaliser.submit(
            self.model_path,
            out,
            self.store.path,
            self.subject,
            self.settings.round,
            unlabelled=unlabelled,
        )
        self._round_pending = True
        self._round_started = time.perf_counter()
        future.add_done_callback(lambda f: self.events.put(("round", f)))
        logger.info("personalisation round started on %d answers", n_subject)

    def _round_done(self, future) -> None:
        from bci_affect.models.checkpoint import load_checkpoint  # noqa: PLC0415

        self._round_pending = False
        for f in self.models_dir.glob(".unlabelled-v*.npz"):  # the round's input, read by now
            f.unlink(missing_ok=True)
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001
            self.round_error = f"{type(exc).__name__}: {exc}"
            logger.warning("personalisation round failed (the model is unchanged): %s", exc)
            return
        self.round_seconds.append(time.perf_counter() - self._round_started)
        if not result.adopted:  # the current version stays: never a worse model
            self.rejected.append(result.metrics())
            self._answers_at_version = result.n_answers
            self.markers(
                {
                    "event": "model_rejected",
                    "n_answers": result.n_answers,
                    "reason": result.reason,
                    **result.estimate,
                },
                None,
            )
            logger.info("candidate after %d answers kept out: %s", result.n_answers, result.reason)
            self._maybe_personalise()
            return
        metrics = {**result.metrics(), "n_answers": result.n_answers}
        version = self.store.register_model(
            self.subject,
            path=result.path,
            parent=self.model_version,
            n_labels=result.n_answers,
            session=self.session_id,
            metrics=metrics,
        )
        model = load_checkpoint(result.path)
        self.engine_session.use_model(model, model_name(self.subject, version))
        self.model_version = version
        self.model_path = Path(result.path)
        self._answers_at_version = result.n_answers
        self.markers(
            {"event": "model_version", "version": version, "n_answers": result.n_answers}, None
        )
        logger.info(
            "model v%d: %d labelled windows from %d answers, %.1f s",
            version,
            result.n_windows,
            result.n_answers,
            result.seconds,
        )
        self._maybe_personalise()  # answers arrived while training

    # -- status ---------------------------------------------------------------------------

    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0_wall

    def _check_blocks(self) -> None:
        t = self.elapsed_s()
        i = self._block_index
        while i + 1 < len(self.blocks) and t >= self.blocks[i + 1].start_s:
            if i >= 0:
                self.markers({"event": "block_end", "block": self.blocks[i].name}, None)
            i += 1
            self.markers({"event": "block_start", "block": self.blocks[i].name}, None)
        self._block_index = i

    def phase(self) -> str:
        i = self._block_index
        return self.blocks[i].name if 0 <= i < len(self.blocks) else "free"

    def _send_status(self, *, phase: str | None = None) -> None:
        if self.ui is None:
            return
        p = self._last_pred
        q = p.quality if p is not None else {}
        quality = q.get("eeg_quality") if p is not None else None
        msg = ""
        if self.round_error:
            msg = f"personalisation failed: {self.round_error}"
        elif self.policy.remaining == 0 and self._open is None:
            msg = "All questions answered - thank you."
        self.ui.update_status(
            SessionStatus(
                subject=self.subject,
                session=self.session_name,
                phase=phase or self.phase(),
                elapsed_s=round(self.elapsed_s(), 1),
                duration_s=self.duration_s,
                answered=self.answered,
                skipped=self.skipped,
                budget=self.policy.config.budget,
                model_version=self.model_version,
                personalising=self._round_pending,
                eeg_quality=_finite_or_none(quality),
                face_present=None if p is None else bool(p.face_available),
                bad_channels=[str(c) for c in q.get("bad_channels", ())],
                blink=None if p is None else _bool_or_none(q.get("blink")),
                muscle=None if p is None else _bool_or_none(q.get("muscle")),
                predicted=None if p is None else p.predicted_class,
                uncertainty=None if p is None else _finite_or_none(p.uncertainty),
                message=msg,
            )
        )

    def _save_progress(self) -> None:
        if self._last_t is not None:
            self.store.set_progress(self.session_id, float(self._last_t - self.input_offset_s()))


def _finite_or_none(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _bool_or_none(x) -> bool | None:
    return None if x is None else bool(x)


def _span_prediction(preds: list) -> dict:
    """The live model's opinion of a span: mean probabilities and each window's fused ones."""
    if not preds:
        return {"n_windows": 0}

    def mean(name: str) -> list[float]:
        m = np.nanmean(np.stack([np.asarray(getattr(p, name), float) for p in preds]), axis=0)
        return [float(x) if math.isfinite(x) else None for x in m]

    fused = mean("probs")
    return {
        "classes": list(preds[0].classes),
        "model": preds[-1].model,
        "n_windows": len(preds),
        "fused": fused,
        "teacher": mean("probs_teacher"),
        "student": mean("probs_student"),
        "uncertainty": float(np.nanmean([p.uncertainty for p in preds])),
        "disagreement": float(np.nanmean([p.disagreement for p in preds])),
        "window_probs": {
            str(p.index): [float(x) for x in np.asarray(p.probs, float)]
            for p in preds
            if np.isfinite(p.probs).all()
        },
    }
