"""The label store: subjects, calibration sessions, queries, answers and the model registry.

One SQLite file (stdlib :mod:`sqlite3`) in WAL mode with ``synchronous=FULL``: every method
that writes commits before it returns, so an answer is on disk as soon as :meth:`LabelStore.answer`
returns and a crashed session resumes with nothing lost. One connection is shared by the
session's threads behind a lock.

Times: columns ending in ``_wall`` are ``time.time()`` seconds; ``t_start``/``t_end`` of a
queried span, ``t_end`` of a window and a session's ``progress_t`` are LSL-clock seconds.

Tables (schema version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``):

``subjects``
    One row per participant id.
``sessions``
    One calibration session: its configuration (JSON), status (``running``, ``finished``,
    ``interrupted``), the LSL time of the last scored window (``progress_t``, to resume a
    replay), the label scheme and its class names.
``queries``
    Each question asked: the span ``[t_start, t_end)`` asked about, the policy's score and
    method, when it was triggered / shown / closed, its status (``open``, ``answered``,
    ``skipped``, ``expired``), the model version scoring the session then, and the live model's
    prediction for the span before any update used the answer (JSON, see :meth:`add_query`).
``answers``
    The reply to a query: SAM valence and arousal 1-9 (``NULL`` when skipped), when it came and
    the response time (``answered_wall - shown_wall``).
``query_windows``
    The model inputs of every window of a queried span (a dict of arrays as an ``.npz`` blob,
    loaded without pickle), so personalisation works after a resume.
``model_versions``
    The registry: ``(subject, version)`` with the checkpoint path (``NULL``: the bundled default
    model), the parent version, the number of labels it was trained with, the session that
    made it and its metrics (JSON). Version 0 is the subject's starting model.

Failures: a write that cannot be committed (disk full, an I/O error, the store locked by another
process for longer than the timeout, :data:`TIMEOUT_ENV`) raises :class:`StorageError`, whose
message names the file and what to do; what was committed before stays. A damaged file is
refused when opened (``PRAGMA quick_check``) and never written to.

The process that runs a session *holds* it (:meth:`LabelStore.hold_session`): an advisory lock
on ``<store>.locks/session-<id>.lock`` that the system releases when the process ends, even
when it is killed. A ``running`` session nobody holds was left by a process that died;
:meth:`LabelStore.close_abandoned` marks such sessions ``interrupted``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # no flock (Windows): sessions are not held, none is taken for abandoned
    fcntl = None  # type: ignore[assignment]

from bci_affect.core.errors import BciAffectError, ConfigError, FileFormatError
from calibration.ui import Answer

logger = logging.getLogger(__name__)

__all__ = [
    "QUERY_STATUSES",
    "SCHEMA_VERSION",
    "SESSION_STATUSES",
    "TIMEOUT_ENV",
    "AnswerRow",
    "LabelStore",
    "LabelledQuery",
    "ModelVersionRow",
    "QueryRow",
    "SessionRow",
    "StorageError",
    "WindowInputs",
    "check_subject",
    "decode_inputs",
    "encode_inputs",
]

#: The schema this code writes and reads (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of a label store ("BCIA"), to tell it from other SQLite files.
APPLICATION_ID = 0x42434941

SESSION_STATUSES = ("running", "finished", "interrupted")
QUERY_STATUSES = ("open", "answered", "skipped", "expired")

_SUBJECT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_NONE_KEY = "__none__"
#: Seconds a read or write waits for another process's transaction before giving up.
DEFAULT_TIMEOUT_S = 30.0
#: Environment variable that sets that wait (seconds).
TIMEOUT_ENV = "BCI_AFFECT_STORE_TIMEOUT_S"
#: Seconds :meth:`LabelStore.hold_session` retries a lock held for a moment by another process
#: checking whether the session is abandoned.
_HOLD_RETRY_S = 0.5

# SQLite primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``)
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26
_STORAGE_CODES = {
    _SQLITE_PERM,
    _SQLITE_BUSY,
    _SQLITE_LOCKED,
    _SQLITE_READONLY,
    _SQLITE_IOERR,
    _SQLITE_CORRUPT,
    _SQLITE_FULL,
    _SQLITE_CANTOPEN,
    _SQLITE_NOTADB,
}

#: One window of a queried span: ``(window_index, t_end, inputs)`` with ``t_end`` in LSL
#: seconds and ``inputs`` the model inputs by name (``face``, ``face_mask``, ``eeg_de``, ...).
WindowInputs = tuple[int, float, dict[str, np.ndarray | None]]

_SCHEMA = f"""
CREATE TABLE subjects (
    id TEXT PRIMARY KEY,
    created_wall REAL NOT NULL
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL REFERENCES subjects(id),
    name TEXT NOT NULL,
    started_wall REAL NOT NULL,
    ended_wall REAL,
    status TEXT NOT NULL CHECK (status IN {SESSION_STATUSES!r}),
    config TEXT NOT NULL,
    progress_t REAL,
    label_scheme TEXT NOT NULL,
    class_names TEXT NOT NULL
);
CREATE INDEX sessions_subject ON sessions(subject);
CREATE TABLE queries (
    id INTEGER PRIMARY KEY,
    session INTEGER NOT NULL REFERENCES sessions(id),
    number INTEGER NOT NULL,
    t_start REAL NOT NULL,
    t_end REAL NOT NULL CHECK (t_end > t_start),
    score REAL NOT NULL,
    method TEXT NOT NULL,
    triggered_wall REAL NOT NULL,
    shown_wall REAL,
    closed_wall REAL,
    status TEXT NOT NULL CHECK (status IN {QUERY_STATUSES!r}),
    model_version INTEGER NOT NULL,
    prediction TEXT NOT NULL,
    UNIQUE (session, number)
);
CREATE TABLE answers (
    query INTEGER PRIMARY KEY REFERENCES queries(id),
    valence INTEGER CHECK (valence BETWEEN 1 AND 9),
    arousal INTEGER CHECK (arousal BETWEEN 1 AND 9),
    skipped INTEGER NOT NULL CHECK (skipped IN (0, 1)),
    answered_wall REAL NOT NULL,
    response_s REAL
);
CREATE TABLE query_windows (
    query INTEGER NOT NULL REFERENCES queries(id),
    window_index INTEGER NOT NULL,
    t_end REAL NOT NULL,
    inputs BLOB NOT NULL,
    PRIMARY KEY (query, window_index)
);
CREATE TABLE model_versions (
    subject TEXT NOT NULL REFERENCES subjects(id),
    version INTEGER NOT NULL CHECK (version >= 0),
    path TEXT,
    created_wall REAL NOT NULL,
    parent INTEGER,
    n_labels INTEGER NOT NULL CHECK (n_labels >= 0),
    session INTEGER REFERENCES sessions(id),
    metrics TEXT NOT NULL,
    PRIMARY KEY (subject, version),
    FOREIGN KEY (subject, parent) REFERENCES model_versions(subject, version)
);
"""
_TABLES = {"subjects", "sessions", "queries", "answers", "query_windows", "model_versions"}


class StorageError(BciAffectError, RuntimeError):
    """The label store (or a session's files) cannot be written or read now: the disk is full,
    another process holds the store locked, an I/O error, or the file turned out damaged. The
    message names the file and what to do; everything committed before stays."""


def _timeout_s(value: float | None) -> float:
    """The lock wait in seconds: ``value``, else ``$BCI_AFFECT_STORE_TIMEOUT_S``, else 30."""
    if value is None:
        env = os.environ.get(TIMEOUT_ENV)
        if not env:
            return DEFAULT_TIMEOUT_S
        try:
            value = float(env)
        except ValueError:
            raise ConfigError(f"${TIMEOUT_ENV} must be seconds (a number), got {env!r}") from None
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ConfigError(f"the label store timeout must be >= 0 seconds, got {value!r}")
    return v


def _sqlite_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of ``exc`` (``None`` for other exceptions)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def damaged_message(path: Path, why: object) -> str:
    """What to say about a store file SQLite cannot read (it is left untouched)."""
    return (
        f"{path} is not a readable label store ({why}); it was left as it is: keep a copy "
        "(the sqlite3 shell's .recover may save its answers), then move it away or give "
        "calibrate another --data-dir"
    )


def storage_error(
    path: Path, exc: sqlite3.Error, *, timeout_s: float, opening: bool = False
) -> BciAffectError:
    """A one-line error for an SQLite failure on the store at ``path``: why, and what to do.

    Returns :class:`StorageError`, or :class:`FileFormatError` for a file found damaged while
    ``opening`` it.
    """
    code = _sqlite_code(exc)
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StorageError(
            f"the label store {path} is locked by another process (waited {timeout_s:g} s); "
            "close the other program using it (another bci-affect calibrate, a database "
            f"browser) and try again (${TIMEOUT_ENV} sets the wait)"
        )
    if code == _SQLITE_FULL:
        return StorageError(
            f"cannot write the label store {path}: the disk is full; free some space on it"
        )
    if code == _SQLITE_IOERR:
        return StorageError(
            f"cannot write the label store {path}: {exc}; the disk may be full (or a file size "
            "limit reached), failing or gone: check it"
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return (FileFormatError if opening else StorageError)(damaged_message(path, exc))
    if code in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN):
        return StorageError(
            f"cannot write the label store {path}: {exc}; check the permissions of the file "
            "and of its folder"
        )
    return StorageError(f"label store {path}: {exc}")


def _is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite failing on the file (not a constraint or a bad statement)."""
    return isinstance(exc, sqlite3.Error) and _sqlite_code(exc) in _STORAGE_CODES


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRow:
    """One calibration session.

    ``started_wall``/``ended_wall`` are ``time.time()`` seconds; ``progress_t`` is the LSL time
    of the last scored window (``None`` before the first); ``config`` is the session's
    configuration as given to :meth:`LabelStore.start_session`.
    """

    id: int
    subject: str
    name: str
    started_wall: float
    ended_wall: float | None
    status: str
    config: dict[str, Any]
    progress_t: float | None
    label_scheme: str
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class QueryRow:
    """One question: the span ``[t_start, t_end)`` (LSL seconds) and its life cycle.

    ``number`` is 1 for the session's first query; ``*_wall`` are ``time.time()`` seconds;
    ``prediction`` is the live model's averaged prediction for the span (see
    :meth:`LabelStore.add_query`).
    """

    id: int
    session: int
    number: int
    t_start: float
    t_end: float
    score: float
    method: str
    triggered_wall: float
    shown_wall: float | None
    closed_wall: float | None
    status: str
    model_version: int
    prediction: dict[str, Any]

    @property
    def span_s(self) -> float:
        """Length of the queried span, seconds."""
        return self.t_end - self.t_start


@dataclass(frozen=True)
class AnswerRow:
    """The reply to a query: SAM ratings 1-9 (``None`` when skipped), the time it came
    (``time.time()`` seconds) and the response time in seconds (``None`` if never shown)."""

    query: int
    valence: int | None
    arousal: int | None
    skipped: bool
    answered_wall: float
    response_s: float | None


@dataclass(frozen=True)
class LabelledQuery:
    """An answered query with its answer and the session's label scheme."""

    query: QueryRow
    answer: AnswerRow
    subject: str
    label_scheme: str
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class ModelVersionRow:
    """One registered model of a subject (``path`` ``None``: the bundled default model)."""

    subject: str
    version: int
    path: str | None
    created_wall: float
    parent: int | None
    n_labels: int
    session: int | None
    metrics: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Value checks and encodings
# --------------------------------------------------------------------------------------------


def check_subject(subject: Any) -> str:
    """``subject`` if it is a valid participant id (1-64 letters, digits, ``-``, ``_``)."""
    if not isinstance(subject, str) or not _SUBJECT_RE.fullmatch(subject):
        raise ConfigError(f"subject id must be 1-64 letters, digits, '-' or '_', got {subject!r}")
    return subject


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return v


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"{what} must be an integer >= 0, got {value!r}")
    return int(value)


