"""Record LSL streams to XDF with LabRecorder (the ``labrecorder`` package), plus a JSON sidecar.

:class:`Recorder` records the selected streams into one XDF file::

    rec = Recorder("recordings/S01/ses1.xdf", ["EEG", "type=Markers"], board="cyton")
    rec.start()          # returns once LabRecorder collects from every stream
    ...                  # anything: a calibration session, rec.wait(duration_s=60), ...
    summary = rec.stop() # finalises the file and the sidecar; thread-safe, idempotent

Beside the file, ``<file stem>.json`` (see :func:`sidecar_path`) describes the recording: subject,
session, board, montage, software versions, the configuration, each stream with its metadata and
sample count, and start/stop times on the LSL clock and in UTC. It is written when the recording
starts (``"status": "recording"``) and again when it ends (``"complete"`` or ``"failed"``), so
a crash still leaves it beside the file.

How LabRecorder behaves, and why it runs in a child process
    ``labrecorder.Recording(path, streams)`` starts recording at construction (one inlet and one
    thread per stream). Its ``stop()`` and its context manager's ``__exit__`` only *request* the
    stop; the file is finalised (stream footers, clock offsets) when the object is destroyed,
    which joins its threads and takes up to ~6 s (its clock-offset thread sleeps 5 s at a time)
    while holding Python's GIL: every other Python thread freezes meanwhile. It pulls its inlets
    every 0.5 s and does not drain them when stopped. So the recording runs in a small child
    process (``python -m acquisition.recorder``) that owns the ``Recording``; this process stays
    responsive, a crash of either side cannot leave the file unfinished (the child finalises the
    file when its stdin closes, e.g. when this process dies), and :meth:`Recorder.stop` keeps
    recording ``drain_s`` (1 s) longer so that everything pushed before it was called is in the
    file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bci_affect.core.errors import BciAffectError, ConfigError, DeviceError, FileFormatError

logger = logging.getLogger(__name__)
_lr_logger = logging.getLogger(__name__ + ".labrecorder")

#: Version of the sidecar layout (``format_version`` in the JSON).
SIDECAR_VERSION = 1

# LabRecorder prints this once per stream when it starts writing its samples. Its threads share
# std::cout, so lines can interleave; the literal itself is written in one piece: count it.
_STARTED = "Started data collection for stream "


def sidecar_path(xdf_path: str | os.PathLike) -> Path:
    """The JSON sidecar of a recording: ``recordings/S01/ses1.xdf`` → ``recordings/S01/ses1.json``."""
    return Path(xdf_path).with_suffix(".json")


def subject_session_from_path(path: str | os.PathLike) -> tuple[str | None, str]:
    """Subject and session implied by ``<root>/<subject>/<session>.xdf``.

    The subject is the name of the folder the path names (``None`` for a bare file name); the
    session is the file name without its extension.
    """
    p = Path(path)
    subject = p.parent.name if len(p.parts) > 1 and p.parent.name not in ("", ".", "..") else None
    return subject, p.stem


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_default(obj: object) -> object:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


def _write_json_atomic(path: Path, obj: Mapping) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    import bci_affect  # noqa: PLC0415

    out = {"bci_affect": bci_affect.__version__, "python": platform.python_version()}
    for dist in ("pylsl", "labrecorder", "pyxdf"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    try:
        import pylsl  # noqa: PLC0415

        out["liblsl"] = str(pylsl.library_version())
    except Exception:  # noqa: BLE001  (metadata only)
        pass
    return out


@dataclass(frozen=True)
class RecordedStream:
    """One stream as read back from the XDF file.

    ``first_timestamp``/``last_timestamp`` are seconds on the recording machine's LSL clock (clock
    offsets applied by pyxdf), ``None`` for a stream without samples.
    """

    name: str
    type: str
    n_chans: int
    sfreq: float
    channel_format: str
    n_samples: int
    first_timestamp: float | None = None
    last_timestamp: float | None = None


@dataclass(frozen=True)
class RecordingSummary:
    """What a finished recording wrote."""

    path: Path
    sidecar: Path
    size_bytes: int
    streams: tuple[RecordedStream, ...]
    start_lsl: float
    stop_lsl: float
    start_utc: str
    stop_utc: str
    status: str = "complete"
    error: str | None = None

    @property
    def duration_s(self) -> float:
        return self.stop_lsl - self.start_lsl


def read_back(path: str | os.PathLike) -> tuple[list[dict], list[RecordedStream]]:
    """Read an XDF file with pyxdf: per-stream metadata (for the sidecar) and sample counts.

    Raises
    ------
    FileFormatError
        pyxdf cannot read the file.
    """
    import numpy as np  # noqa: PLC0415
    import pyxdf  # noqa: PLC0415

    try:
        streams, _ = pyxdf.load_xdf(os.fspath(path), dejitter_timestamps=False)
    except Exception as exc:  # noqa: BLE001  (pyxdf raises many kinds)
        raise FileFormatError(f"{path}: pyxdf cannot read it ({exc})") from exc

    def first(d: Mapping, key: str, default: str = "") -> str:
        v = d.get(key) or [default]
        return v[0] if v[0] is not None else default

    meta, counts = [], []
    for s in sorted(streams, key=lambda s: s["info"].get("stream_id", 0)):
        info = s["info"]
        desc = (info.get("desc") or [None])[0] or {}
        labels, units = [], []
        channels = (desc.get("channels") or [None])[0] or {}
        for ch in channels.get("channel") or []:
            labels.append(first(ch, "label"))
            units.append(first(ch, "unit"))
        extra = {
            k: v[0]
            for k, v in desc.items()
            if k != "channels" and isinstance(v, list) and v and isinstance(v[0], str)
        }
        ts = np.asarray(s["time_stamps"], dtype=float)
        sfreq = float(first(info, "nominal_srate", "0"))
        n = int(ts.size)
        rec = RecordedStream(
            name=first(info, "name"),
            type=first(info, "type"),
            n_chans=int(first(info, "channel_count", "0")),
            sfreq=sfreq,
            channel_format=first(info, "channel_format"),
            n_samples=n,
            first_timestamp=float(ts[0]) if n else None,
            last_timestamp=float(ts[-1]) if n else None,
        )
        counts.append(rec)
        entry = {
            "name": rec.name,
            "type": rec.type,
            "n_chans": rec.n_chans,
            "sfreq": sfreq,
            "channel_format": rec.channel_format,
            "source_id": first(info, "source_id"),
            "hostname": first(info, "hostname"),
            "uid": first(info, "uid"),
            "created_at": float(first(info, "created_at", "0") or 0),
            "ch_names": labels,
            "units": units,
            "desc": extra,
            "n_samples": n,
            "first_timestamp": rec.first_timestamp,
            "last_timestamp": rec.last_timestamp,
            "effective_sfreq": (
                (n - 1) / (ts[-1] - ts[0]) if n > 1 and ts[-1] > ts[0] and sfreq > 0 else None
            ),
        }
        meta.append(entry)
    return meta, counts


def _short_meta(info: object) -> dict:
    """Sidecar entry of a resolved ``pylsl.StreamInfo`` (before anything is recorded)."""
    from acquisition.lsl_inlet import lsl_format_name  # noqa: PLC0415

    return {
        "name": info.name(),
        "type": info.type(),
        "n_chans": info.channel_count(),
        "sfreq": float(info.nominal_srate()),
        "channel_format": lsl_format_name(info.channel_format()),
        "source_id": info.source_id(),
        "hostname": info.hostname(),
        "uid": info.uid(),
        "created_at": info.created_at(),
    }


@contextlib.contextmanager
def _sigint_deferred(message: str) -> Iterator[None]:
    """In the main thread, keep Ctrl-C from abandoning a file half-finished (logs instead)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        logger.warning("%s", message)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # pragma: no cover (signals unavailable)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _WorkerState:
    n_collecting: int = 0
    status: list[dict] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    status_closed: bool = False


