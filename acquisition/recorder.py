"""Record LSL streams to XDF with LabRecorder (the ``labrecorder`` package), plus a JSON sidecar.

:class:`Recorder` records the selected streams into one XDF file::

    rec = Recorder("recordings/S01/ses1.xdf", ["EEG", "type=Markers"], board="cyton")
    rec.start()          # returns once LabRecorder collects from every stream
    ...                  # anything: a calibration session, rec.wait(duration_s=60), ...
    summary = rec.stop() # finalises the file and the sidecar; thread-safe, idempotent

Beside the file, ``<file stem>.json`` (see :func:`sidecar_path`) describes the recording: subject,
session, board, montage, software versions, the configuration, each stream with its metadata and
sample count, and start/stop times on the LSL clock and in UTC. It is written when the recording
starts (``"status": "recording"``) and again when it ends:

- ``"complete"``: stopped on request (:meth:`Recorder.stop`, Ctrl-C, SIGTERM, ``--duration``);
- ``"interrupted"``: the recording ended before anyone asked (this process was killed, or the
  recording process received SIGTERM); the file was finalised and holds everything up to then;
- ``"failed"``: the file may be incomplete (the recording process died, the disk filled up, a
  write failed); ``error`` says why, and the file holds what was written before.

Every write replaces the sidecar atomically (a temporary file, then ``os.replace``), so a kill
never leaves half a sidecar. While recording, the temporary file ``.<stem>.json.tmp`` holds a
few kB of disk space, so that the final state can be written even when the disk fills up.

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

The conversation with the recording process (JSON lines)
    This process writes the request (file, streams, sidecar), then a stop request with the stop
    time, and finally an acknowledgement once it has written the final sidecar. The recording process reports ``started``, ``stopping`` (with what ended the
    recording: ``stop``, ``parent_gone``, ``signal`` or ``storage``), then ``finished`` or
    ``error`` once the file is final, and waits for the acknowledgement. When its stdin closes
    without one, this process is gone and the recording process writes the final sidecar itself.
    It also watches the disk: when the disk is full or the file reaches the process's file-size
    limit (``ulimit -f``), LabRecorder's writes fail silently, so it stops recording at once and
    reports why.
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


def _json_messages(lines) -> Iterator[dict]:
    """The JSON objects among ``lines`` (one message per line; anything else is skipped)."""
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            yield msg


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_default(obj: object) -> object:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


def _write_json_atomic(path: Path, obj: Mapping, *, reserve: bool = False) -> None:
    """Replace ``path`` by ``obj`` as JSON, atomically: a kill leaves the old or the new file.

    The text is written into ``.<name>.tmp`` (reusing the space it already holds, see
    ``reserve``), synced, then renamed over ``path``. With ``reserve``, ``.<name>.tmp`` is then
    created again holding four times the text's size, so that the next write needs no new disk
    space: the final state of a recording can be written even when the disk is full.

    Raises
    ------
    OSError
        The file cannot be written; ``path`` is unchanged.
    """
    data = (json.dumps(obj, indent=2, default=_json_default) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if reserve:
        _reserve_space(tmp, 4 * len(data))


def _reserve_space(path: Path, n_bytes: int) -> None:
    """Allocate ``n_bytes`` (at least 8 KiB, whole 4 KiB blocks) of disk space to ``path``."""
    n_bytes = max(8192, -(-n_bytes // 4096) * 4096)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            os.posix_fallocate(fd, 0, n_bytes)
        finally:
            os.close(fd)
    except (OSError, AttributeError) as exc:  # AttributeError: no posix_fallocate (macOS)
        logger.debug("cannot reserve disk space for the sidecar in %s: %s", path, exc)


def _read_sidecar(path: Path) -> dict | None:
    """The sidecar as it is now (``None``: missing or unreadable)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


#: Less free space than this on the recording's file system (bytes) means writes fail.
_FULL_DISK_BYTES = 8192