def _jsonable(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones and non-finite floats as ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dumps(obj: Any, what: str) -> str:
    try:
        return json.dumps(_jsonable(obj), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be JSON-serialisable: {exc}") from None


def encode_inputs(inputs: Mapping[str, np.ndarray | None]) -> bytes:
    """A window's model inputs as ``.npz`` bytes (``None`` values kept, no pickle).

    Parameters
    ----------
    inputs : mapping of str to ndarray or None
        Arrays of any shape and numeric/bool/str dtype; scalars become 0-d arrays.

    Raises
    ------
    ConfigError
        A key that cannot be a file name in the archive, or an object array.
    """
    arrays: dict[str, np.ndarray] = {}
    none_keys: list[str] = []
    for key, value in inputs.items():
        if not isinstance(key, str) or not key or "/" in key or key == _NONE_KEY:
            raise ConfigError(
                f"model input names must be non-empty strings without '/', got {key!r}"
            )
        if value is None:
            none_keys.append(key)
            continue
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise ConfigError(
                f"model input {key!r} has dtype object; store numeric arrays (no pickled objects)"
            )
        arrays[key] = arr
    arrays[_NONE_KEY] = np.array(none_keys, dtype=np.str_)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def decode_inputs(blob: bytes) -> dict[str, np.ndarray | None]:
    """The inputs :func:`encode_inputs` wrote; :class:`FileFormatError` if the blob is bad."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            out: dict[str, np.ndarray | None] = {k: npz[k] for k in npz.files if k != _NONE_KEY}
            none_keys = npz[_NONE_KEY].tolist() if _NONE_KEY in npz.files else []
    except (ValueError, OSError, EOFError) as exc:
        raise FileFormatError(f"a stored window's model inputs are unreadable: {exc}") from None
    for key in none_keys:
        out[str(key)] = None
    return out


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------

_QUERY_COLS = (
    "id, session, number, t_start, t_end, score, method, triggered_wall, shown_wall, "
    "closed_wall, status, model_version, prediction"
)
_SESSION_COLS = (
    "id, subject, name, started_wall, ended_wall, status, config, progress_t, label_scheme, "
    "class_names"
)
_MODEL_COLS = "subject, version, path, created_wall, parent, n_labels, session, metrics"


def _session_row(r: Sequence[Any]) -> SessionRow:
    return SessionRow(
        id=r[0],
        subject=r[1],
        name=r[2],
        started_wall=r[3],
        ended_wall=r[4],
        status=r[5],
        config=json.loads(r[6]),
        progress_t=r[7],
        label_scheme=r[8],
        class_names=tuple(json.loads(r[9])),
    )


def _query_row(r: Sequence[Any]) -> QueryRow:
    return QueryRow(*r[:12], prediction=json.loads(r[12]))


def _answer_row(r: Sequence[Any]) -> AnswerRow:
    return AnswerRow(
        query=r[0],
        valence=r[1],
        arousal=r[2],
        skipped=bool(r[3]),
        answered_wall=r[4],
        response_s=r[5],
    )


def _model_row(r: Sequence[Any]) -> ModelVersionRow:
    return ModelVersionRow(*r[:7], metrics=json.loads(r[7]))


class LabelStore:
    """The calibration label store in one SQLite file (see the module docstring).

    Thread-safe: one connection guarded by a lock. Every write is committed before the
    method returns. Use as a context manager or call :meth:`close`.

    Parameters
    ----------
    path : path-like
        The database file; created (with its parent folders) when missing.
    timeout_s : float, optional
        How long a read or write waits for another process's transaction, seconds (default
        ``$BCI_AFFECT_STORE_TIMEOUT_S``, else 30).

    Raises
    ------
    FileFormatError
        The file is not SQLite, not a label store, damaged, or written by a newer schema; it
        is left untouched.
    StorageError
        The store is locked by another process, or cannot be written (disk full, I/O error,
        permissions).
    ConfigError
        The file cannot be created (a folder in the way, its folder cannot be made).
    """

    def __init__(self, path: str | os.PathLike, *, timeout_s: float | None = None) -> None:
        self.path = Path(path)
        self.timeout_s = _timeout_s(timeout_s)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._held: dict[int, int] = {}  # session id -> file descriptor of its lock
        self._check_file()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the folder of the label store {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=self.timeout_s
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the label store {self.path}: {exc}") from None
        try:
            self._conn = conn
            self._setup()
        except sqlite3.Error as exc:  # locked, read-only, disk full, damaged
            conn.close()
            self._conn = None
            if _is_storage_failure(exc):
                raise storage_error(
                    self.path, exc, timeout_s=self.timeout_s, opening=True
                ) from None
            raise FileFormatError(damaged_message(self.path, exc)) from None
        except BaseException:
            conn.close()
            self._conn = None
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, *, timeout_s: float | None = None) -> LabelStore:
        """Open (or create) the store at ``path``."""
        return cls(path, timeout_s=timeout_s)

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r})"

    def close(self) -> None:
        """Close the connection and let go of the sessions held (idempotent)."""
        with self._lock:
            for session_id in list(self._held):
                self._release(session_id)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- opening -------------------------------------------------------------------------

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise ConfigError(f"label store {self.path} is a folder; give a file path")
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read the label store {self.path}: {exc.strerror}") from None
        if head and head != _SQLITE_MAGIC:
            raise FileFormatError(
                f"{self.path} is not an SQLite file, so not a label store; it was left as it "
                "is: move it away, or give calibrate another --data-dir"
            )

    def _setup(self) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {round(self.timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # before anything is written: a damaged file is refused, never written to
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise FileFormatError(damaged_message(self.path, "; ".join(problems)))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version > SCHEMA_VERSION:
            raise FileFormatError(
                f"label store {self.path} has schema version {version}, newer than this "
                f"bci-affect reads ({SCHEMA_VERSION}); upgrade bci-affect"
            )
        if app_id not in (0, APPLICATION_ID) or (tables and version == 0):
            raise FileFormatError(
                f"{self.path} is an SQLite file of another program, not a label store; "
                "give another path"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("label store %s: journal mode %s, not WAL", self.path, mode)
        conn.execute("PRAGMA synchronous = FULL")
        if version == 0:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # another process may have created it while we waited for the lock
                if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        elif not _TABLES.issubset(tables):
            raise FileFormatError(
                f"label store {self.path} lacks tables {sorted(_TABLES - tables)}; "
                "the file is damaged"
            )

    # -- transactions --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigError(f"label store {self.path} is closed")
        return self._conn

    def _failure(self, exc: sqlite3.Error) -> BaseException:
        """``exc`` as the error to raise: a clear one for the file failing, else itself."""
        if _is_storage_failure(exc):
            return storage_error(self.path, exc, timeout_s=self.timeout_s)
        return exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``).

        Raises :class:`StorageError` when the file fails: locked past the timeout, disk full,
        I/O error, damaged. Nothing of the transaction is kept then.
        """
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failure(exc) from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # a COMMIT that failed (disk full) may have rolled the transaction back already
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and _is_storage_failure(exc):
                    raise self._failure(exc) from None
                raise

    def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                if _is_storage_failure(exc):
                    raise self._failure(exc) from None
                raise

    # -- subjects and sessions -----------------------------------------------------------

    def ensure_subject(self, subject: str) -> None:
        """Add ``subject`` if it is new (1-64 letters, digits, ``-``, ``_``; else ConfigError)."""
        check_subject(subject)
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO subjects (id, created_wall) VALUES (?, ?)",
                (subject, time.time()),
            )

    def subjects(self) -> list[str]:
        """Every subject id, sorted."""
        return [r[0] for r in self._read("SELECT id FROM subjects ORDER BY id")]

    def start_session(
        self,
        subject: str,
        *,
        name: str,
        config: Mapping[str, Any],
        label_scheme: str,
        class_names: Sequence[str],
        hold: bool = False,
    ) -> SessionRow:
        """Start a session of ``subject`` (added if new), status ``running``.

        ``config`` is stored as JSON (numpy values converted, non-finite floats as ``null``);
        ``class_names`` are the label scheme's classes in class-index order. With ``hold`` this
        process holds the session (:meth:`hold_session`) from before anyone can see it.
        """
        check_subject(subject)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"session name must be a non-empty string, got {name!r}")
        if not isinstance(label_scheme, str) or not label_scheme:
            raise ConfigError(f"label scheme must be a non-empty string, got {label_scheme!r}")
        names = [str(c) for c in class_names]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ConfigError(f"class_names must be >= 2 distinct names, got {names!r}")
        cfg = _dumps(dict(config), "session config")
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO subjects (id, created_wall) VALUES (?, ?)", (subject, now)
            )
            cur = conn.execute(
                "INSERT INTO sessions (subject, name, started_wall, status, config, "
                "label_scheme, class_names) VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (subject, name, now, cfg, label_scheme, json.dumps(names)),
            )
            sid = cur.lastrowid
            if hold and fcntl is not None and not self._try_hold(sid):
                raise StorageError(  # a process still running a session of a replaced file
                    f"another process holds {self._hold_path(sid)}; stop it, then try again"
                )
        return self.session(sid)

    def session(self, session_id: int) -> SessionRow:
        """The session ``session_id`` (ConfigError if there is none)."""
        rows = self._read(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise ConfigError(f"no calibration session {session_id!r} in {self.path}")
        return _session_row(rows[0])

    def sessions(self, subject: str | None = None) -> list[SessionRow]:
        """Every session (of ``subject`` when given), oldest first."""
        if subject is None:
            rows = self._read(f"SELECT {_SESSION_COLS} FROM sessions ORDER BY id")
        else:
            rows = self._read(
                f"SELECT {_SESSION_COLS} FROM sessions WHERE subject = ? ORDER BY id", (subject,)
            )
        return [_session_row(r) for r in rows]

    def latest_session(
        self, subject: str | None = None, *, unfinished_only: bool = True
    ) -> SessionRow | None:
        """The most recently started session (of ``subject``), only ``running`` or
        ``interrupted`` ones when ``unfinished_only``; ``None`` if there is none."""
        where, params = [], []
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if unfinished_only:
            where.append("status IN ('running', 'interrupted')")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            f"SELECT {_SESSION_COLS} FROM sessions {clause} ORDER BY id DESC LIMIT 1", params
        )
        return _session_row(rows[0]) if rows else None

    def end_session(self, session_id: int, status: str, *, t_wall: float | None = None) -> None:
        """End a session as ``finished`` or ``interrupted`` at ``t_wall`` (default now).

        Queries still open are closed as ``expired`` at the same time. A hold on the session
        (:meth:`hold_session`) is let go once this is committed.
        """
        if status not in ("finished", "interrupted"):
            raise ConfigError(f"a session ends 'finished' or 'interrupted', got {status!r}")
        t = time.time() if t_wall is None else _finite(t_wall, "t_wall")
        with self._write() as conn:
            self._require_session(conn, session_id)
            conn.execute(
                "UPDATE queries SET status = 'expired', closed_wall = ? "
                "WHERE session = ? AND status = 'open'",
                (t, session_id),
            )
            conn.execute(
                "UPDATE sessions SET status = ?, ended_wall = ? WHERE id = ?",
                (status, t, session_id),
            )
        with self._lock:
            if session_id in self._held:
                self._release(session_id)

    def reopen_session(self, session_id: int) -> SessionRow:
        """Mark an unfinished session ``running`` again (``ended_wall`` cleared).

        Raises ConfigError for a ``finished`` session. Its queries are left as they are.
        """
        with self._write() as conn:
            status = self._require_session(conn, session_id)
            if status == "finished":
                raise ConfigError(
                    f"calibration session {session_id} is finished; start a new session instead"
                )
            conn.execute(
                "UPDATE sessions SET status = 'running', ended_wall = NULL WHERE id = ?",
                (session_id,),
            )
        return self.session(session_id)

    # -- who runs a session ----------------------------------------------------------------

    def _hold_path(self, session_id: int) -> Path:
        return self.path.with_name(self.path.name + ".locks") / f"session-{int(session_id)}.lock"

    def _try_hold(self, session_id: int) -> bool:
        """Take the session's lock without waiting; ``False`` if another process has it (or
        the system has no ``flock``: then no session counts as abandoned)."""
        if fcntl is None:
            return False
        path = self._hold_path(session_id)
        try:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot create {path} (it marks a running session): {exc.strerror or exc}; "
                f"check the permissions of {path.parent.parent}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise StorageError(f"cannot lock {path}: {exc.strerror or exc}") from None
        self._held[session_id] = fd
        return True

    def _release(self, session_id: int) -> None:
        fd = self._held.pop(session_id, None)
        if fd is not None:
            os.close(fd)  # lets go of the lock

    def hold_session(self, session_id: int) -> None:
        """Mark the session as run by this process, until :meth:`end_session` or
        :meth:`close` (or the process ends, however it ends).

        Raises
        ------
        ConfigError
            No such session, or another process runs it now.
        StorageError
            The lock file cannot be made.
        """
        with self._lock:
            self._require_session(self._connection(), session_id)
            if session_id in self._held:
                return
            deadline = time.monotonic() + _HOLD_RETRY_S
            while fcntl is not None and not self._try_hold(session_id):
                if time.monotonic() >= deadline:
                    raise ConfigError(
                        f"calibration session {session_id} is running in another process "
                        f"(it holds {self._hold_path(session_id)}); stop that one first, or "
                        "wait for it to end"
                    )
                threading.Event().wait(0.05)

    def close_abandoned(self) -> list[SessionRow]:
        """End as ``interrupted`` every ``running`` session that no process holds (its process
        was killed or crashed), at the last time it recorded (its latest query, answer or
        model); their open queries expire then.

        Returns
        -------
        list of SessionRow
            The sessions closed, as they are now.
        """
        out = []
        rows = self._read("SELECT id FROM sessions WHERE status = 'running' ORDER BY id")
        for (session_id,) in rows:
            with self._lock:
                if session_id in self._held or not self._try_hold(session_id):
                    continue  # ours, or running in another process
                try:  # still running? It may have ended before we got hold of it
                    if self.session(session_id).status != "running":
                        continue
                    t_last = self._last_activity(session_id)
                    self.end_session(session_id, "interrupted", t_wall=t_last)
                finally:
                    self._release(session_id)
            out.append(self.session(session_id))
        return out

    def _last_activity(self, session_id: int) -> float:
        """The latest ``time.time()`` the session wrote: its start, queries, answers, models."""
        (t,) = self._read(
            "SELECT MAX(t) FROM ("
            "SELECT started_wall AS t FROM sessions WHERE id = :s "
            "UNION ALL SELECT MAX(triggered_wall, COALESCE(shown_wall, 0), "
            "COALESCE(closed_wall, 0)) FROM queries WHERE session = :s "
            "UNION ALL SELECT a.answered_wall FROM answers a JOIN queries q ON q.id = a.query "
            "WHERE q.session = :s "
            "UNION ALL SELECT created_wall FROM model_versions WHERE session = :s)",
            {"s": session_id},
        )[0]
        return float(t)

    def set_progress(self, session_id: int, t: float) -> None:
        """Record ``t``, the LSL time of the last scored window of the session."""
        t = _finite(t, "progress time")
        with self._write() as conn:
            self._require_session(conn, session_id)
            conn.execute("UPDATE sessions SET progress_t = ? WHERE id = ?", (t, session_id))

    def _require_session(self, conn: sqlite3.Connection, session_id: int) -> str:
        row = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no calibration session {session_id!r} in {self.path}")
        return row[0]

    # -- queries and answers -------------------------------------------------------------

    def add_query(
        self,
        session_id: int,
        *,
        t_start: float,
        t_end: float,
        score: float,
        method: str,
        model_version: int,
        prediction: Mapping[str, Any],
        triggered_wall: float | None = None,
    ) -> QueryRow:
        """Open a query about the span ``[t_start, t_end)`` (LSL seconds) of a running session.

        Parameters
        ----------
        score : float
            The policy's score of the span (e.g. teacher-student disagreement).
        method : str
            The policy that chose it.
        model_version : int
            The model version scoring the session when the query was triggered.
        prediction : dict
            The live model's prediction for the span, averaged over its windows, before any
            update used the answer: ``probs``, ``probs_teacher``, ``probs_student`` each a
            list of class probabilities in class-index order (or a ``{class: p}`` dict, or
            ``None`` when that model had no input). Stored as JSON.
        triggered_wall : float, optional
            When the policy fired (``time.time()`` seconds; default now).

        Returns
        -------
        QueryRow
            With ``number`` 1, 2, ... within the session and status ``open``.

        Raises
        ------
        ConfigError
            An unknown or ended session, a bad span, or a span overlapping an earlier query of
            the session.
        """
        t0 = _finite(t_start, "t_start")
        t1 = _finite(t_end, "t_end")
        if not t1 > t0:
            raise ConfigError(f"query span must have t_end > t_start, got [{t0}, {t1}]")
        score_f = _finite(score, "query score")
        if not isinstance(method, str) or not method:
            raise ConfigError(f"query method must be a non-empty string, got {method!r}")
        version = _count(model_version, "model_version")
        if not isinstance(prediction, Mapping):
            raise ConfigError(f"prediction must be a dict, got {type(prediction).__name__}")
        pred = _dumps(dict(prediction), "query prediction")
        t_wall = time.time() if triggered_wall is None else _finite(triggered_wall, "triggered")
        with self._write() as conn:
            status = self._require_session(conn, session_id)
            if status != "running":
                raise ConfigError(
                    f"calibration session {session_id} is {status}; resume it before asking"
                )
            clash = conn.execute(
                "SELECT number, t_start, t_end FROM queries WHERE session = ? "
                "AND t_start < ? AND ? < t_end ORDER BY number LIMIT 1",
                (session_id, t1, t0),
            ).fetchone()
            if clash is not None:
                raise ConfigError(
                    f"query span [{t0:.3f}, {t1:.3f}] overlaps query {clash[0]} "
                    f"[{clash[1]:.3f}, {clash[2]:.3f}] of session {session_id}; "
                    "a span is asked about once"
                )
            number = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM queries WHERE session = ?",
                (session_id,),
            ).fetchone()[0]
            cur = conn.execute(
                "INSERT INTO queries (session, number, t_start, t_end, score, method, "
                "triggered_wall, status, model_version, prediction) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)",
                (session_id, number, t0, t1, score_f, method, t_wall, version, pred),
            )
            qid = cur.lastrowid
            row = conn.execute(f"SELECT {_QUERY_COLS} FROM queries WHERE id = ?", (qid,))
            return _query_row(row.fetchone())

    def query(self, query_id: int) -> QueryRow:
        """The query ``query_id`` (ConfigError if there is none)."""
        rows = self._read(f"SELECT {_QUERY_COLS} FROM queries WHERE id = ?", (query_id,))
        if not rows:
            raise ConfigError(f"no query {query_id!r} in {self.path}")
        return _query_row(rows[0])

    def mark_shown(self, query_id: int, t_wall: float) -> None:
        """Record when the query went on screen (``time.time()`` s); the first call wins."""
        t = _finite(t_wall, "shown time")
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE queries SET shown_wall = ? WHERE id = ? AND shown_wall IS NULL",
                (t, query_id),
            )
            if (
                cur.rowcount == 0
                and not conn.execute("SELECT 1 FROM queries WHERE id = ?", (query_id,)).fetchone()
            ):
                raise ConfigError(f"no query {query_id!r} in {self.path}")

    def answer(self, answer: Answer) -> QueryRow:
        """Store the participant's reply; the query becomes ``answered`` or ``skipped``.

        Durable when this returns. The response time is ``answer.t_wall - shown_wall``
        (``None`` if the query was never marked shown).

        Idempotent: the same reply again (same ratings, or skipped again) returns the stored
        query unchanged, keeping the first reply's time.

        Raises
        ------
        ConfigError
            Unknown query, or a query already closed (expired, or answered differently).
        """
        if not isinstance(answer, Answer):
            raise ConfigError(f"answer must be a calibration.ui.Answer, got {answer!r}")
        t = _finite(answer.t_wall, "answer time")
        qid = answer.query_id
        with self._write() as conn:
            row = conn.execute(
                "SELECT status, shown_wall FROM queries WHERE id = ?", (qid,)
            ).fetchone()
            if row is None:
                raise ConfigError(f"no query {qid!r} in {self.path}")
            status, shown = row
            if status == "open":
                response = None if shown is None else t - shown
                conn.execute(
                    "INSERT INTO answers (query, valence, arousal, skipped, answered_wall, "
                    "response_s) VALUES (?, ?, ?, ?, ?, ?)",
                    (qid, answer.valence, answer.arousal, int(answer.skipped), t, response),
                )
                conn.execute(
                    "UPDATE queries SET status = ?, closed_wall = ? WHERE id = ?",
                    ("skipped" if answer.skipped else "answered", t, qid),
                )
            else:
                prev = conn.execute(
                    "SELECT valence, arousal, skipped FROM answers WHERE query = ?", (qid,)
                ).fetchone()
                same = prev is not None and (prev[0], prev[1], bool(prev[2])) == (
                    answer.valence,
                    answer.arousal,
                    answer.skipped,
                )
                if not same:
                    raise ConfigError(f"query {qid} is already {status}; it takes no other answer")
            out = conn.execute(f"SELECT {_QUERY_COLS} FROM queries WHERE id = ?", (qid,))
            return _query_row(out.fetchone())

    def expire(self, query_id: int, t_wall: float) -> bool:
        """Close an open query unanswered at ``t_wall`` (``time.time()`` s).

        Returns ``False`` (and changes nothing) when it was already closed, e.g. answered a
        moment before.
        """
        t = _finite(t_wall, "expiry time")
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE queries SET status = 'expired', closed_wall = ? "
                "WHERE id = ? AND status = 'open'",
                (t, query_id),
            )
            if cur.rowcount:
                return True
            if not conn.execute("SELECT 1 FROM queries WHERE id = ?", (query_id,)).fetchone():
                raise ConfigError(f"no query {query_id!r} in {self.path}")
            return False

    def open_query(self, session_id: int) -> QueryRow | None:
        """The session's most recent open query, or ``None``."""
        rows = self._read(
            f"SELECT {_QUERY_COLS} FROM queries WHERE session = ? AND status = 'open' "
            "ORDER BY number DESC LIMIT 1",
            (session_id,),
        )
        return _query_row(rows[0]) if rows else None

    def queries(self, session_id: int) -> list[QueryRow]:
        """Every query of the session, in order."""
        rows = self._read(
            f"SELECT {_QUERY_COLS} FROM queries WHERE session = ? ORDER BY number", (session_id,)
        )
        return [_query_row(r) for r in rows]

    def answers(self, session_id: int) -> list[AnswerRow]:
        """Every reply (answered and skipped) of the session, in query order."""
        rows = self._read(
            "SELECT a.query, a.valence, a.arousal, a.skipped, a.answered_wall, a.response_s "
            "FROM answers a JOIN queries q ON q.id = a.query WHERE q.session = ? "
            "ORDER BY q.number",
            (session_id,),
        )
        return [_answer_row(r) for r in rows]

    def answered(
        self, session_id: int | None = None, *, subject: str | None = None
    ) -> list[LabelledQuery]:
        """Answered (not skipped) queries with their answers, oldest session first and in
        query order; of one session, of one subject, or all when neither is given."""
        qcols = ", ".join(f"q.{c.strip()}" for c in _QUERY_COLS.split(","))
        where, params = ["q.status = 'answered'"], []
        if session_id is not None:
            where.append("q.session = ?")
            params.append(session_id)
        if subject is not None:
            where.append("s.subject = ?")
            params.append(subject)
        rows = self._read(
            f"SELECT {qcols}, a.query, a.valence, a.arousal, a.skipped, a.answered_wall, "
            "a.response_s, s.subject, s.label_scheme, s.class_names "
            "FROM queries q JOIN answers a ON a.query = q.id JOIN sessions s ON s.id = q.session "
            f"WHERE {' AND '.join(where)} ORDER BY q.session, q.number",
            params,
        )
        return [
            LabelledQuery(
                query=_query_row(r[:13]),
                answer=_answer_row(r[13:19]),
                subject=r[19],
                label_scheme=r[20],
                class_names=tuple(json.loads(r[21])),
            )
            for r in rows
        ]

    def counts(self, session_id: int) -> dict[str, int]:
        """Queries of the session by status: ``answered``, ``skipped``, ``expired``, ``open``,
        and their ``total``."""
        out = dict.fromkeys(QUERY_STATUSES, 0)
        for status, n in self._read(
            "SELECT status, COUNT(*) FROM queries WHERE session = ? GROUP BY status",
            (session_id,),
        ):
            out[status] = n
        out["total"] = sum(out[s] for s in QUERY_STATUSES)
        return out

    # -- window inputs -------------------------------------------------------------------

    def add_query_windows(self, query_id: int, windows: Iterable[WindowInputs]) -> None:
        """Store the model inputs of the windows of a queried span (one transaction).

        Parameters
        ----------
        windows : iterable of (window_index, t_end, inputs)
            ``window_index`` the engine's window counter, ``t_end`` the window's end (LSL
            seconds), ``inputs`` the arrays by name (``None`` for a missing modality). A window
            stored before under the same index is replaced.
        """
        rows = []
        for item in windows:
            try:
                index, t_end, inputs = item
            except (TypeError, ValueError):
                raise ConfigError(
                    f"a window must be (window_index, t_end, inputs), got {item!r:.80}"
                ) from None
            if not isinstance(inputs, Mapping):
                raise ConfigError(f"window inputs must be a dict, got {type(inputs).__name__}")
            rows.append(
                (
                    query_id,
                    _count(index, "window_index"),
                    _finite(t_end, "window t_end"),
                    encode_inputs(inputs),
                )
            )
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM queries WHERE id = ?", (query_id,)).fetchone():
                raise ConfigError(f"no query {query_id!r} in {self.path}")
            conn.executemany(
                "INSERT OR REPLACE INTO query_windows (query, window_index, t_end, inputs) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )

    def load_query_windows(self, query_ids: Iterable[int]) -> dict[int, list[WindowInputs]]:
        """The stored windows of each query, by window index (a query without any: ``[]``)."""
        ids = [int(q) for q in query_ids]
        out: dict[int, list[WindowInputs]] = {q: [] for q in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._read(
                "SELECT query, window_index, t_end, inputs FROM query_windows "
                f"WHERE query IN ({marks}) ORDER BY query, window_index",
                chunk,
            )
            for qid, index, t_end, blob in rows:
                out[qid].append((index, t_end, decode_inputs(blob)))
        return out

    # -- model registry ------------------------------------------------------------------

    def register_model(
        self,
        subject: str,
        *,
        path: str | os.PathLike | None,
        parent: int | None,
        n_labels: int,
        session: int | None,
        metrics: Mapping[str, Any] | None = None,
    ) -> int:
        """Register a model of ``subject`` (added if new) and return its version.

        The first model of a subject is version 0 (its starting model; ``path`` ``None`` means
        the bundled default model); later ones count up. ``parent`` must be a registered
        version of the subject; ``n_labels`` is the number of labels it was trained with.
        """
        check_subject(subject)
        n = _count(n_labels, "n_labels")
        if parent is not None:
            parent = _count(parent, "parent version")
        m = _dumps(dict(metrics or {}), "model metrics")
        p = None if path is None else str(path)
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO subjects (id, created_wall) VALUES (?, ?)", (subject, now)
            )
            if session is not None:
                self._require_session(conn, session)
            if (
                parent is not None
                and not conn.execute(
                    "SELECT 1 FROM model_versions WHERE subject = ? AND version = ?",
                    (subject, parent),
                ).fetchone()
            ):
                raise ConfigError(f"subject {subject} has no model version {parent} to derive from")
            version = conn.execute(
                "SELECT COALESCE(MAX(version) + 1, 0) FROM model_versions WHERE subject = ?",
                (subject,),
            ).fetchone()[0]
            conn.execute(
                f"INSERT INTO model_versions ({_MODEL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (subject, version, p, now, parent, n, session, m),
            )
        return version

    def model_version(self, subject: str, version: int) -> ModelVersionRow:
        """One registered model (ConfigError if there is none)."""
        rows = self._read(
            f"SELECT {_MODEL_COLS} FROM model_versions WHERE subject = ? AND version = ?",
            (subject, version),
        )
        if not rows:
            raise ConfigError(f"subject {subject!r} has no model version {version!r}")
        return _model_row(rows[0])

    def latest_model(self, subject: str) -> ModelVersionRow | None:
        """The subject's newest model version, or ``None``."""
        rows = self._read(
            f"SELECT {_MODEL_COLS} FROM model_versions WHERE subject = ? "
            "ORDER BY version DESC LIMIT 1",
            (subject,),
        )
        return _model_row(rows[0]) if rows else None

    def model_versions(self, subject: str) -> list[ModelVersionRow]:
        """The subject's model versions, oldest first."""
        rows = self._read(
            f"SELECT {_MODEL_COLS} FROM model_versions WHERE subject = ? ORDER BY version",
            (subject,),
        )
        return [_model_row(r) for r in rows]