class Recorder:
    """Records LSL streams into one XDF file (LabRecorder) with a JSON sidecar.

    Parameters
    ----------
    path : str or path-like
        The ``.xdf`` file to write, e.g. ``recordings/<subject>/<session>.xdf``. Parent folders
        are created.
    streams : sequence of str, StreamSelector or pylsl.StreamInfo, optional
        What to record: selectors (see :class:`acquisition.lsl_inlet.StreamSelector`) and/or
        resolved ``pylsl.StreamInfo`` objects. ``None`` or empty: every stream visible.
    timeout_s : float
        Seconds to wait for each selector to match (or, without selectors, to listen for
        streams).
    subject, session : str, optional
        Default: from the path (``<subject>/<session>.xdf``).
    board, montage : str, optional
        Stored in the sidecar; default: a ``board``/``montage`` entry in a recorded stream's
        metadata, if any.
    overwrite : bool
        Replace an existing file (and sidecar). Otherwise an existing file is an error.
    config : mapping, optional
        The configuration to store in the sidecar (e.g. the command-line arguments).
    ready_timeout_s : float
        Longest :meth:`start` waits for LabRecorder to collect from every stream.
    drain_s : float
        Seconds :meth:`stop` keeps recording so that samples pushed before it are in the file.
    finish_timeout_s : float
        Longest :meth:`stop` waits for LabRecorder to finalise the file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        streams: Sequence[object] | None = None,
        *,
        timeout_s: float = 5.0,
        subject: str | None = None,
        session: str | None = None,
        board: str | None = None,
        montage: str | None = None,
        overwrite: bool = False,
        config: Mapping | None = None,
        ready_timeout_s: float = 15.0,
        drain_s: float = 1.0,
        finish_timeout_s: float = 60.0,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".xdf":
            raise ConfigError(
                f"recording file {os.fspath(path)!r} must end in .xdf, e.g. recordings/S01/ses1.xdf"
            )
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        for label, value in (
            ("ready_timeout_s", ready_timeout_s),
            ("finish_timeout_s", finish_timeout_s),
        ):
            if not value > 0:
                raise ConfigError(f"{label} must be > 0 seconds, got {value}")
        if not drain_s >= 0:
            raise ConfigError(f"drain_s must be >= 0 seconds, got {drain_s}")
        if isinstance(streams, str):
            streams = [streams]
        self.stream_request = list(streams or [])
        self.timeout_s = float(timeout_s)
        derived_subject, derived_session = subject_session_from_path(self.path)
        self.subject = subject or derived_subject
        self.session = session or derived_session
        self.board = board
        self.montage = montage
        self.overwrite = overwrite
        self.config = dict(config or {})
        self.ready_timeout_s = float(ready_timeout_s)
        self.drain_s = float(drain_s)
        self.finish_timeout_s = float(finish_timeout_s)

        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._cond = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._state = _WorkerState()
        self._lsl_infos: list = []
        self._summary: RecordingSummary | None = None
        self._start_lsl = self._start_wall = 0.0
        self._sidecar_base: dict = {}

    # -- properties ---------------------------------------------------------------------------

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._summary is None

    @property
    def pid(self) -> int | None:
        """Process id of the recording process (``None`` before :meth:`start`)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def stream_infos(self) -> list:
        """The resolved ``pylsl.StreamInfo`` of every stream being recorded."""
        return list(self._lsl_infos)

    @property
    def summary(self) -> RecordingSummary | None:
        return self._summary

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start --------------------------------------------------------------------------------

    def _refuse_existing(self) -> None:
        for p in (self.path, self.sidecar):
            if p.is_dir():
                raise ConfigError(f"{p} is a folder; give a file name ending in .xdf")
            if p.exists() and not self.overwrite:
                raise ConfigError(
                    f"{p} already exists; choose another file or pass --overwrite "
                    "(overwrite=True) to replace it"
                )

    def _prepare_file(self) -> None:
        self._refuse_existing()  # again: time passed while resolving
        blocker = next((p for p in self.path.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ConfigError(f"cannot write {self.path}: {blocker} is a file, not a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder {self.path.parent}: {exc.strerror or exc}; choose "
                "a writable folder"
            ) from None
        try:
            # exclusive creation unless overwriting: two recorders never share a file
            with open(self.path, "wb" if self.overwrite else "xb"):
                pass
        except FileExistsError:
            raise ConfigError(
                f"{self.path} already exists; choose another file or pass --overwrite "
                "(overwrite=True) to replace it"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot write {self.path}: {exc.strerror or exc}; choose a writable folder"
            ) from None

    def _resolve(self) -> list:
        import pylsl  # noqa: PLC0415

        from acquisition.lsl_inlet import resolve_selectors  # noqa: PLC0415

        given = [s for s in self.stream_request if isinstance(s, pylsl.StreamInfo)]
        selectors = [s for s in self.stream_request if not isinstance(s, pylsl.StreamInfo)]
        found = list(given)
        if selectors or not given:
            found += resolve_selectors(selectors, timeout_s=self.timeout_s)
        seen, out = set(), []
        for info in found:
            if info.uid() not in seen:
                seen.add(info.uid())
                out.append(info)
        return out

    def start(self) -> list:
        """Resolve the streams, check the file, and start recording.

        Returns once LabRecorder collects from every stream (or after ``ready_timeout_s``, with
        a warning).

        Returns
        -------
        list of pylsl.StreamInfo
            The streams being recorded.

        Raises
        ------
        ConfigError
            The file exists (without ``overwrite``) or cannot be written.
        StreamNotFoundError
            A selector matched nothing, or no stream is visible.
        DeviceError
            LabRecorder could not start.
        """
        import pylsl  # noqa: PLC0415

        from acquisition.lsl_inlet import describe_stream  # noqa: PLC0415

        with self._lock:
            if self._proc is not None:
                raise ConfigError(f"recording to {self.path} was already started")
            self._refuse_existing()
            infos = self._resolve()
            self._prepare_file()
            self._lsl_infos = infos
            for info in infos:
                logger.info("recording %s", describe_stream(info))
            try:
                self._spawn([info.as_xml() for info in infos])
            except BaseException:
                with contextlib.suppress(OSError):
                    if self.path.stat().st_size == 0:
                        self.path.unlink()
                raise
            self._start_lsl = pylsl.local_clock()
            self._start_wall = time.time()
            self._sidecar_base = self._base_sidecar([_short_meta(i) for i in infos])
            self._write_sidecar(status="recording")
        try:
            self._wait_ready(len(infos))
        except BaseException:
            self.stop()
            raise
        return infos

    def _spawn(self, stream_xml: list[str]) -> None:
        import acquisition  # noqa: PLC0415

        root = str(Path(acquisition.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        r_fd, w_fd = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "acquisition.recorder", "--worker", str(w_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(w_fd,),
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal reaches this process only
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:
            os.close(r_fd)
            os.close(w_fd)
            raise DeviceError(f"cannot start the recording process: {exc}") from None
        os.close(w_fd)
        status = os.fdopen(r_fd, "r", encoding="utf-8", errors="replace")
        self._threads = [
            threading.Thread(target=self._read_output, name="labrecorder-output", daemon=True),
            threading.Thread(
                target=self._read_status, args=(status,), name="labrecorder-status", daemon=True
            ),
        ]
        for t in self._threads:
            t.start()
        request = {
            "path": str(self.path.resolve()),
            "streams": stream_xml,
        }
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # the worker died at once; reported below
        msg = self._wait_status({"started", "error"}, timeout=30.0)
        if msg is None or msg.get("event") != "started":
            reason = (msg or {}).get("message") or self._exit_reason()
            self._reap()
            raise DeviceError(
                f"LabRecorder could not start recording to {self.path}: {reason}; nothing was "
                "recorded"
            )

    def _wait_ready(self, n_streams: int) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._state.n_collecting >= n_streams or self._state.status_closed,
                timeout=self.ready_timeout_s,
            )
            n = self._state.n_collecting
        if self._state.status_closed:
            return  # the worker ended; stop() reports it
        if n < n_streams:
            logger.warning(
                "LabRecorder collects from %d of %d streams after %g s; recording goes on, and "
                "the others are written once they answer",
                n,
                n_streams,
                self.ready_timeout_s,
            )

    # -- worker I/O ---------------------------------------------------------------------------

    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            _lr_logger.debug("%s", line)
            with self._cond:
                self._state.tail = (self._state.tail + [line])[-20:]
                self._state.n_collecting += line.count(_STARTED)
                self._cond.notify_all()
            if "Error" in line or "ERR|" in line or "didn't" in line:
                logger.warning("LabRecorder: %s", line)

    def _read_status(self, stream) -> None:
        with stream:
            for line in stream:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                with self._cond:
                    self._state.status.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._state.status_closed = True
            self._cond.notify_all()
        self._wake.set()

    def _wait_status(self, events: set[str], timeout: float) -> dict | None:
        def found() -> dict | None:
            for msg in self._state.status:
                if msg.get("event") in events:
                    return msg
            return None

        with self._cond:
            self._cond.wait_for(lambda: found() or self._state.status_closed, timeout)
            return found()

    def _exit_reason(self) -> str:
        proc = self._proc
        if proc is None:
            return "not started"
        code = proc.poll()
        tail = "; ".join(self._state.tail[-3:])
        if code is None:
            what = "the recording process did not answer"
        elif code < 0:
            what = f"the recording process was killed by signal {-code}"
        else:
            what = f"the recording process exited with status {code}"
        return f"{what}{' (' + tail + ')' if tail else ''}"

    def _reap(self, timeout: float = 5.0) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for t in self._threads:
            t.join(5)

    # -- waiting and stopping -----------------------------------------------------------------

    def wait(self, duration_s: float | None = None) -> str:
        """Block until ``duration_s`` elapsed, :meth:`request_stop` is called, or the recording
        process ends by itself.

        Returns
        -------
        str
            ``"duration"``, ``"stop_requested"`` or ``"recorder_exited"``.
        """
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"duration_s must be > 0 seconds, got {duration_s}")
        if self._proc is None:
            raise ConfigError("the recording was not started; call start() first")
        self._wake.wait(duration_s)
        if self._stop_requested.is_set():
            return "stop_requested"
        if self._state.status_closed:
            return "recorder_exited"
        return "duration"

    def request_stop(self) -> None:
        """Make :meth:`wait` return now. Safe from any thread and from signal handlers."""
        self._stop_requested.set()
        self._wake.set()

    def stop(self) -> RecordingSummary:
        """Stop recording, finalise the XDF file and the sidecar; return what was written.

        Thread-safe and idempotent (a second call returns the same summary).

        Raises
        ------
        DeviceError
            The recording process failed; the message says what was written and where.
        FileFormatError
            The file cannot be read back.
        """
        self.request_stop()
        with self._lock:
            if self._summary is not None:
                return self._summary
            if self._proc is None:
                raise ConfigError("the recording was not started; call start() first")
            import pylsl  # noqa: PLC0415

            stop_lsl, stop_wall = pylsl.local_clock(), time.time()
            with _sigint_deferred(f"finishing {self.path}; please wait"):
                failure = self._finish_worker()
                meta, counts, read_error = None, (), None
                try:
                    meta, counts = read_back(self.path)
                except BciAffectError as exc:
                    read_error = str(exc)
                size = self.path.stat().st_size if self.path.exists() else 0
                error = failure or read_error
                status = "failed" if error else "complete"
                self._summary = RecordingSummary(
                    path=self.path,
                    sidecar=self.sidecar,
                    size_bytes=size,
                    streams=tuple(counts),
                    start_lsl=self._start_lsl,
                    stop_lsl=stop_lsl,
                    start_utc=_utc(self._start_wall),
                    stop_utc=_utc(stop_wall),
                    status=status,
                    error=error,
                )
                self._write_sidecar(status=status, error=error, streams=meta, summary=self._summary)
            if failure:
                counted = ", ".join(f"{s.name}: {s.n_samples} samples" for s in counts)
                raise DeviceError(
                    f"recording to {self.path} failed: {failure}; the file holds {size} bytes"
                    f"{' (' + counted + ')' if counted else ''}; the sidecar {self.sidecar} "
                    "lists the streams"
                )
            if read_error:
                raise FileFormatError(
                    f"recording stopped but {read_error}; {size} bytes were written to "
                    f"{self.path}; the sidecar {self.sidecar} lists the streams"
                )
            return self._summary

    def _finish_worker(self) -> str | None:
        """Tell the worker to stop and wait until the file is final. Returns a failure or None."""
        proc = self._proc
        assert proc is not None
        if proc.poll() is None and not self._state.status_closed:
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"stop": True, "drain_s": self.drain_s}) + "\n")
                proc.stdin.flush()
            except OSError:
                pass
        msg = self._wait_status({"finished", "error"}, timeout=self.finish_timeout_s)
        if msg is None and not self._state.status_closed:
            logger.error("LabRecorder did not finish %s in time; stopping it", self.path)
            self._reap(timeout=1.0)
            return (
                f"LabRecorder did not finish the file within {self.finish_timeout_s:g} s "
                "(stream footers may be missing; pyxdf still reads the data)"
            )
        self._reap()
        if msg is not None and msg.get("event") == "finished" and proc.returncode == 0:
            return None
        if msg is not None and msg.get("event") == "error":
            return str(msg.get("message"))
        return self._exit_reason()

    # -- sidecar ------------------------------------------------------------------------------

    def _base_sidecar(self, streams: list[dict]) -> dict:
        return {
            "format": "bci-affect recording sidecar",
            "format_version": SIDECAR_VERSION,
            "file": self.path.name,
            "status": "recording",
            "error": None,
            "subject": self.subject,
            "session": self.session,
            "board": self.board,
            "montage": self.montage,
            "software": _software_versions(),
            "host": socket.gethostname(),
            "config": self.config,
            "start": {"lsl_clock": self._start_lsl, "utc": _utc(self._start_wall)},
            "stop": None,
            "duration_s": None,
            "size_bytes": 0,
            "streams": streams,
        }

    def _write_sidecar(
        self,
        *,
        status: str,
        error: str | None = None,
        streams: list[dict] | None = None,
        summary: RecordingSummary | None = None,
    ) -> None:
        doc = dict(self._sidecar_base)
        doc["status"] = status
        doc["error"] = error
        if streams is not None:
            doc["streams"] = streams
            for key in ("board", "montage"):
                if doc[key] is None:
                    doc[key] = next((s["desc"][key] for s in streams if key in s["desc"]), None)
        if summary is not None:
            doc["stop"] = {"lsl_clock": summary.stop_lsl, "utc": summary.stop_utc}
            doc["duration_s"] = summary.duration_s
            doc["size_bytes"] = summary.size_bytes
        try:
            _write_json_atomic(self.sidecar, doc)
        except OSError as exc:
            logger.error("cannot write the sidecar %s: %s", self.sidecar, exc)


