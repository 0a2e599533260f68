"""The signals chain: preprocess -> aligned windows -> quality -> features.

:class:`SignalPipeline` runs it live, chunk by chunk (``__call__(chunk) -> list[WindowResult]``)
on any mix of EEG, FaceFeatures and other streams (others are ignored, except the acquisition
events of the face stream: ``{"event": "stream_ended" | "stream_lost", "stream": <face stream>}``
on a string stream tell the windower no frame will come, so windows stop waiting for them).
:func:`iter_recording` runs it on whole recorded streams, scoring windows in vectorised batches.
Both cut the same windows with the same :class:`~bci_affect.processors.windower.Windower` and
finish through the same maths, so live, chunked and offline results agree.

Both first leave out the EEG samples (columns) that hold NaN or inf in any channel
(:class:`FiniteSamples`), with one warning when such a run of samples starts and one when it
ends: the pause they leave restarts the filters and makes the windows over it incomplete,
exactly like a gap in the timestamps (a lost stream).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError
from bci_affect.processors._segments import WindowSpectra
from bci_affect.processors.features import (
    FeatureConfig,
    FeatureExtractor,
    Features,
    extract_features,
)
from bci_affect.processors.preprocess import Preprocess, PreprocessConfig
from bci_affect.processors.quality import Quality, QualityConfig, QualityScorer, score_windows
from bci_affect.processors.sites import SiteFeatures
from bci_affect.processors.windower import FACE_TYPE, Window, WindowConfig, Windower

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignalsConfig:
    """Settings of the whole signals chain.

    The re-reference is set in ``features.reference`` (applied per window, after bad channels
    are known); ``preprocess.reference`` must stay ``None`` here. Use :meth:`make` for the
    common knobs.
    """

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if self.preprocess.reference is not None:
            raise ConfigError(
                "SignalsConfig: set the reference in features.reference, not "
                "preprocess.reference; the chain re-references each window after bad channels "
                "are known"
            )
        for name, seg in (
            ("quality", self.quality.welch_seg_s),
            ("features", self.features.welch_seg_s),
        ):
            if seg > self.window.window_s:
                raise ConfigError(
                    f"{name}.welch_seg_s={seg} s is longer than window_s={self.window.window_s} s"
                )

    @classmethod
    def make(
        cls,
        *,
        line_hz: float | None = 50.0,
        window_s: float = 4.0,
        hop_s: float = 0.5,
        l_freq_hz: float | None = 1.0,
        h_freq_hz: float | None = 45.0,
        reference: str | int | None = None,
        frontal: tuple[str | int, ...] | None = None,
    ) -> SignalsConfig:
        """A configuration from the settings users change most.

        ``line_hz`` sets both the notch and the line-noise score (50 Hz in Europe, Asia,
        Africa and Oceania; 60 Hz in the Americas).
        """
        return cls(
            preprocess=PreprocessConfig(l_freq_hz=l_freq_hz, h_freq_hz=h_freq_hz, notch_hz=line_hz),
            window=WindowConfig(window_s=window_s, hop_s=hop_s),
            quality=QualityConfig(line_hz=line_hz, frontal=frontal),
            features=FeatureConfig(reference=reference),
        )


class FiniteSamples:
    """Leaves out the EEG samples (columns) that hold NaN or inf in any channel.

    What follows sees a pause in the timestamps: the filters restart after it and the windows
    over it are incomplete (never filled in). State carries across chunks: each run of such
    samples gives one warning when it starts (with the channels concerned) and one when it
    ends, however the stream is cut into chunks (live chunks or a whole recording). After
    :attr:`MAX_LOGGED_RUNS` runs, one line says that further runs are only counted.

    Parameters
    ----------
    label : str, optional
        Put before each log line (e.g. ``"session 'S01'"``).

    Attributes
    ----------
    n_left_out : int
        Samples (time points) left out since the last :meth:`reset`.
    n_runs : int
        Runs of such samples since the last :meth:`reset`.
    """

    #: Runs of NaN/inf samples logged one by one; later runs are counted only.
    MAX_LOGGED_RUNS = 20

    def __init__(self, label: str | None = None) -> None:
        self._prefix = f"{label}: " if label else ""
        self.reset()

    def reset(self) -> None:
        self.n_left_out = 0
        self.n_runs = 0
        self._run_from: float | None = None  # start of the current run, LSL clock s
        self._run_n = 0  # samples in that run

    def __call__(self, chunk: Chunk) -> Chunk:
        """``chunk`` without its non-finite samples.

        Parameters
        ----------
        chunk : Chunk
            EEG, data shape (n_chans, n_times).

        Returns
        -------
        Chunk
            ``chunk`` itself when every sample is finite, else a copy of shape
            (n_chans, n_finite_times).
        """
        data = chunk.data
        if data.dtype.kind != "f" or data.size == 0:
            return chunk
        finite = np.isfinite(data)
        good = finite.all(axis=0)  # (n_times,)
        n_bad = int(good.size - np.count_nonzero(good))
        if n_bad == 0:
            self._end_run(chunk.name, float(chunk.times[0]))
            return chunk
        self.n_left_out += n_bad
        edges = np.diff(np.concatenate(([0], (~good).view(np.int8), [0])))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if starts[0] > 0:  # a run that went on to the end of the last chunk ended with it
            self._end_run(chunk.name, float(chunk.times[0]))
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):  # runs [a, b)
            if self._run_from is None:
                self._start_run(chunk, finite[:, a:b], a)
            self._run_n += b - a
            if b < good.size:
                self._end_run(chunk.name, float(chunk.times[b]))
        return replace(chunk, data=data[:, good], times=chunk.times[good])

    def finish(self, stream: str) -> None:
        """End of the stream: say so when it ended inside a run of non-finite samples."""
        if self._run_from is None:
            return
        if self.n_runs <= self.MAX_LOGGED_RUNS:
            logger.warning(
                "%sEEG stream %r ended in a run of NaN or inf samples (%d samples left out "
                "from t=%.3f s)",
                self._prefix,
                stream,
                self._run_n,
                self._run_from,
            )
        self._run_from, self._run_n = None, 0

    def _start_run(self, chunk: Chunk, finite: np.ndarray, first: int) -> None:
        """A run starts at sample ``first`` of ``chunk``; ``finite``: the run's samples'
        finiteness, shape (n_chans, n_run_times)."""
        self._run_from = float(chunk.times[first])
        self.n_runs += 1
        if self.n_runs > self.MAX_LOGGED_RUNS + 1:
            return
        if self.n_runs == self.MAX_LOGGED_RUNS + 1:
            logger.warning(
                "%sEEG stream %r sends NaN or inf samples again at t=%.3f s (run %d); this "
                "and later runs are left out and counted without a warning each",
                self._prefix,
                chunk.name,
                self._run_from,
                self.n_runs,
            )
            return
        chans = [chunk.ch_names[i] for i in np.flatnonzero(~finite.all(axis=1))]
        logger.warning(
            "%sEEG stream %r sends NaN or inf samples from t=%.3f s (channels %s); they are "
            "left out and windows over them are not scored as EEG",
            self._prefix,
            chunk.name,
            self._run_from,
            ", ".join(chans),
        )

    def _end_run(self, stream: str, t: float) -> None:
        """Say that a run of non-finite samples ended at ``t`` (LSL clock, s)."""
        if self._run_from is None:
            return
        if self.n_runs <= self.MAX_LOGGED_RUNS:
            logger.warning(
                "%sEEG stream %r finite again at t=%.3f s (%d samples with NaN or inf left "
                "out over %.2f s)",
                self._prefix,
                stream,
                t,
                self._run_n,
                t - self._run_from,
            )
        self._run_from, self._run_n = None, 0


@dataclass(frozen=True, eq=False)
class WindowResult:
    """One window with its quality and features."""

    window: Window
    quality: Quality
    features: Features

    @property
    def t_end(self) -> float:
        return self.window.t_end


class SignalPipeline:
    """The live signals chain; see the module docstring.

    Parameters
    ----------
    config : SignalsConfig
    eeg_stream : str, optional
        Name of the EEG stream; default: chunks whose stream type is ``EEG``.
    clock : callable, optional
        Live sessions: a monotonic clock in seconds, passed to the
        :class:`~bci_affect.processors.windower.Windower` (windows also wait for late face
        frames on it).
    label : str, optional
        Put before the log lines about NaN or inf samples (e.g. ``"session 'S01'"``).
    """

    def __init__(
        self,
        config: SignalsConfig | None = None,
        *,
        eeg_stream: str | None = None,
        clock: Callable[[], float] | None = None,
        label: str | None = None,
    ):
        self.config = config or SignalsConfig()
        self.eeg_stream = eeg_stream
        self.finite = FiniteSamples(label)
        self.preprocess = Preprocess(self.config.preprocess)
        self.windower = Windower(self.config.window, clock=clock)
        self.scorer = QualityScorer(self.config.quality)
        self.extractor = FeatureExtractor(self.config.features)
        self.sites = SiteFeatures()
        self._eeg_name: str | None = None
        self._spectra: WindowSpectra | None = None
        self._spectra_key: tuple | None = None
        self._epoch = self.windower.epoch

    def reset(self) -> None:
        for step in (
            self.finite,
            self.preprocess,
            self.windower,
            self.scorer,
            self.extractor,
            self.sites,
        ):
            step.reset()
        self._eeg_name = None
        self._spectra = self._spectra_key = None
        self._epoch = self.windower.epoch

    @property
    def n_nonfinite(self) -> int:
        """EEG samples left out because they held NaN or inf (see :class:`FiniteSamples`)."""
        return self.finite.n_left_out

    def declare(self, streams: Sequence[StreamInfo]) -> None:
        """The session's streams, known before their data: a FaceFeatures stream among them is
        waited for from the first window on (see :meth:`Windower.expect_face`)."""
        faces = [s for s in streams if s.type == FACE_TYPE]
        if faces:
            self.windower.expect_face(faces[0])

    def is_eeg(self, chunk: Chunk) -> bool:
        if self.eeg_stream is not None:
            return chunk.name == self.eeg_stream
        return chunk.info.type.upper() == "EEG"

    def __call__(self, chunk: Chunk) -> list[WindowResult]:
        if chunk.info.type == FACE_TYPE:
            return self._score(self.windower.push_face(chunk))
        if chunk.info.is_string:
            return self._score(self._face_events(chunk))
        if not self.is_eeg(chunk):
            return []
        if self._eeg_name is None:
            self._eeg_name = chunk.name
        elif chunk.name != self._eeg_name:
            raise ConfigError(
                f"two EEG streams ({self._eeg_name!r} and {chunk.name!r}); choose one with "
                "eeg_stream="
            )
        chunk = self.finite(chunk)
        if chunk.n_times == 0:
            return []
        filtered = self.preprocess(chunk)
        return self._score(self.windower.push_eeg(filtered, raw=chunk))

    def _face_events(self, chunk: Chunk) -> list[Window]:
        """Act on ``stream_ended`` / ``stream_lost`` events of the face stream in a string chunk
        (e.g. ``FaceFeatures-events``); returns the windows that became ready."""
        face = self.windower.face_name
        if face is None or chunk.n_times == 0:
            return []
        out: list[Window] = []
        for text, t in zip(chunk.data[0], chunk.times, strict=True):
            event = _stream_event(text)
            if event is not None and event.get("stream") == face:
                reason = "ended" if event["event"] == "stream_ended" else "lost"
                when = event.get("t")
                when = float(when) if isinstance(when, (int, float)) else float(t)
                out += self.windower.face_stopped(reason, when)
        return out

    def flush(self) -> list[WindowResult]:
        """End of the stream: score the windows still waiting (for late face frames)."""
        if self._eeg_name is not None:
            self.finite.finish(self._eeg_name)
        return self._score(self.windower.flush())

    def _shared_spectra(self, window: Window) -> WindowSpectra | None:
        """One per-segment store for the scorer and the extractor: each new segment of the
        raw and the filtered EEG is transformed once, in a single FFT."""
        qs, fs = self.scorer.setup(window), self.extractor.setup(window)
        if self._spectra_key != (qs, fs):
            self._spectra = None
            if (qs.seg_len, qs.step) == (fs.seg_len, fs.step):
                self._spectra = WindowSpectra(
                    window.sfreq,
                    len(window.ch_names),
                    qs.seg_len,
                    qs.step,
                    raw_weights=qs.weights,
                    filtered_weights=fs.filtered_weights,
                    keep_spectra=fs.keep_spectra,
                )
            self._spectra_key = (qs, fs)
        return self._spectra

    def _score(self, windows: list[Window]) -> list[WindowResult]:
        if self.windower.epoch != self._epoch:  # the windower restarted: positions count anew
            self.scorer.reset()
            self.extractor.reset()
            self._spectra = self._spectra_key = None
            self._epoch = self.windower.epoch
        out = []
        for w in windows:
            spectra = self._shared_spectra(w) if w.complete else None
            powers = spectra(w) if spectra is not None else None
            q = self.scorer(w, powers)
            out.append(
                _with_sites(WindowResult(w, q, self.extractor(w, ~q.bad, powers)), self.sites)
            )
        return out


def _stream_event(text: object) -> dict | None:
    """The ``stream_ended`` / ``stream_lost`` event in one marker string, else ``None``."""
    if not isinstance(text, str) or '"stream_' not in text:
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if isinstance(event, dict) and event.get("event") in ("stream_ended", "stream_lost"):
        return event
    return None


def _with_sites(result: WindowResult, sites: SiteFeatures) -> WindowResult:
    """``result`` with its session-normalised virtual-site features (in push order)."""
    z = sites(result.features.de, result.window.ch_names, float(result.quality.quality))
    return replace(result, features=replace(result.features, sites=z))


def iter_recording(
    eeg: Chunk,
    face: Chunk | None = None,
    config: SignalsConfig | None = None,
    *,
    batch: int = 256,
    finite: FiniteSamples | None = None,
) -> Iterator[WindowResult]:
    """Windows of a recorded EEG stream (and FaceFeatures), scored in vectorised batches.

    Gives the same windows, quality and features as :class:`SignalPipeline` fed the same
    streams (to floating-point rounding): samples holding NaN or inf are left out first, with
    the same warnings.

    Parameters
    ----------
    eeg : Chunk
        The whole raw EEG stream (µV).
    face : Chunk, optional
        The whole FaceFeatures stream.
    config : SignalsConfig
    batch : int
        Windows scored per vectorised call (bounds memory).
    finite : FiniteSamples, optional
        The step that leaves out NaN/inf samples (a fresh one by default); pass one to read
        its ``n_left_out`` or to set its log label.
    """
    config = config or SignalsConfig()
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    finite = finite if finite is not None else FiniteSamples()
    eeg = finite(eeg)
    finite.finish(eeg.name)
    if eeg.n_times == 0:
        return
    filtered = Preprocess(config.preprocess)(eeg)
    windower = Windower(config.window)
    sites = SiteFeatures()
    pending: list[Window] = []
    block = max(1, int(round(10.0 * eeg.sfreq))) if eeg.sfreq > 0 else eeg.n_times
    face_pos = 0
    for a in range(0, eeg.n_times, block):
        b = min(a + block, eeg.n_times)
        if face is not None:  # frames up to this block's end first: no window waits for them
            f_hi = int(np.searchsorted(face.times, eeg.times[b - 1], side="right"))
            pending += windower.push_face(
                replace(face, data=face.data[:, face_pos:f_hi], times=face.times[face_pos:f_hi])
            )
            face_pos = f_hi
        pending += windower.push_eeg(
            replace(filtered, data=filtered.data[:, a:b], times=filtered.times[a:b]),
            raw=replace(eeg, data=eeg.data[:, a:b], times=eeg.times[a:b]),
        )
        while len(pending) >= batch:
            for r in _score_batch(pending[:batch], config):
                yield _with_sites(r, sites)
            pending = pending[batch:]
    pending += windower.flush()
    for i in range(0, len(pending), batch):
        for r in _score_batch(pending[i : i + batch], config):
            yield _with_sites(r, sites)


def process_recording(
    eeg: Chunk, face: Chunk | None = None, config: SignalsConfig | None = None
) -> list[WindowResult]:
    """:func:`iter_recording` as a list."""
    return list(iter_recording(eeg, face, config))


def _score_batch(windows: list[Window], config: SignalsConfig) -> list[WindowResult]:
    w0 = windows[0]
    complete = np.array([w.complete for w in windows])
    filt = np.stack([w.eeg for w in windows])
    raw = np.stack([w.eeg_raw for w in windows]).astype(np.float64)
    q = score_windows(raw, filt, w0.sfreq, w0.ch_names, config.quality, complete=complete)
    f = extract_features(
        filt, w0.sfreq, w0.ch_names, config.features, good=~q.bad, complete=complete
    )
    out = []
    for i, w in enumerate(windows):
        fi = f[i] if w.complete else replace(f[i], tensor=None)  # as the live extractor gives
        out.append(WindowResult(w, q[i], fi))
    return out