def _storage_problem(path: Path) -> str | None:
    """Why writes to the recording ``path`` fail now, or ``None``.

    Two causes are recognised: the file reached this process's file-size limit
    (``RLIMIT_FSIZE``, ``ulimit -f``), or the file system has less than 8 kB free (what the
    current user may use). LabRecorder does not report failed writes: the file just stops
    growing.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return None
    try:
        import resource  # noqa: PLC0415  (POSIX only)

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and size >= limit:
            return (
                f"the file reached the size limit for files of this process ({limit} bytes, "
                "`ulimit -f`); raise it (`ulimit -f unlimited`) and record again"
            )
    except (ImportError, OSError, ValueError):
        pass
    try:
        st = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    free = blocks * st.f_frsize
    if free < _FULL_DISK_BYTES:
        return (
            f"the disk holding {path.parent} is full ({free} bytes free); free some space or "
            "record to another disk, then record again"
        )
    return None


def _xdf_incomplete(path: Path) -> str | None:
    """What is missing at the end of a finished XDF file, or ``None`` when it is whole.

    Walks the chunk headers only (no sample is decoded): the last chunk must end exactly at the
    end of the file, and every stream with a header must have its footer.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115  (closed below)
    except OSError as exc:
        return f"it cannot be opened ({exc.strerror or exc})"
    with f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != b"XDF:":
            return "it does not start with 'XDF:'"
        headers, footers = set(), set()
        pos = 4
        while pos < size:
            f.seek(pos)
            head = f.read(15)
            n_len = head[0]
            if n_len not in (1, 4, 8):
                return f"the chunk at byte {pos} is corrupt"
            if len(head) < 1 + n_len + 2:
                return f"it ends at byte {size}, inside the header of the chunk at byte {pos}"
            length = int.from_bytes(head[1 : 1 + n_len], "little")
            end = pos + 1 + n_len + length
            if end > size:
                return (
                    f"it ends at byte {size}, inside the chunk at byte {pos} that declares "
                    f"{length} bytes"
                )
            tag = int.from_bytes(head[1 + n_len : 3 + n_len], "little")
            if tag in (2, 6) and len(head) >= 7 + n_len:  # StreamHeader, StreamFooter
                stream_id = int.from_bytes(head[3 + n_len : 7 + n_len], "little")
                (headers if tag == 2 else footers).add(stream_id)
            pos = end
    missing = headers - footers
    if missing:
        return (
            f"it ends at byte {size} without the footer of {len(missing)} of its "
            f"{len(headers)} stream(s)"
        )
    return None


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
    """What a finished recording wrote.

    ``status`` is ``"complete"``, ``"interrupted"`` (ended before it was asked to; the file is
    final) or ``"failed"`` (the file may be incomplete); ``error`` says why when not complete.
    Times are seconds on the LSL clock (``*_lsl``) and ISO 8601 UTC (``*_utc``).
    """

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


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Drop every record of the logger ``name`` meanwhile."""
    lg = logging.getLogger(name)

    def drop(record: logging.LogRecord) -> bool:
        return False

    lg.addFilter(drop)
    try:
        yield
    finally:
        lg.removeFilter(drop)


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
        with _quiet_logger("pyxdf.pyxdf"):  # a damaged file is reported by the caller, once
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


def _early_end(cause: str | None, detail: object = None) -> str | None:
    """Why a recording ended before anyone asked, for ``cause`` as the recording process
    reports it (``None`` for a requested stop)."""
    if cause == "parent_gone":
        who = f" (pid {detail})" if detail else ""
        return (
            f"the recording command{who} ended without stopping the recording (it was killed or "
            "crashed); the recording process finalised the file up to then"
        )
    if cause == "signal":
        return (
            f"the recording process received {detail or 'a signal'}; it stopped recording and "
            "finalised the file up to then"
        )
    return None


def _summarise(
    path: Path,
    sidecar: Path,
    *,
    start: tuple[float, str],
    stop: tuple[float, str],
    failure: str | None = None,
    early: str | None = None,
) -> tuple[RecordingSummary, list[dict] | None, str | None]:
    """Read a finished recording back and judge it.

    Parameters
    ----------
    start, stop : (float, str)
        Seconds on the LSL clock and the same moment in UTC (ISO 8601).
    failure : str, optional
        Why the recording process failed (the file may be incomplete).
    early : str, optional
        Why the recording ended before anyone asked (the file was finalised).

    Returns
    -------
    summary : RecordingSummary
        ``status`` is ``"failed"`` (``failure``, an unreadable or incomplete file),
        ``"interrupted"`` (``early``) or ``"complete"``.
    streams : list of dict or None
        The streams' sidecar entries (``None`` when the file cannot be read).
    read_error : str or None
        Why the file cannot be read back.
    """
    meta, counts, read_error = None, (), None
    try:
        meta, counts = read_back(path)
    except BciAffectError as exc:
        read_error = str(exc)
    size = path.stat().st_size if path.exists() else 0
    status, error = "complete", None
    if failure or read_error:
        status, error = "failed", failure or read_error
    elif problem := _xdf_incomplete(path):
        cause = _storage_problem(path) or "a write failed (is the disk full?)"
        status, error = "failed", f"the file is incomplete ({problem}): {cause}"
    elif early:
        status, error = "interrupted", early
    summary = RecordingSummary(
        path=path,
        sidecar=sidecar,
        size_bytes=size,
        streams=tuple(counts),
        start_lsl=start[0],
        stop_lsl=stop[0],
        start_utc=start[1],
        stop_utc=stop[1],
        status=status,
        error=error,
    )
    return summary, meta, read_error


def _final_sidecar(base: Mapping, summary: RecordingSummary, streams: list[dict] | None) -> dict:
    """The sidecar of a finished recording: ``base`` (as written at the start) plus the outcome."""
    doc = dict(base)
    doc["status"] = summary.status
    doc["error"] = summary.error
    if streams is not None:
        doc["streams"] = streams
        for key in ("board", "montage"):
            if doc.get(key) is None:
                doc[key] = next((s["desc"][key] for s in streams if key in s["desc"]), None)
    doc["stop"] = {"lsl_clock": summary.stop_lsl, "utc": summary.stop_utc}
    doc["duration_s"] = summary.duration_s
    doc["size_bytes"] = summary.size_bytes
    return doc


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
    # When the recording process ended the recording by itself, before a stop was requested
    # here: (LSL clock, unix time).
    ended: tuple[float, float] | None = None

    @property
    def worker_done(self) -> bool:
        """The recording process finished (or failed), or it is gone."""
        return self.status_closed or any(m.get("event") in _DONE for m in self.status)


# Messages of the recording process after which it records nothing more.
_DONE = frozenset({"finished", "error"})


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
            self._write_sidecar(self._sidecar_base)
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
            # finished by the recording process if this process dies first
            "sidecar": str(self.sidecar.resolve()),
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
                lambda: self._state.n_collecting >= n_streams or self._state.worker_done,
                timeout=self.ready_timeout_s,
            )
            n = self._state.n_collecting
        if self._state.worker_done:
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
        import pylsl  # noqa: PLC0415

        with stream:
            for msg in _json_messages(stream):
                # e.g. SIGTERM to the recording process; not when this process was asked to
                # stop at the same time (systemd sends SIGTERM to both)
                by_itself = (
                    msg.get("event") == "stopping"
                    and msg.get("cause") != "stop"
                    and not self._stop_requested.is_set()
                )
                with self._cond:
                    if by_itself and self._state.ended is None:
                        self._state.ended = (pylsl.local_clock(), time.time())
                    self._state.status.append(msg)
                    self._cond.notify_all()
                if by_itself or msg.get("event") in _DONE:
                    self._wake.set()
        with self._cond:
            if self._state.ended is None and not self._stop_requested.is_set():
                self._state.ended = (pylsl.local_clock(), time.time())
            self._state.status_closed = True
            self._cond.notify_all()
        self._wake.set()

    def _send(self, msg: Mapping) -> None:
        """Write one message to the recording process (ignored when it is gone)."""
        with contextlib.suppress(OSError, ValueError):
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(msg, default=_json_default) + "\n")
            self._proc.stdin.flush()

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
            name = next((sig.name for sig in signal.Signals if sig == -code), "")
            what = f"the recording process was killed by signal {-code}"
            if name:
                what += f" ({name})"
            if -code in (signal.SIGKILL, signal.SIGTERM):
                return what  # killed from outside: LabRecorder's last words do not explain it
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
            ``"duration"``, ``"stop_requested"`` or ``"recorder_exited"`` (the recording
            process stopped by itself: it died, received SIGTERM, or the disk is full).
        """
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"duration_s must be > 0 seconds, got {duration_s}")
        if self._proc is None:
            raise ConfigError("the recording was not started; call start() first")
        self._wake.wait(duration_s)
        if self._stop_requested.is_set():
            return "stop_requested"
        if self._state.worker_done or self._state.ended is not None:
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
            The recording failed, or ended before it was asked to (``summary.status`` is
            ``"failed"`` or ``"interrupted"``); the message says why, what was written and where.
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

            stop_lsl, stop_wall = self._state.ended or (pylsl.local_clock(), time.time())
            with _sigint_deferred(f"finishing {self.path}; please wait"):
                failure, early = self._finish_worker(stop_lsl, stop_wall)
                summary, meta, read_error = _summarise(
                    self.path,
                    self.sidecar,
                    start=(self._start_lsl, _utc(self._start_wall)),
                    stop=(stop_lsl, _utc(stop_wall)),
                    failure=failure,
                    early=early,
                )
                self._summary = summary
                self._write_sidecar(_final_sidecar(self._sidecar_base, summary, meta))
                self._release_worker()
            self._raise_unless_complete(summary, read_error if not failure else None)
            return summary

    def _raise_unless_complete(self, summary: RecordingSummary, read_error: str | None) -> None:
        if summary.status == "complete":
            return
        if read_error:
            raise FileFormatError(
                f"recording stopped but {read_error}; {summary.size_bytes} bytes were written "
                f"to {self.path}; the sidecar {self.sidecar} lists the streams"
            )
        counted = ", ".join(f"{s.name}: {s.n_samples} samples" for s in summary.streams)
        what = "ended early" if summary.status == "interrupted" else "failed"
        raise DeviceError(
            f"recording to {self.path} {what}: {summary.error}; the file holds "
            f"{summary.size_bytes} bytes{' (' + counted + ')' if counted else ''}; the sidecar "
            f"{self.sidecar} lists the streams"
        )

    def _finish_worker(self, stop_lsl: float, stop_wall: float) -> tuple[str | None, str | None]:
        """Tell the worker to stop and wait until the file is final.

        Returns
        -------
        failure : str or None
            Why the recording failed.
        early : str or None
            Why it ended before it was asked to (the file is final).
        """
        proc = self._proc
        assert proc is not None
        if proc.poll() is None and not self._state.worker_done:
            self._send(
                {
                    "stop": True,
                    "drain_s": self.drain_s,
                    "stop_lsl": stop_lsl,
                    "stop_utc": _utc(stop_wall),
                }
            )
        msg = self._wait_status(_DONE, timeout=self.finish_timeout_s)
        if msg is None and not self._state.status_closed:
            logger.error("LabRecorder did not finish %s in time; stopping it", self.path)
            self._reap(timeout=1.0)
            return (
                f"LabRecorder did not finish the file within {self.finish_timeout_s:g} s "
                "(stream footers may be missing; pyxdf still reads the data)"
            ), None
        if msg is None:  # the worker is gone without a word
            self._reap()
            return self._exit_reason(), None
        if msg.get("event") == "error":
            return str(msg.get("message")), None
        if self._state.ended is None:
            return None, None  # it stopped because it was asked to
        return None, _early_end(msg.get("cause"), msg.get("detail"))

    def _release_worker(self) -> None:
        """Acknowledge the final sidecar (the worker then exits) and collect the worker."""
        self._send({"ack": True})
        self._reap()
        if self._proc is not None and self._proc.returncode not in (0, None):
            logger.debug("the recording process ended with status %s", self._proc.returncode)

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

    def _write_sidecar(self, doc: Mapping) -> None:
        """Replace the sidecar by ``doc``; space for the next write stays reserved while
        recording."""
        try:
            _write_json_atomic(self.sidecar, doc, reserve=doc.get("status") == "recording")
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


