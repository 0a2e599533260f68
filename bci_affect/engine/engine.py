"""The streaming inference engine: chunks in, one :class:`Prediction` per window out.

One engine serves live sessions and replays alike::

    engine = Engine(model, config=EngineConfig(realtime=True), sinks=[jsonl_writer])
    session = engine.add_session("S01", streams=source.streams)   # checks the model fits
    feeder = engine.feed(source, session)      # a thread: for chunk in source: push(chunk)
    ...
    engine.close()                             # flush the last windows, score, stop

Each session owns a :class:`~bci_affect.processors.SignalPipeline` (preprocess, aligned EEG +
FaceFeatures windows, quality, features). Windows go to the model, which scores them in
batches (several sessions with the same montage share a batch, one model and one device) and
hands every :class:`Prediction` to the sinks (callables: an LSL outlet, a JSON-lines writer).

``realtime=True`` (live sessions, real-time replays)
    ``Session.push`` only queues the chunk and returns: acquisition never waits for the
    signals chain or the model. Each session has a signals thread, the engine one inference
    worker thread; both sleep on condition variables (no busy waiting). Windows wait for the
    model in a per-session queue of ``max_pending`` windows: when inference falls behind, the
    oldest waiting window is dropped (counted in ``n_skipped`` and in the next prediction), so
    the newest window is always scored and nothing grows without bound. The input queue is
    bounded too (``max_input_chunks``; the oldest chunk goes, with a warning).

``realtime=False`` (replays as fast as possible)
    Everything runs in the caller's thread, in order: ``push`` filters and windows the chunk
    and scores a batch whenever ``max_batch`` windows wait. Nothing is skipped and batches are
    the same on every run, so a replay is deterministic.

Crash isolation: an exception in the signals chain, the model or a sink is caught, logged
(one line the first time for each stage and session; the traceback at DEBUG level), counted
in the stats and passed to ``on_error``; ``push`` never raises and the sources keep being read.
A session whose model cannot be loaded keeps consuming its input and reports every window as
failed. A model that returns NaN or infinite probabilities fails those windows the same way.

Bad input: the signals chain leaves out EEG samples holding NaN or inf (any channel), with one
warning when such a run of samples starts and one when it ends, as it does offline (see
:class:`~bci_affect.processors.signals.FiniteSamples`); the pause they leave makes the windows
over them incomplete, exactly like a gap in the timestamps (a lost stream).
A window of the signals chain whose EEG is incomplete and that has no face to score instead is
not scored (counted in ``n_incomplete``): no prediction rests on EEG that was not there.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.clock import local_clock
from bci_affect.core.errors import BciAffectError, ConfigError
from bci_affect.core.source import Source
from bci_affect.engine.inference import ScoredWindows, infer, make_predictions
from bci_affect.engine.models import (
    LoadedModel,
    ModelProvider,
    StreamSignature,
    signature_from_streams,
)
from bci_affect.engine.prediction import Prediction
from bci_affect.models.checkpoint import check_compatible
from bci_affect.models.transfer import AffectModel
from bci_affect.processors.signals import SignalPipeline, SignalsConfig, WindowResult

logger = logging.getLogger(__name__)

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineError",
    "Feeder",
    "ModelOutputError",
    "Session",
    "SessionStats",
    "Sink",
]

#: A sink receives every prediction (from the inference worker thread when realtime).
Sink = Callable[[Prediction], None]

#: Pipeline stages errors are reported for.
STAGES = ("source", "signals", "model", "sink")


@dataclass(frozen=True)
class EngineConfig:
    """Settings of :class:`Engine`.

    Parameters
    ----------
    realtime : bool
        Live scheduling (threads, back-pressure) or in-order replay in the caller's thread;
        see the module docstring.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` or ``"auto"``: CUDA when available.
    max_batch : int
        Most windows in one forward pass.
    max_pending : int
        Realtime: windows of one session waiting for the model; beyond it the oldest is
        skipped.
    max_input_chunks : int
        Realtime: chunks of one session waiting for the signals chain; beyond it the oldest is
        dropped.
    """

    realtime: bool = True
    device: str | None = None
    max_batch: int = 64
    max_pending: int = 4
    max_input_chunks: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_pending", "max_input_chunks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")


@dataclass
class SessionStats:
    """Counters of one session (a snapshot; see :attr:`Session.stats`).

    Attributes
    ----------
    n_chunks, n_samples : int, dict
        Chunks pushed, and samples per stream name.
    n_windows : int
        Windows the signals chain produced.
    n_scored, n_skipped, n_failed : int
        Windows scored, skipped by back-pressure, and lost to model errors.
    n_incomplete : int
        Windows not scored because their EEG had a gap (or NaN/inf samples) and they had no
        face to score instead.
    n_nonfinite : int
        EEG samples left out because they held NaN or inf.
    n_input_dropped : int
        Chunks dropped because the signals chain fell behind (realtime only).
    n_errors : dict
        Errors per stage (``signals``, ``model``, ``sink``, ``source``).
    """

    n_chunks: int = 0
    n_samples: dict[str, int] = field(default_factory=dict)
    n_windows: int = 0
    n_scored: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    n_incomplete: int = 0
    n_nonfinite: int = 0
    n_input_dropped: int = 0
    n_errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineError:
    """One reported error (the first of its stage and session keeps its exception)."""

    stage: str
    session: str
    error: BaseException
    count: int

    def __str__(self) -> str:
        more = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.stage} error in session {self.session!r}{more}: {_describe(self.error)}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _Item:
    """A window waiting for the model."""

    __slots__ = ("n_skipped", "result", "session", "t_arrival", "t_ready")

    def __init__(self, session: Session, result: WindowResult, t_arrival: float, t_ready: float):
        self.session = session
        self.result = result
        self.t_arrival = t_arrival
        self.t_ready = t_ready
        self.n_skipped = 0


class Session:
    """One participant's streams inside an :class:`Engine`; see :meth:`Engine.add_session`."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        signals: SignalsConfig,
        eeg_stream: str | None,
        sinks: Sequence[Sink],
        window_sinks: Sequence[Callable[[Sequence[WindowResult]], None]] = (),
    ) -> None:
        self.engine = engine
        self.name = name
        self.signals = signals
        self.eeg_stream = eeg_stream
        self.sinks = list(sinks)
        self.window_sinks = list(window_sinks)
        # Live sessions wait for late face frames on the wall clock too (see Windower).
        clock = time.monotonic if engine.config.realtime else None
        self.pipeline = SignalPipeline(
            signals, eeg_stream=eeg_stream, clock=clock, label=f"session {name!r}"
        )
        self._stats = SessionStats()
        self._signature: StreamSignature | None = None
        self._loaded: LoadedModel | None = None
        self._model_error: BaseException | None = None
        # realtime input queue (signals thread) -- guarded by _cv
        self._cv = threading.Condition()
        self._input: collections.deque[tuple[Chunk, float]] = collections.deque()
        self._busy = False
        self._closing = False
        self._closed = False
        self._warned_input = False
        # windows waiting for the model -- guarded by engine._cv
        self.pending: collections.deque[_Item] = collections.deque()
        self._skipped_since = 0
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        if engine.config.realtime:
            self._thread = threading.Thread(
                target=self._signals_loop, name=f"bci-affect-signals-{name}", daemon=True
            )
            self._thread.start()

    # -- public -------------------------------------------------------------------------

    @property
    def stats(self) -> SessionStats:
        """A snapshot of the counters."""
        with self._cv, self.engine._cv:
            s = dataclasses.replace(self._stats)
            s.n_samples = dict(self._stats.n_samples)
            s.n_errors = dict(self._stats.n_errors)
            return s

    @property
    def model(self) -> LoadedModel | None:
        """The model scoring this session (known once the streams or a window are)."""
        return self._loaded

    @property
    def classes(self) -> tuple[str, ...] | None:
        return self._loaded.classes if self._loaded is not None else None

    def declare_streams(self, streams: Sequence[StreamInfo]) -> LoadedModel | None:
        """Tell the session its streams up front: the model is chosen (and checked) now.

        Raises
        ------
        ConfigError
            The model does not fit the streams (channels, rate, window length).
        """
        self.pipeline.declare(streams)  # a face stream is waited for from the first window
        sig = signature_from_streams(
            streams, self.signals.window.window_s, eeg_stream=self.eeg_stream
        )
        if sig is None:
            return None
        loaded = self.engine.provider.get(sig)
        self._signature, self._loaded = sig, loaded
        return loaded

    def montage_line(self) -> str | None:
        """One line saying which EEG channels a montage-free model reads and why it leaves
        others out (``None`` for a model of one montage, or before the streams are known)."""
        loaded, sig = self._loaded, self._signature
        if loaded is None or sig is None or not loaded.model.config.montage_free:
            return None
        from bci_affect.dsp.montage import montage_map  # noqa: PLC0415

        return montage_map(sig.eeg_ch_names).describe()

    def use_model(self, model: AffectModel, name: str) -> LoadedModel:
        """Score this session's next windows with ``model`` (e.g. a personalised version).

        The switch is atomic: a batch already in the model finishes with the old model, every
        window scored after this call returns uses the new one (the prediction's ``model``
        field says which). The model is moved to the engine's device and put in eval mode.

        Raises
        ------
        ConfigError
            ``model`` does not fit the session's streams (channels, rate, window length).
        """
        sig = self._signature
        if sig is not None:
            check_compatible(
                model.config,
                eeg_ch_names=sig.eeg_ch_names,
                sfreq=sig.sfreq,
                n_times=sig.n_times,
                source=f"model {name}",
            )
        device = self.engine.device
        loaded = LoadedModel(model.to(device).eval(), name, device, model.conformal)
        if sig is not None and sig.face_ch_names is not None:
            loaded.face_columns(sig.face_ch_names)
        with self.engine._cv:  # one assignment: the worker reads the model once per batch
            self._loaded, self._model_error = loaded, None
        return loaded

    def push(self, chunk: Chunk) -> None:
        """Hand over one chunk (any stream; non-EEG, non-face streams are counted only).

        Never raises. Realtime: returns at once (safe from any thread). Otherwise: filters,
        windows and, when a batch is full, scores in this thread.
        """
        t_arrival = time.perf_counter()
        if not self.engine.config.realtime:
            self._count(chunk)
            self._process(chunk, t_arrival)
            self.engine._score_ready(final=False)
            return
        with self._cv:
            if self._closing:
                return
            self._count(chunk)
            self._input.append((chunk, t_arrival))
            if len(self._input) > self.engine.config.max_input_chunks:
                old, _ = self._input.popleft()
                self._stats.n_input_dropped += 1
                if not self._warned_input:
                    self._warned_input = True
                    logger.warning(
                        "session %r: the signals chain fell behind; dropping the oldest input "
                        "chunks (first: %r, %d samples)",
                        self.name,
                        old.name,
                        old.n_times,
                    )
            self._cv.notify()

    def push_windows(self, results: Sequence[WindowResult]) -> None:
        """Hand over windows that already went through a signals chain (e.g. a dataset's
        windows, or one chain shared by several consumers): they go straight to the model.

        Same scheduling as :meth:`push` (realtime: queued, latest wins; otherwise scored in
        this thread when a batch is full).
        """
        results = list(results)
        if not results:
            return
        now = time.perf_counter()
        self.engine._submit(self, results, now, now)
        if not self.engine.config.realtime:
            self.engine._score_ready(final=False)

    def wait_windowed(self, timeout: float | None = None) -> bool:
        """Wait until every chunk pushed so far went through the signals chain (its windows
        are then waiting for, or with, the model). Returns ``False`` on timeout."""
        if not self.engine.config.realtime:
            return True
        with self._cv:
            return self._cv.wait_for(lambda: not self._input and not self._busy, timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every chunk pushed so far is windowed and every window scored.

        Returns ``False`` on timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        with self._cv:
            if not self._cv.wait_for(lambda: not self._input and not self._busy, left()):
                return False
        with self.engine._cv:
            return self.engine._cv.wait_for(
                lambda: not self.pending and self._in_flight == 0, left()
            )

    def close(self, timeout: float | None = 30.0) -> bool:
        """End of the session's streams: window what is left, flush, score, stop the thread.

        Returns ``False`` when the last windows were not scored within ``timeout`` seconds.
        """
        if self._closed:
            return True
        if not self.engine.config.realtime:
            self._closed = True
            self._flush(time.perf_counter())
            self.engine._score_ready(final=True)
            return True
        with self._cv:
            self._closing = True
            self._cv.notify()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "session %r: the signals thread did not finish in %s s", self.name, timeout
            )
            return False
        self._closed = True
        return self.wait_idle(timeout)

    # -- internals ----------------------------------------------------------------------

    def _count(self, chunk: Chunk) -> None:
        st = self._stats
        st.n_chunks += 1
        st.n_samples[chunk.name] = st.n_samples.get(chunk.name, 0) + chunk.n_times

    def _signals_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._input or self._closing)
                if not self._input and self._closing:
                    break
                items = list(self._input)
                self._input.clear()
                self._busy = True
            try:
                for chunk, t_arrival in items:
                    self._process(chunk, t_arrival)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
        self._flush(time.perf_counter())
        with self._cv:
            self._cv.notify_all()

    def _process(self, chunk: Chunk, t_arrival: float) -> None:
        try:
            results = self.pipeline(chunk)
        except Exception as exc:  # noqa: BLE001  (isolated: acquisition goes on)
            self.engine._report("signals", self, exc)
            return
        finally:
            self._count_nonfinite()
        self._windows_out(results, t_arrival)

    def _count_nonfinite(self) -> None:
        """Copy the signals chain's count of EEG samples left out for NaN or inf."""
        n = self.pipeline.n_nonfinite
        if n != self._stats.n_nonfinite:
            with self._cv:
                self._stats.n_nonfinite = n

    def _windows_out(self, results: list[WindowResult], t_arrival: float) -> None:
        if not results:
            return
        for sink in self.window_sinks:
            try:
                sink(results)
            except Exception as exc:  # noqa: BLE001
                self.engine._report("sink", self, exc)
        # An incomplete EEG window (a gap, a lost stream, NaN samples) gives the model no EEG;
        # without a face in it there is nothing to score.
        scorable = [r for r in results if r.window.complete or r.window.face_coverage > 0]
        if len(scorable) < len(results):
            with self.engine._cv:
                self._stats.n_windows += len(results) - len(scorable)
                self._stats.n_incomplete += len(results) - len(scorable)
        if scorable:
            self.engine._submit(self, scorable, t_arrival, time.perf_counter())

    def _flush(self, t_arrival: float) -> None:
        try:
            results = self.pipeline.flush()
        except Exception as exc:  # noqa: BLE001
            self.engine._report("signals", self, exc)
            return
        self._windows_out(results, t_arrival)

    def _resolve(self, result: WindowResult) -> LoadedModel | None:
        """The session's model (loaded from the first window when streams were not declared)."""
        if self._loaded is not None or self._model_error is not None:
            return self._loaded
        w = result.window
        sig = StreamSignature(
            eeg_ch_names=w.ch_names,
            sfreq=float(w.sfreq),
            n_times=int(w.n_times),
            face_ch_names=w.face_names if w.face is not None else None,
        )
        try:
            self._loaded = self.engine.provider.get(sig)
            self._signature = sig
        except Exception as exc:  # noqa: BLE001
            self._model_error = exc
            self.engine._report("model", self, exc)
        return self._loaded


class Feeder:
    """A thread that reads a source into a session; see :meth:`Engine.feed`."""

    def __init__(
        self,
        source: Source | Iterable[Chunk],
        session: Session,
        *,
        tee: Callable[[Chunk], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.source = source
        self.session = session
        self.tee = tee
        self.error: BaseException | None = None
        self.n_chunks = 0
        self._thread = threading.Thread(
            target=self._run, name=name or f"bci-affect-feed-{session.name}", daemon=True
        )

    def start(self) -> Feeder:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            for chunk in self.source:
                if self.tee is not None:
                    self.tee(chunk)
                self.session.push(chunk)
                self.n_chunks += 1
        except BaseException as exc:  # noqa: BLE001  (reported; join() re-raises nothing)
            self.error = exc
            self.session.engine._report("source", self.session, exc)

    def stop(self) -> None:
        """Ask the source to stop (``source.stop()``)."""
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the source to end; ``False`` on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Engine:
    """Windows, batches and scores the chunks of one or more sessions; see the module doc.

    Parameters
    ----------
    model : AffectModel, path-like, "default", "untrained" or None
        The model, a checkpoint folder, ``None`` / ``"default"`` for the bundled model (an
        untrained model built from the stream's channels while none is bundled or when it does
        not fit), or ``"untrained"`` for that untrained model in any case.
    config : EngineConfig, optional
    signals : SignalsConfig, optional
        Default signals chain of new sessions.
    sinks : sequence of callables, optional
        Receive every prediction of every session (after the session's own sinks).
    on_error : callable, optional
        ``on_error(EngineError)`` for every error caught (from the thread it happened in).
    """

    def __init__(
        self,
        model: AffectModel | str | os.PathLike | None = None,
        *,
        config: EngineConfig | None = None,
        signals: SignalsConfig | None = None,
        sinks: Sequence[Sink] = (),
        on_error: Callable[[EngineError], None] | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.provider = ModelProvider(model, device=self.config.device)
        self.signals = signals or SignalsConfig()
        self.sinks = list(sinks)
        self.on_error = on_error
        self.sessions: list[Session] = []
        self._errors: dict[tuple[str, str], EngineError] = {}
        self._err_lock = threading.Lock()
        self._cv = threading.Condition()
        self._stopping = False
        self._closed = False
        self._rr = 0  # round-robin start among sessions
        self._worker: threading.Thread | None = None
        self.n_batches = 0
        if self.config.realtime:
            self._worker = threading.Thread(
                target=self._worker_loop, name="bci-affect-inference", daemon=True
            )
            self._worker.start()

    # -- public -------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.provider.device

    @property
    def errors(self) -> list[EngineError]:
        """Errors caught so far: the first of each stage and session, with its count."""
        with self._err_lock:
            return list(self._errors.values())

    def add_session(
        self,
        name: str = "session",
        *,
        streams: Sequence[StreamInfo] | None = None,
        signals: SignalsConfig | None = None,
        eeg_stream: str | None = None,
        sinks: Sequence[Sink] = (),
        window_sinks: Sequence[Callable[[Sequence[WindowResult]], None]] = (),
    ) -> Session:
        """A new session.

        Parameters
        ----------
        name : str
            Unique within the engine; written into every prediction.
        streams : sequence of StreamInfo, optional
            The session's streams when known (e.g. ``source.streams``): the model is chosen
            and checked now, so a model that does not fit fails before the session starts.
        signals : SignalsConfig, optional
            Default: the engine's.
        eeg_stream : str, optional
            Name of the EEG stream (default: the stream of type ``EEG``).
        sinks : sequence of callables
            Receive this session's predictions.
        window_sinks : sequence of callables
            Receive the windows of the session's signals chain (a list of
            :class:`~bci_affect.processors.WindowResult`, in order, from the signals thread
            when realtime) just before they go to the model, e.g. to keep their inputs.

        Raises
        ------
        ConfigError
            A duplicate name, or a model that does not fit ``streams``.
        """
        if self._closed:
            raise ConfigError("this engine is closed; create a new one")
        if not str(name).strip():
            raise ConfigError("a session needs a non-empty name")
        if any(s.name == name for s in self.sessions):
            raise ConfigError(f"a session named {name!r} exists already in this engine")
        session = Session(
            self,
            str(name),
            signals=signals or self.signals,
            eeg_stream=eeg_stream,
            sinks=sinks,
            window_sinks=window_sinks,
        )
        if streams is not None:
            try:
                session.declare_streams(streams)
            except BaseException:
                session.close(timeout=1.0)
                raise
        with self._cv:
            self.sessions.append(session)
        return session

    def feed(
        self,
        source: Source | Iterable[Chunk],
        session: Session,
        *,
        tee: Callable[[Chunk], None] | None = None,
    ) -> Feeder:
        """Read ``source`` (already open) into ``session`` from a new thread.

        ``tee(chunk)`` is called first for every chunk (e.g. to re-publish it on LSL or record
        it); it runs before, and regardless of, windowing and inference. The thread ends when
        the source does; its error, if any, is reported and kept in ``Feeder.error``.
        """
        return Feeder(source, session, tee=tee).start()

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush every session, score the last windows and stop the worker.

        Returns ``False`` when something did not finish within ``timeout`` seconds (each).
        """
        if self._closed:
            return True
        ok = True
        for s in list(self.sessions):
            ok = s.close(timeout) and ok
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
            ok = ok and not self._worker.is_alive()
        self._closed = True
        return ok

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling ---------------------------------------------------------------------

    def _submit(
        self, session: Session, results: list[WindowResult], t_arrival: float, t_ready: float
    ) -> None:
        items = [_Item(session, r, t_arrival, t_ready) for r in results]
        with self._cv:
            session._stats.n_windows += len(items)
            session.pending.extend(items)
            if self.config.realtime:
                over = len(session.pending) - self.config.max_pending
                for _ in range(max(0, over)):
                    session.pending.popleft()
                    session._stats.n_skipped += 1
                    session._skipped_since += 1
                if over > 0:
                    logger.debug(
                        "session %r: skipped %d windows (model behind)", session.name, over
                    )
                self._cv.notify_all()

    def _take(self, limit: int) -> list[_Item]:
        """Up to ``limit`` waiting windows, round-robin over sessions (lock held)."""
        out: list[_Item] = []
        sessions = self.sessions
        n = len(sessions)
        if n == 0:
            return out
        start = self._rr % n
        self._rr += 1
        progressed = True
        while len(out) < limit and progressed:
            progressed = False
            for j in range(n):
                s = sessions[(start + j) % n]
                if not s.pending or len(out) >= limit:
                    continue
                item = s.pending.popleft()
                item.n_skipped, s._skipped_since = s._skipped_since, 0
                s._in_flight += 1
                out.append(item)
                progressed = True
        return out

    def _has_pending(self) -> bool:
        return any(s.pending for s in self.sessions)

    def _worker_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stopping or self._has_pending())
                if self._stopping and not self._has_pending():
                    return
                items = self._take(self.config.max_batch)
            try:
                self._run_batch(items)
            except BaseException as exc:  # noqa: BLE001  (never let the worker die)
                logger.exception("inference worker: unexpected error")
                for it in items:
                    self._report("model", it.session, exc)
            finally:
                with self._cv:
                    for it in items:
                        it.session._in_flight -= 1
                    self._cv.notify_all()

    def _score_ready(self, *, final: bool) -> None:
        """In-order scoring (``realtime=False``): full batches, and the rest when ``final``."""
        while True:
            with self._cv:
                waiting = sum(len(s.pending) for s in self.sessions)
                if waiting == 0 or (waiting < self.config.max_batch and not final):
                    return
                items = self._take(self.config.max_batch)
            try:
                self._run_batch(items)
            finally:
                with self._cv:
                    for it in items:
                        it.session._in_flight -= 1

    # -- scoring ------------------------------------------------------------------------

    def _run_batch(self, items: list[_Item]) -> None:
        groups: dict[int, tuple[LoadedModel, list[_Item]]] = {}
        for it in items:
            loaded = it.session._resolve(it.result)
            if loaded is None:
                with self._cv:
                    it.session._stats.n_failed += 1
                continue
            groups.setdefault(id(loaded), (loaded, []))[1].append(it)
        for loaded, group in groups.values():
            t0 = time.perf_counter()
            try:
                results = [it.result for it in group]
                out = infer(loaded, results)
                scored = ScoredWindows(out, loaded, [r.window.index for r in results])
            except Exception as exc:  # noqa: BLE001  (a model crash never stops acquisition)
                self._fail(group, exc)
                continue
            finite = np.isfinite(scored.probs).all(axis=1)
            if not finite.all():
                bad = [it for it, ok in zip(group, finite, strict=True) if not ok]
                self._fail(bad, ModelOutputError(loaded.name, len(bad), len(group)))
                keep = np.flatnonzero(finite).tolist()
                if not keep:
                    continue
                group, scored = [group[i] for i in keep], _Subset(scored, keep)
            self.n_batches += 1
            t_done = time.perf_counter()
            now = local_clock() if self.config.realtime else None
            latency = [
                {
                    "signals": 1e3 * (it.t_ready - it.t_arrival),
                    "queue": 1e3 * (t0 - it.t_ready),
                    "model": 1e3 * (t_done - t0),
                    "total": 1e3 * (t_done - it.t_arrival),
                }
                for it in group
            ]
            lag = [None if now is None else 1e3 * (now - it.result.window.t_end) for it in group]
            by_session: dict[int, list[int]] = {}
            for i, it in enumerate(group):
                by_session.setdefault(id(it.session), []).append(i)
            for idx in by_session.values():
                session = group[idx[0]].session
                preds = make_predictions(
                    session.name,
                    [group[i].result for i in idx],
                    _Subset(scored, idx),
                    loaded,
                    n_skipped=[group[i].n_skipped for i in idx],
                    latency_ms=[latency[i] for i in idx],
                    lag_ms=[lag[i] for i in idx],
                )
                with self._cv:
                    session._stats.n_scored += len(preds)
                self._deliver(session, preds)

    def _fail(self, items: list[_Item], exc: BaseException) -> None:
        """Count ``items`` as lost to a model error and report it once per session."""
        sessions = {id(it.session): it.session for it in items}
        with self._cv:
            for it in items:
                it.session._stats.n_failed += 1
        for s in sessions.values():
            self._report("model", s, exc)

    def _deliver(self, session: Session, preds: list[Prediction]) -> None:
        for sink in (*session.sinks, *self.sinks):
            for p in preds:
                try:
                    sink(p)
                except Exception as exc:  # noqa: BLE001
                    self._report("sink", session, exc)
                    break

    def _report(self, stage: str, session: Session, exc: BaseException) -> None:
        key = (stage, session.name)
        with self._err_lock:
            prev = self._errors.get(key)
            count = 1 if prev is None else prev.count + 1
            err = EngineError(stage, session.name, prev.error if prev else exc, count)
            self._errors[key] = err
        with session._cv:
            session._stats.n_errors[stage] = session._stats.n_errors.get(stage, 0) + 1
        if prev is None:
            logger.error(
                "%s error in session %r%s: %s",
                stage,
                session.name,
                "" if stage == "source" else " (acquisition continues)",
                _describe(exc),
            )
            logger.debug("%s error in session %r", stage, session.name, exc_info=exc)
        elif math.log10(count).is_integer():
            logger.warning("%s errors in session %r: %d so far", stage, session.name, count)
        if self.on_error is not None:
            try:
                self.on_error(EngineError(stage, session.name, exc, count))
            except Exception:  # noqa: BLE001
                logger.exception("on_error callback failed")


class ModelOutputError(BciAffectError, ArithmeticError):
    """A model returned NaN or infinite probabilities (e.g. weights that overflow)."""

    def __init__(self, model: str, n_bad: int, n: int) -> None:
        super().__init__(
            f"model {model} returned NaN or infinite probabilities for {n_bad} of {n} windows; "
            "its weights are broken (a training run that diverged?): retrain it, or choose "
            "another with --model"
        )


class _Subset:
    """Rows ``idx`` of a :class:`ScoredWindows` (what make_predictions reads)."""

    def __init__(self, scored: ScoredWindows, idx: list[int]) -> None:
        for name, value in vars(scored).items():
            setattr(self, name, None if value is None else value[idx])