def record(
    path: str | os.PathLike,
    streams: Sequence[object] | None = None,
    *,
    duration_s: float | None = None,
    on_start=None,
    **kwargs: object,
) -> RecordingSummary:
    """Record until ``duration_s`` elapses or Ctrl-C (both end normally); return the summary.

    ``on_start(recorder)`` is called once recording runs. Other keyword arguments go to
    :class:`Recorder`.
    """
    rec = Recorder(path, streams, **kwargs)
    try:
        rec.start()
        if on_start is not None:
            on_start(rec)
        rec.wait(duration_s)
    except KeyboardInterrupt:
        if not rec.started:
            raise
        logger.info("interrupted; finishing %s", rec.path)
    return rec.stop()


# --------------------------------------------------------------------------------------------
# the recording process


def _worker_main(status_fd: int) -> int:
    """Own one ``labrecorder.Recording``: read the request on stdin, record until told to stop
    (or stdin closes), finalise the file, report on ``status_fd``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    status = os.fdopen(status_fd, "w", buffering=1, encoding="utf-8")

    def send(**msg: object) -> None:
        with contextlib.suppress(OSError):
            status.write(json.dumps(msg) + "\n")
            status.flush()

    line = sys.stdin.readline()
    if not line:
        return 0
    request = json.loads(line)
    try:
        import labrecorder  # noqa: PLC0415

        # Clock offsets are always collected: the pinned LabRecorder crashes when finishing a
        # file without them (collect_offsets=False), and multi-machine recordings need them.
        recording = labrecorder.Recording(request["path"], request["streams"])
    except Exception as exc:  # noqa: BLE001  (reported to the parent)
        send(event="error", message=f"{type(exc).__name__}: {exc}")
        return 1
    send(event="started")
    with recording:
        line = sys.stdin.readline()  # a stop request, or EOF when the parent is gone
        drain_s = 1.0
        with contextlib.suppress(ValueError, TypeError):
            drain_s = float(json.loads(line).get("drain_s", drain_s)) if line else drain_s
        # LabRecorder pulls every 0.5 s and does not drain its inlets when stopped.
        time.sleep(drain_s)
        send(event="stopping")
    del recording  # joins LabRecorder's threads: footers, clock offsets, file closed
    sys.stdout.flush()
    send(event="finished")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(int(sys.argv[2])))
    print("usage: python -m acquisition.recorder --worker FD (internal)", file=sys.stderr)
    sys.exit(2)