class _WorkerControl:
    """In the recording process: what ends the recording, and what the parent said.

    The first of these ends it (:meth:`end`): a stop request from the parent (``"stop"``), the
    end of stdin (``"parent_gone"``: the parent died), SIGTERM (``"signal"``), a full disk or
    the file-size limit (``"storage"``).
    """

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        self._lock = threading.Lock()  # never taken by the main thread outside signal handlers
        self.ended = threading.Event()
        self.answered = threading.Event()  # the parent acknowledged the final sidecar, or died
        self.acknowledged = False
        self.cause: str | None = None
        self.detail: object = None
        self.monotonic = self.wall = 0.0  # when the recording ended (time.monotonic, unix)
        self.drain_s = 1.0
        self.stop_times: tuple[float, str] | None = None  # the parent's stop time (LSL, UTC)

    def end(self, cause: str, detail: object = None) -> None:
        """Record what ended the recording (only the first call counts)."""
        with self._lock:
            if self.cause is not None:
                return
            self.cause, self.detail = cause, detail
            self.monotonic, self.wall = time.monotonic(), time.time()
        self.ended.set()

    def read_parent(self, stream) -> None:
        """Read the parent's messages until its end of the pipe closes."""
        for msg in _json_messages(stream):
            if msg.get("stop"):
                with contextlib.suppress(ValueError, TypeError):
                    self.drain_s = float(msg.get("drain_s", self.drain_s))
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    self.stop_times = (float(msg["stop_lsl"]), str(msg["stop_utc"]))
                self.end("stop")
            elif msg.get("ack"):
                self.acknowledged = True
                self.answered.set()
        self.end("parent_gone", self.parent_pid)
        self.answered.set()

    def watch_storage(self, path: Path, period_s: float = 0.5) -> None:
        """End the recording as soon as writes to ``path`` fail (checked every ``period_s``)."""
        while not self.ended.wait(period_s):
            problem = _storage_problem(path)
            if problem:
                self.end("storage", problem)


