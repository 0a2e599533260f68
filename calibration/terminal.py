"""The calibration session's labelling prompt on a terminal (``--ui terminal``).

A reader thread takes lines from ``input``. When the session shows a query the prompt is
printed and the participant types a valence rating (1-9, or ``s`` to skip) and then an arousal
rating; invalid input is asked again with a short reason. Status lines are printed at most
once every ``status_interval_s`` seconds and never while a question is open. End of input
stops reading quietly: the session goes on without answers.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from bci_affect.core.errors import ConfigError
from calibration.ui import (
    RATING_MAX,
    RATING_MIN,
    Answer,
    AnswerCallback,
    QueryView,
    SessionStatus,
    ShownCallback,
    check_rating,
)

__all__ = ["TerminalUI", "format_status"]

logger = logging.getLogger(__name__)

SKIP = "s"
VALENCE_PROMPT = f"valence {RATING_MIN}-{RATING_MAX} ({SKIP} = skip): "
AROUSAL_PROMPT = f"arousal {RATING_MIN}-{RATING_MAX}: "


def format_status(status: SessionStatus) -> str:
    """One compact line for ``status``, e.g. ``[01:05] 3 answered, 1 skipped of 20 | v1 | ...``."""
    m, s = divmod(int(max(0.0, status.elapsed_s)), 60)
    parts = [
        f"[{m:02d}:{s:02d}] {status.phase}: {status.answered} answered, "
        f"{status.skipped} skipped of {status.budget}",
        f"model v{status.model_version}" + (" personalising..." if status.personalising else ""),
    ]
    signal = []
    if status.eeg_quality is not None:
        signal.append(f"EEG {round(100 * status.eeg_quality)}%")
    if status.face_present is not None:
        signal.append("face " + ("yes" if status.face_present else "no"))
    if status.bad_channels:
        signal.append("bad " + ",".join(status.bad_channels))
    signal += [name for name, flag in (("blink", status.blink), ("muscle", status.muscle)) if flag]
    if signal:
        parts.append(" ".join(signal))
    if status.predicted is not None:
        u = "" if status.uncertainty is None else f" (u={status.uncertainty:.2f})"
        parts.append(f"pred {status.predicted}{u}")
    if status.message:
        parts.append(status.message)
    return " | ".join(parts)


class TerminalUI:
    """Questions and status on a text terminal (see the module docstring).

    Parameters
    ----------
    on_answer : callable(Answer)
        Called from the reader thread with the participant's ratings or skip.
    on_shown : callable(int, float)
        Called with ``(query_id, time.time())`` when a question's prompt has been printed.
    input, output : text files
        Where lines are read from and prompts written to (default: stdin / stdout).
    status_interval_s : float
        Least seconds between two printed status lines.
    """

    def __init__(
        self,
        on_answer: AnswerCallback,
        on_shown: ShownCallback,
        *,
        input: TextIO = sys.stdin,
        output: TextIO = sys.stdout,
        status_interval_s: float = 5.0,
    ) -> None:
        if not status_interval_s >= 0:
            raise ConfigError(f"status_interval_s must be >= 0 seconds, got {status_interval_s!r}")
        self._on_answer = on_answer
        self._on_shown = on_shown
        self._input = input
        self._output = output
        self._interval = float(status_interval_s)
        self._lock = threading.RLock()
        self._query: QueryView | None = None
        self._valence: int | None = None
        self._mid_line = False  # a prompt was written and no line has been read since
        self._last_status_t = -float("inf")
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading ``input`` in a daemon thread."""
        if self._thread is not None:
            return
        if self._closed:
            raise ConfigError("this TerminalUI was closed; create a new one")
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._read_loop, name="calibration-terminal")
        self._thread.daemon = True
        self._thread.start()
        self._write("Calibration: questions appear here; type a number and press Enter.\n")

    def close(self) -> None:
        """Stop reading and release the terminal (idempotent; input and output stay open)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._query = None
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = None

    def __enter__(self) -> TerminalUI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reading(self) -> bool:
        """Whether input is still being read (False after end of input or :meth:`close`)."""
        return self._thread is not None and self._thread.is_alive()

    # -- LabelUI ---------------------------------------------------------------------------

    def show_query(self, query: QueryView) -> None:
        """Print ``query``'s prompt and ask for valence (a question being asked is dropped)."""
        with self._lock:
            if self._closed:
                return
            lead = "\n" if self._mid_line else ""
            self._query = query
            self._valence = None
            self._write(
                f"{lead}\nQuestion {query.number} of {query.budget}: {query.prompt}\n"
                + VALENCE_PROMPT
            )
            self._mid_line = True
            t_wall = time.time()
        try:
            self._on_shown(query.query_id, t_wall)
        except Exception:
            logger.exception("on_shown failed for query %s", query.query_id)

    def clear_query(self, query_id: int) -> None:
        """Drop ``query_id`` if it is being asked: prints ``(question expired)``."""
        with self._lock:
            if self._query is None or self._query.query_id != query_id:
                return
            self._query = None
            self._valence = None
            lead = "\n" if self._mid_line else ""
            self._mid_line = False
            self._write(f"{lead}(question expired)\n")

    def update_status(self, status: SessionStatus) -> None:
        """Print ``status`` as one line unless a question is open or one was printed lately."""
        with self._lock:
            now = time.monotonic()
            if (
                self._closed
                or self._query is not None
                or now - self._last_status_t < self._interval
            ):
                return
            self._last_status_t = now
            self._write(format_status(status) + "\n")

    # -- input -----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            for line in self._lines():
                self._handle(line.strip())
        except Exception:
            logger.exception("reading the terminal failed; answers are no longer read")
        logger.info("terminal input ended; the session goes on without answers")

    def _lines(self) -> Iterator[str]:
        """Lines of ``input`` until end of input or :meth:`close`."""
        try:
            fd = self._input.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None:  # no file descriptor (e.g. io.StringIO): plain blocking reads
            while not self._closed and (line := self._input.readline()):
                yield line
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while not self._closed:
            ready, _, _ = select.select([fd, self._wake_r], [], [])
            if self._closed or fd not in ready:
                return
            try:
                data = os.read(fd, 4096)
            except OSError:  # e.g. the terminal went away (EIO)
                data = b""
            if not data:
                if pending:
                    yield pending
                return
            pending += decoder.decode(data)
            *lines, pending = pending.split("\n")
            yield from lines

    def _handle(self, text: str) -> None:
        answer: Answer | None = None
        with self._lock:
            self._mid_line = False
            q = self._query
            if self._closed:
                return
            if q is None:
                self._write("  (no question open)\n")
                return
            if text.lower() == SKIP:
                answer = Answer(q.query_id, None, None, True, time.time())
            elif self._valence is None:
                try:
                    self._valence = check_rating(_parse_int(text), "valence")
                except ValueError as exc:
                    self._ask(f"  {exc}\n" + VALENCE_PROMPT)
                    return
                self._ask(AROUSAL_PROMPT)
                return
            else:
                try:
                    arousal = check_rating(_parse_int(text), "arousal")
                except ValueError as exc:
                    self._ask(f"  {exc}\n" + AROUSAL_PROMPT)
                    return
                answer = Answer(q.query_id, self._valence, arousal, False, time.time())
            self._query = None
            self._valence = None
            self._write("  skipped\n" if answer.skipped else "  thank you\n")
        try:
            self._on_answer(answer)
        except Exception:
            logger.exception("on_answer failed for query %s", answer.query_id)

    # -- output ----------------------------------------------------------------------------

    def _ask(self, text: str) -> None:
        self._write(text)
        self._mid_line = True

    def _write(self, text: str) -> None:
        try:
            self._output.write(text)
            self._output.flush()
        except (OSError, ValueError):
            logger.debug("terminal output is closed")


def _parse_int(text: str) -> int | str:
    """``text`` as an int when it is one, else unchanged (for the error message)."""
    try:
        return int(text)
    except ValueError:
        return text
