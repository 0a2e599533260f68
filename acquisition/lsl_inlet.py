"""LSL inlets as a :class:`~bci_affect.core.source.Source`: resolve, select, read, recover.

:func:`resolve_streams` finds LSL streams by name, type or source id. A :class:`StreamSelector`
is the parsed form of a command-line stream choice (``EEG``, ``name=EEG``, ``type=FaceFeatures``,
``source_id=abc``, ``host=lab-pc``). :class:`LslSource` opens one inlet per selected stream and
yields :class:`~bci_affect.core.chunk.Chunk` objects as samples arrive.

Clock correction
    Every inlet is opened with liblsl's ``proc_clocksync`` post-processing: liblsl estimates the
    offset between the sender's clock and this machine's clock (``time_correction()``, re-
    estimated every few seconds and reset when the sender restarts) and adds it to every
    timestamp before it reaches Python. Chunk times are therefore on *this* machine's LSL clock,
    whatever clock the sender stamps with. Jitter removal (``proc_dejitter``) is off by default:
    it smooths timestamps with a running regression, which hides real gaps and delays; turn it
    on with ``dejitter=True`` for streams whose senders stamp with a coarse clock.

Stream loss and recovery
    A stream whose samples stop arriving (``stall_s`` for regular streams) or that stops
    answering discovery queries is reported lost; one that comes back with the same
    ``source_id`` is picked up again by liblsl. Both, and the data gap between them, are emitted
    as JSON strings on a ``<name>-events`` stream (type ``Markers``, one channel ``event``)::

        {"event": "stream_lost", "stream": "EEG", "t": 812.4, "last": 811.9}
        {"event": "stream_recovered", "stream": "EEG", "t": 815.0}
        {"event": "gap", "stream": "EEG", "start": 811.9, "end": 815.0}

    Times are seconds on the LSL clock. A stream gone for longer than ``lost_timeout_s`` ends
    the iteration with a :class:`~bci_affect.core.errors.DeviceError` (``None``: wait forever);
    so does, at once, one that comes back with other channels or another sample format
    (liblsl does not reconnect an inlet to it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeoutError

from acquisition.lsl import from_lsl_info
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError, DeviceError, StreamNotFoundError

logger = logging.getLogger(__name__)

#: Selector keys and the LSL stream-info field each one matches.
SELECTOR_KEYS = {"name": "name", "type": "type", "source_id": "source_id", "host": "hostname"}

#: A regular stream silent for this long (seconds) is checked for presence on the network.
STALL_S = 1.0
#: How long (seconds) one presence check waits for the stream to answer.
PRESENCE_TIMEOUT_S = 1.0
#: Irregular streams (markers) are checked for presence at most this often while silent.
PRESENCE_INTERVAL_S = 2.0
#: Time (seconds) to keep listening after the first match, so that every matching stream answers.
RESOLVE_SETTLE_S = 0.2
#: Chunks waiting for the consumer before the reader threads pause (liblsl buffers the rest).
MAX_QUEUED_CHUNKS = 4096

_RAISE_ENV = "BCI_AFFECT_RAISE_STREAM_ERRORS"


# --------------------------------------------------------------------------------------------
# selection and discovery


def _xpath_literal(value: str) -> str:
    """``value`` as an XPath 1.0 string literal (XPath has no escapes; use concat for quotes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    parts = value.split("'")
    return "concat(" + ', "\'", '.join(f"'{p}'" for p in parts) + ")"


@dataclass(frozen=True)
class StreamSelector:
    """One choice of LSL stream(s): a field and the value it must equal.

    Parameters
    ----------
    key : str
        ``"name"``, ``"type"``, ``"source_id"``, ``"host"`` or ``"any"`` (a bare word, which
        matches the name or the type).
    value : str
        The value to match exactly (case-sensitive, as LSL does).
    """

    key: str
    value: str

    def __post_init__(self) -> None:
        if self.key != "any" and self.key not in SELECTOR_KEYS:
            raise ConfigError(
                f"unknown stream selector key {self.key!r}; valid: "
                f"{', '.join(SELECTOR_KEYS)}, or a bare word that matches name or type"
            )
        if not self.value:
            raise ConfigError(f"stream selector {self.key}= needs a value, e.g. {self.key}=EEG")

    @classmethod
    def parse(cls, text: str | StreamSelector) -> StreamSelector:
        """Parse ``EEG``, ``name=EEG``, ``type=FaceFeatures``, ``source_id=abc`` or ``host=pc``.

        Raises
        ------
        ConfigError
            Empty text, an unknown key or an empty value.
        """
        if isinstance(text, StreamSelector):
            return text
        if not isinstance(text, str):
            raise ConfigError(f"a stream selector must be a string, got {type(text).__name__}")
        text = text.strip()
        if not text:
            raise ConfigError(
                "empty stream selector; use e.g. EEG, name=EEG, type=EEG or source_id=ID"
            )
        key, sep, value = text.partition("=")
        if not sep:
            return cls("any", text)
        key = key.strip().lower()
        if key == "hostname":
            key = "host"
        if key not in SELECTOR_KEYS:
            raise ConfigError(
                f"stream selector {text!r}: unknown key {key!r}; valid: "
                f"{', '.join(k + '=' for k in SELECTOR_KEYS)} or a bare word (name or type)"
            )
        return cls(key, value.strip())

    def predicate(self) -> str:
        """The liblsl XPath predicate for this selector, e.g. ``name='EEG' or type='EEG'``."""
        lit = _xpath_literal(self.value)
        if self.key == "any":
            return f"name={lit} or type={lit}"
        return f"{SELECTOR_KEYS[self.key]}={lit}"

    def matches(self, info: pylsl.StreamInfo) -> bool:
        """Whether a resolved ``pylsl.StreamInfo`` satisfies this selector."""
        if self.key == "any":
            return self.value in (info.name(), info.type())
        return getattr(info, SELECTOR_KEYS[self.key])() == self.value

    def __str__(self) -> str:
        return self.value if self.key == "any" else f"{self.key}={self.value}"


def describe_stream(info: pylsl.StreamInfo) -> str:
    """One line about a resolved stream: name, type, channels, rate, format, source id, host."""
    rate = info.nominal_srate()
    rate_s = f"{rate:g} Hz" if rate > 0 else "irregular"
    fmt = lsl_format_name(info.channel_format())
    return (
        f"{info.name()!r} (type {info.type()!r}, {info.channel_count()} ch, {rate_s}, {fmt}, "
        f"source_id {info.source_id()!r}, host {info.hostname()!r})"
    )


def lsl_format_name(channel_format: int) -> str:
    """The bci-affect name (``float32``, ``string``...) of a pylsl channel-format code."""
    names = {
        pylsl.cf_float32: "float32",
        pylsl.cf_double64: "double64",
        pylsl.cf_string: "string",
        pylsl.cf_int32: "int32",
        pylsl.cf_int16: "int16",
        pylsl.cf_int8: "int8",
        pylsl.cf_int64: "int64",
    }
    return names.get(channel_format, f"format{channel_format}")


def _unique(infos: Iterable[pylsl.StreamInfo]) -> list[pylsl.StreamInfo]:
    seen: set[str] = set()
    out = []
    for info in infos:
        if info.uid() not in seen:
            seen.add(info.uid())
            out.append(info)
    return out


def _resolve_predicate(predicate: str, timeout_s: float, settle_s: float) -> list[pylsl.StreamInfo]:
    found = pylsl.resolve_bypred(predicate, 1, timeout_s)
    if found and settle_s > 0:
        # resolve_bypred returns with the first answer; listen briefly for the others.
        found = found + pylsl.resolve_bypred(predicate, 1_000_000, settle_s)
    return _unique(found)


def _not_found(what: str, timeout_s: float) -> StreamNotFoundError:
    visible = _unique(pylsl.resolve_streams(wait_time=min(1.0, timeout_s)))
    if visible:
        have = "; ".join(describe_stream(i) for i in visible)
        hint = "choose one of these, or start the missing stream"
    else:
        have = "none"
        hint = (
            "start the program that publishes it (e.g. `bci-affect stream`), and check that "
            "this machine can reach it (same network, multicast or KnownPeers in lsl_api.cfg)"
        )
    return StreamNotFoundError(
        f"no LSL stream with {what} found within {timeout_s:g} s; visible now: {have}; {hint}"
    )


def resolve_streams(
    *,
    name: str | None = None,
    type: str | None = None,
    source_id: str | None = None,
    timeout_s: float = 5.0,
) -> list[pylsl.StreamInfo]:
    """Find LSL streams on the network.

    With criteria, waits until a matching stream answers (at most ``timeout_s``) and returns
    every stream matching *all* of them. Without criteria, listens for ``timeout_s`` and returns
    every stream visible (possibly none).

    Parameters
    ----------
    name, type, source_id : str, optional
        Exact values to match.
    timeout_s : float
        Seconds to wait.

    Returns
    -------
    list of pylsl.StreamInfo
        Resolved (short) stream infos, one per stream (deduplicated by uid).

    Raises
    ------
    StreamNotFoundError
        Criteria were given and no stream matched; the message lists the visible streams.
    ConfigError
        ``timeout_s`` is not positive.
    """
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    crit = {k: v for k, v in (("name", name), ("type", type), ("source_id", source_id)) if v}
    if not crit:
        return _unique(pylsl.resolve_streams(wait_time=timeout_s))
    predicate = " and ".join(f"{k}={_xpath_literal(v)}" for k, v in crit.items())
    settle = 0.0 if "source_id" in crit else RESOLVE_SETTLE_S
    found = _resolve_predicate(predicate, timeout_s, settle)
    if not found:
        raise _not_found(" and ".join(f"{k} {v!r}" for k, v in crit.items()), timeout_s)
    return found


def resolve_selectors(
    selectors: Iterable[str | StreamSelector] | None, *, timeout_s: float = 5.0
) -> list[pylsl.StreamInfo]:
    """Resolve each selector (each must match at least one stream); none = every visible stream.

    Raises
    ------
    StreamNotFoundError
        A selector matched nothing within ``timeout_s``, or (without selectors) no stream at all
        is visible. The message lists the streams that are visible.
    """
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    sels = [StreamSelector.parse(s) for s in (selectors or ())]
    if not sels:
        found = _unique(pylsl.resolve_streams(wait_time=timeout_s))
        if not found:
            raise StreamNotFoundError(
                f"no LSL streams visible after {timeout_s:g} s; start the program that "
                "publishes them (e.g. `bci-affect stream --board synthetic`) or wait longer "
                "(--timeout)"
            )
        return found
    out: list[pylsl.StreamInfo] = []
    for sel in sels:
        settle = 0.0 if sel.key == "source_id" else RESOLVE_SETTLE_S
        found = _resolve_predicate(sel.predicate(), timeout_s, settle)
        if not found:
            raise _not_found(f"selector {str(sel)!r}", timeout_s)
        if len(found) > 1:
            logger.info(
                "selector %r matches %d streams: %s",
                str(sel),
                len(found),
                ", ".join(describe_stream(i) for i in found),
            )
        out.extend(found)
    return _unique(out)


def user_lsl_config_exists() -> bool:
    """Whether liblsl will read a user configuration file (``LSLAPICFG`` or a standard path)."""
    if os.environ.get("LSLAPICFG"):
        return True
    candidates = [
        Path("lsl_api.cfg"),
        Path.home() / "lsl_api" / "lsl_api.cfg",
        Path("/etc/lsl_api/lsl_api.cfg"),
    ]
    return any(p.is_file() for p in candidates)


def quiet_liblsl() -> bool:
    """Silence liblsl's informational log lines on stderr (warnings and errors still show).

    Does nothing when the user has an LSL configuration file (it would be replaced), or when
    liblsl is older than 1.16. Must run before the first LSL call of the process.

    Returns
    -------
    bool
        Whether the configuration was applied.
    """
    if user_lsl_config_exists():
        return False
    try:
        pylsl.set_config_content("[log]\nlevel = -1\n")
    except (AttributeError, RuntimeError) as exc:  # pragma: no cover (old liblsl)
        logger.debug("could not configure liblsl logging: %s", exc)
        return False
    return True


# --------------------------------------------------------------------------------------------
# the source


def events_info_for(info: StreamInfo) -> StreamInfo:
    """The ``<name>-events`` stream that carries acquisition events of ``info``'s stream."""
    return StreamInfo(
        name=f"{info.name}-events",
        type="Markers",
        sfreq=0.0,
        ch_names=("event",),
        units=("",),
        source_id=f"{info.source_id}:events" if info.source_id else "",
        channel_format="string",
    )


class _Failure:
    """A reader thread's exception, passed through the queue to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Reader:
    """Pulls one inlet in its own thread and turns what arrives into chunks and events."""

    def __init__(self, source: LslSource, inlet: pylsl.StreamInlet, info: StreamInfo, host: str):
        self.source = source
        self.inlet = inlet
        self.info = info
        self.host = host
        self.events = source._events_info[info.name]
        self.thread = threading.Thread(target=self._run, name=f"lsl-inlet-{info.name}", daemon=True)
        # state (touched by the reader thread only)
        self.last_t: float | None = None  # last sample timestamp, LSL clock
        self.last_arrival = pylsl.local_clock()  # when the last samples arrived, LSL clock
        self.last_check = self.last_arrival
        self.lost_at: float | None = None  # LSL clock time the loss was detected
        self.gap_start: float | None = None
        gap = source.gap_threshold_s
        if gap is None and info.sfreq > 0:
            gap = max(0.1, 10.0 / info.sfreq)
        self.gap_s = gap

    # -- events -------------------------------------------------------------------------------

    def _emit(self, stamp: float, **fields: object) -> None:
        """Queue one event (JSON) on the events stream, timestamped ``stamp`` (LSL clock)."""
        fields = {"event": fields.pop("event"), "stream": self.info.name, **fields}
        text = json.dumps(fields)
        level = logging.INFO if fields["event"] != "gap" else logging.DEBUG
        logger.log(level, "%s", text)
        data = np.array([[text]], dtype=object)
        self.source._put(Chunk(data, np.array([stamp], dtype=np.float64), self.events))

    # -- presence -----------------------------------------------------------------------------

    def _find(self) -> list[pylsl.StreamInfo]:
        """This stream on the network now (by source id, else name, type and host)."""
        sid = self.info.source_id
        if sid:
            pred = f"source_id={_xpath_literal(sid)}"
        else:
            pred = (
                f"name={_xpath_literal(self.info.name)} and type={_xpath_literal(self.info.type)}"
                f" and hostname={_xpath_literal(self.host)}"
            )
        return pylsl.resolve_bypred(pred, 1, PRESENCE_TIMEOUT_S)

    def _visible(self) -> bool:
        return bool(self._find())

    def _check_layout(self, found: list[pylsl.StreamInfo]) -> None:
        """Raise when the stream came back with other channels or another sample format:
        liblsl does not reconnect an inlet to it, so waiting would never end."""
        for info in found:
            n, fmt = info.channel_count(), lsl_format_name(info.channel_format())
            if (n, fmt) != (self.info.n_chans, self.info.channel_format):
                raise DeviceError(
                    f"LSL stream {self.info.name!r} (source_id {self.info.source_id!r}) came "
                    f"back with {n} channels ({fmt}, {info.nominal_srate():g} Hz) instead of "
                    f"{self.info.n_chans} ({self.info.channel_format}, {self.info.sfreq:g} Hz); "
                    "a running reader cannot switch: start it again (e.g. `bci-affect run`) to "
                    "read the new layout"
                )

    def _mark_lost(self, now: float) -> None:
        self.lost_at = now
        self.gap_start = self.last_t if self.last_t is not None else now
        extra = {"last": self.last_t} if self.last_t is not None else {}
        self._emit(now, event="stream_lost", t=now, **extra)

    def _mark_recovered(self, t: float, first_t: float | None) -> None:
        self._emit(t, event="stream_recovered", t=t)
        end = first_t if first_t is not None else t
        assert self.gap_start is not None
        self._emit(end, event="gap", start=self.gap_start, end=end)
        self.lost_at = None
        self.gap_start = None

    # -- loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        src = self.source
        numeric = not self.info.is_string
        try:
            while not src._stopping.is_set():
                try:
                    samples, ts = self.inlet.pull_chunk(
                        timeout=src.poll_s, max_samples=1024, min_samples=1, as_numpy=numeric
                    )
                except LostError:
                    now = pylsl.local_clock()
                    if self.lost_at is None:
                        self._mark_lost(now)
                    raise DeviceError(
                        f"LSL stream {self.info.name!r} (source_id {self.info.source_id!r}) was "
                        "lost and recovery is off; restart the publisher and the reader, or "
                        "open the source with recover=True"
                    ) from None
                if len(ts):
                    self._on_data(samples, np.asarray(ts, dtype=np.float64))
                else:
                    self._on_idle()
        except BaseException as exc:  # noqa: BLE001 (passed to the consumer, who re-raises)
            if not isinstance(exc, DeviceError):
                # The consumer reports it (one line); the traceback is for --log-level DEBUG.
                logger.debug("reading LSL stream %r failed", self.info.name, exc_info=True)
            src._put(_Failure(exc), force=True)

    def _on_data(self, samples: object, ts: np.ndarray) -> None:
        now = pylsl.local_clock()
        self.last_arrival = now
        first = float(ts[0])
        if self.lost_at is not None:
            self._mark_recovered(first if self.info.sfreq > 0 else now, first)
        elif (
            self.gap_s is not None and self.last_t is not None and first - self.last_t > self.gap_s
        ):
            self._emit(first, event="gap", start=self.last_t, end=first)
        if self.gap_s is not None and ts.size > 1:
            for i in np.flatnonzero(np.diff(ts) > self.gap_s):
                self._emit(float(ts[i + 1]), event="gap", start=float(ts[i]), end=float(ts[i + 1]))
        self.last_t = float(ts[-1])
        if self.info.is_string:
            data = np.empty((self.info.n_chans, len(ts)), dtype=object)
            data[:, :] = np.array(samples, dtype=object).reshape(len(ts), -1).T
        else:
            data = np.array(np.asarray(samples).T, dtype=self.info.dtype, order="C", copy=True)
        self.source._put(Chunk(data, ts, self.info))

    def _on_idle(self) -> None:
        src = self.source
        now = pylsl.local_clock()
        quiet = now - self.last_arrival
        if self.lost_at is None:
            if self.info.sfreq > 0:
                due = quiet > max(STALL_S, 5.0 / self.info.sfreq) and (
                    now - self.last_check > PRESENCE_INTERVAL_S
                    or self.last_check < self.last_arrival
                )
            else:
                due = quiet > PRESENCE_INTERVAL_S and now - self.last_check > PRESENCE_INTERVAL_S
            if due:
                self.last_check = now
                found = self._find()
                self._check_layout(found)  # restarted at once with another layout
                if not found:
                    self._mark_lost(pylsl.local_clock())
            return
        # lost: irregular streams count as recovered as soon as they are visible again;
        # regular streams when their samples flow again (see _on_data). A stream back with
        # another layout is an error at once.
        if now - self.last_check > PRESENCE_INTERVAL_S:
            self.last_check = now
            found = self._find()
            self._check_layout(found)
            if found and self.info.sfreq == 0:
                self._mark_recovered(pylsl.local_clock(), None)
                return
        if src.lost_timeout_s is not None and now - self.lost_at > src.lost_timeout_s:
            raise DeviceError(
                f"LSL stream {self.info.name!r} (source_id {self.info.source_id!r}, host "
                f"{self.host!r}) has been gone for {src.lost_timeout_s:g} s; restart the "
                "program or device that publishes it (same source_id), or wait longer "
                "(lost_timeout_s, None = forever; `bci-affect run --lost-timeout S`)"
            )


class LslSource:
    """Reads one or several LSL streams as :class:`~bci_affect.core.chunk.Chunk` objects.

    Parameters
    ----------
    selectors : str, StreamSelector or sequence of them
        Which streams to read (see :class:`StreamSelector`); each must match at least one
        stream. Empty: every stream visible when the source opens.
    timeout_s : float
        Seconds to wait for each selector to match, and for each inlet to connect.
    max_buffered_s : float
        Seconds of data each inlet keeps while the consumer is busy (older samples are dropped
        by liblsl; regular streams then show a ``gap`` event).
    recover : bool
        Let liblsl reconnect to a stream that disappears and comes back with the same source id.
        When ``False``, a lost stream ends the iteration with a :class:`DeviceError`.
    poll_s : float
        Longest a reader thread blocks in one pull (it returns as soon as a sample arrives);
        bounds how quickly :meth:`stop` takes effect.
    dejitter : bool
        Apply liblsl's timestamp dejittering (off by default, see the module docstring).
    lost_timeout_s : float or None
        Seconds a lost stream may stay away before the iteration ends with a
        :class:`DeviceError`; ``None`` waits forever.
    gap_threshold_s : float or None
        A jump between consecutive timestamps of a regular stream larger than this is reported
        as a ``gap`` event. Default: ``max(0.1, 10 / sfreq)``.

    Notes
    -----
    ``streams`` lists each data stream followed by its ``<name>-events`` stream. Chunks of all
    streams come in arrival order; within a stream, in time order.
    """

    def __init__(
        self,
        selectors: str | StreamSelector | Sequence[str | StreamSelector] = (),
        *,
        timeout_s: float = 5.0,
        max_buffered_s: float = 360,
        recover: bool = True,
        poll_s: float = 0.05,
        dejitter: bool = False,
        lost_timeout_s: float | None = 30.0,
        gap_threshold_s: float | None = None,
    ) -> None:
        if isinstance(selectors, str | StreamSelector):
            selectors = [selectors]
        self.selectors = [StreamSelector.parse(s) for s in selectors]
        for label, value in (("timeout_s", timeout_s), ("poll_s", poll_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{label} must be a positive number of seconds, got {value}")
        if not max_buffered_s > 0:
            raise ConfigError(f"max_buffered_s must be > 0 seconds, got {max_buffered_s}")
        if lost_timeout_s is not None and not lost_timeout_s > 0:
            raise ConfigError(
                f"lost_timeout_s must be > 0 seconds or None (wait forever), got {lost_timeout_s}"
            )
        if gap_threshold_s is not None and not gap_threshold_s > 0:
            raise ConfigError(f"gap_threshold_s must be > 0 seconds or None, got {gap_threshold_s}")
        self.timeout_s = float(timeout_s)
        self.max_buffered_s = max_buffered_s
        self.recover = recover
        self.poll_s = float(poll_s)
        self.dejitter = dejitter
        self.lost_timeout_s = lost_timeout_s
        self.gap_threshold_s = gap_threshold_s
        self._streams: list[StreamInfo] = []
        self._events_info: dict[str, StreamInfo] = {}
        self._readers: list[_Reader] = []
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_CHUNKS)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._opened = False
        self._closed = False

    # -- protocol -----------------------------------------------------------------------------

    @property
    def streams(self) -> list[StreamInfo]:
        """Every stream this source yields (data streams and their events streams)."""
        return list(self._streams)

    def __enter__(self) -> LslSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Chunk]:
        own = not self._opened
        if own:
            self.open()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self.poll_s)
                except queue.Empty:
                    if self._stopping.is_set():
                        return
                    continue
                if isinstance(item, _Failure):
                    self._stopping.set()
                    exc = item.exc
                    if isinstance(exc, DeviceError) or os.environ.get(_RAISE_ENV) == "1":
                        raise exc
                    raise DeviceError(f"reading LSL streams failed: {exc}") from exc
                yield item
        finally:
            if own:
                self.close()

    def stop(self) -> None:
        """End the iteration soon (within ``poll_s``). Safe to call from any thread."""
        self._stopping.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Resolve the selectors, connect an inlet to each stream and start reading."""
        with self._lock:
            if self._opened:
                return
            if self._closed:
                raise ConfigError("this LslSource was closed; create a new one")
            found = resolve_selectors(self.selectors, timeout_s=self.timeout_s)
            flags = pylsl.proc_clocksync | (pylsl.proc_dejitter if self.dejitter else 0)
            readers = []
            try:
                for lsl_info in found:
                    inlet = pylsl.StreamInlet(
                        lsl_info,
                        max_buflen=max(1, math.ceil(self.max_buffered_s)),
                        recover=self.recover,
                        processing_flags=flags,
                    )
                    try:
                        # The first clock-offset estimate takes a few probes (~0.5 s). Made
                        # before subscribing, it holds up nothing: with proc_clocksync, liblsl
                        # would otherwise make it on the first pull, while samples queue up.
                        inlet.time_correction(timeout=self.timeout_s)
                        inlet.open_stream(timeout=self.timeout_s)
                        full = inlet.info(timeout=self.timeout_s)
                    except LslTimeoutError:
                        raise DeviceError(
                            f"could not connect to LSL stream {describe_stream(lsl_info)} "
                            f"within {self.timeout_s:g} s; check the network (firewall, "
                            "KnownPeers) or raise the timeout"
                        ) from None
                    except LostError:
                        raise DeviceError(
                            f"LSL stream {describe_stream(lsl_info)} disappeared while "
                            "connecting; restart its publisher and try again"
                        ) from None
                    logger.info("reading LSL stream %s", describe_stream(full))
                    readers.append((inlet, from_lsl_info(full), lsl_info.hostname()))
            except BaseException:
                for inlet, _, _ in readers:
                    inlet.close_stream()
                raise
            names = {info.name: info for _, info, _ in readers}
            if len(names) < len(readers):
                logger.warning(
                    "several selected LSL streams share a name; their chunks are told apart only "
                    "by info.source_id: %s",
                    ", ".join(f"{i.name!r} ({i.source_id!r})" for _, i, _ in readers),
                )
            streams: list[StreamInfo] = []
            for _, info, _ in readers:
                ev = events_info_for(info)
                upstream = names.get(ev.name)
                if upstream is not None and upstream.is_string and upstream.n_chans == 1:
                    ev = upstream  # the publisher's own events stream: report into it
                self._events_info[info.name] = ev
                streams.append(info)
                if ev is not upstream:
                    streams.append(ev)
            self._streams = streams
            self._readers = [_Reader(self, inlet, info, host) for inlet, info, host in readers]
            self._opened = True
            for r in self._readers:
                r.thread.start()

    def close(self) -> None:
        """Stop reading, join the reader threads and close the inlets."""
        with self._lock:
            self._stopping.set()
            if self._closed:
                return
            self._closed = True
            join_s = self.poll_s + PRESENCE_TIMEOUT_S + 2.0
            for r in self._readers:
                r.thread.join(join_s)
                if r.thread.is_alive():  # pragma: no cover (a wedged liblsl call)
                    logger.warning("reader of %r did not stop; leaving its inlet", r.info.name)
                    continue
                r.inlet.close_stream()

    # -- internals ----------------------------------------------------------------------------

    def _put(self, item: object, *, force: bool = False) -> None:
        """Queue an item for the consumer; waits while the queue is full unless stopping."""
        while True:
            try:
                self._queue.put(item, timeout=self.poll_s)
                return
            except queue.Full:
                if self._stopping.is_set() and not force:
                    return
                if force:  # a failure must reach the consumer: make room
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