def _finish_orphaned(path: Path, sidecar: Path, control: _WorkerControl) -> None:
    """Write the final sidecar when the parent died before it did (the file is final).

    The sidecar the parent wrote when the recording started is the base; nothing is written
    when there is none, or when it already holds a final state.
    """
    base = _read_sidecar(sidecar)
    if base is None or base.get("status") != "recording":
        return
    try:
        start = (float(base["start"]["lsl_clock"]), str(base["start"]["utc"]))
    except (KeyError, TypeError, ValueError):
        return  # not a sidecar this program wrote
    import pylsl  # noqa: PLC0415

    if control.stop_times is not None:
        stop = control.stop_times
    else:
        stop_lsl = pylsl.local_clock() - (time.monotonic() - control.monotonic)
        stop = (stop_lsl, _utc(control.wall))
    summary, meta, _ = _summarise(
        path,
        sidecar,
        start=start,
        stop=stop,
        failure=control.detail if control.cause == "storage" else None,
        early=_early_end(control.cause, control.detail),
    )
    with contextlib.suppress(OSError):
        _write_json_atomic(sidecar, _final_sidecar(base, summary, meta))


def _worker_main(status_fd: int) -> int:
    """Own one ``labrecorder.Recording``: read the request on stdin, record until told to stop
    (or stdin closes, SIGTERM, a full disk), finalise the file, report on ``status_fd``; write
    the final sidecar when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    status = os.fdopen(status_fd, "w", buffering=1, encoding="utf-8")

    def send(**msg: object) -> None:
        with contextlib.suppress(OSError, ValueError):
            status.write(json.dumps(msg) + "\n")
            status.flush()

    control = _WorkerControl(os.getppid())
    line = sys.stdin.readline()
    if not line:
        return 0
    request = json.loads(line)
    path = Path(request["path"])
    # SIGTERM (`kill PID`) stops the recording cleanly, as the parent's stop request does
    signal.signal(
        signal.SIGTERM, lambda signum, _: control.end("signal", signal.Signals(signum).name)
    )
    try:
        import labrecorder  # noqa: PLC0415

        # Clock offsets are always collected: the pinned LabRecorder crashes when finishing a
        # file without them (collect_offsets=False), and multi-machine recordings need them.
        recording = labrecorder.Recording(request["path"], request["streams"])
    except Exception as exc:  # noqa: BLE001  (reported to the parent)
        send(event="error", message=f"{type(exc).__name__}: {exc}")
        return 1
    for target, args in ((control.read_parent, (sys.stdin,)), (control.watch_storage, (path,))):
        threading.Thread(target=target, args=args, daemon=True).start()
    send(event="started")
    with recording:
        while not control.ended.wait(0.5):  # wakes up for signal handlers too
            pass
        send(event="stopping", cause=control.cause, detail=control.detail)
        if control.cause != "storage":
            # LabRecorder pulls every 0.5 s and does not drain its inlets when stopped.
            time.sleep(control.drain_s)
    del recording  # joins LabRecorder's threads: footers, clock offsets, file closed
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the file is final: SIGTERM may end us now
    with contextlib.suppress(OSError, ValueError):  # the parent may be gone
        sys.stdout.flush()
    if control.cause == "storage":
        send(event="error", message=control.detail)
    else:
        send(event="finished", cause=control.cause, detail=control.detail)
    control.answered.wait()
    if not control.acknowledged and request.get("sidecar"):
        _finish_orphaned(path, Path(request["sidecar"]), control)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(int(sys.argv[2])))
    print("usage: python -m acquisition.recorder --worker FD (internal)", file=sys.stderr)
    sys.exit(2)
