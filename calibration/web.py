"""The calibration session's labelling page: a small local web server (stdlib only).

:class:`WebUI` serves one self-contained HTML page (inline CSS and JavaScript, nothing fetched
from elsewhere) and pushes the session's state to it with server-sent events:

``GET /``
    The page.
``GET /events``
    ``text/event-stream``. On connect one ``state`` event (the open query or ``null`` and the
    latest status), then ``query``, ``clear`` and ``status`` events as they happen, a keep-alive
    comment when nothing was sent for ``keepalive_s`` seconds, and ``closed`` when the session
    ends.
``POST /answer``
    JSON ``{"query_id": int, "valence": 1-9, "arousal": 1-9}`` or ``{"query_id": int,
    "skip": true}``. 200 ``{"ok": true}`` once the answer is stored; 400 ``{"error": ...}`` for
    invalid input; 409 ``{"error": ..., "query": <open query or null>}`` when ``query_id`` is not
    the open query; 503 ``{"error": ...}`` when the answer could not be stored (disk full).
``POST /shown``
    JSON ``{"query_id": int}``, sent by the page once it has painted a query.

Bound to 127.0.0.1 by default. On any other address every request must carry
``?token=<token>`` (403 otherwise); :attr:`WebUI.url` includes it.
"""

from __future__ import annotations

import errno
import html
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bci_affect.core.errors import BciAffectError, ConfigError
from calibration.ui import (
    Answer,
    AnswerCallback,
    QueryView,
    SessionStatus,
    ShownCallback,
    check_rating,
)

__all__ = ["WebUI"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


#: Stimulus files the page can show, by suffix, with their content type.
STIMULUS_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".ogv": "video/ogg",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``"localhost"``) only accepts local connections."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Client:
    """One open ``/events`` stream: ordered query/clear events plus the latest status."""

    __slots__ = ("events", "status")

    def __init__(self) -> None:
        self.events: deque[str] = deque()
        self.status: str | None = None


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _BadRequest(Exception):
    """Invalid request body; the message goes back to the page."""


class WebUI:
    """The labelling page served on ``http://host:port/`` (see the module docstring).

    Parameters
    ----------
    on_answer : callable(Answer)
        Called from a server thread when the page submits a valid answer for the open query.
        The query is taken off screen before the call, so a second click cannot answer twice.
    on_shown : callable(int, float)
        Called with ``(query_id, time.time())`` when a page first reports a query on screen
        (once per query, however many tabs are open).
    host : str
        Address to bind; a non-loopback address makes a token mandatory.
    port : int
        TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    token : str or None
        Required as ``?token=`` on every request when given. Generated with
        ``secrets.token_urlsafe`` when ``host`` is not a loopback address and none is given.
    title : str
        The page's title and heading.
    keepalive_s : float
        Seconds without an event after which a keep-alive comment is sent (finds dead clients).
    stimuli : path-like, optional
        Folder of images and videos: ``GET /stimuli/<file name>`` serves them, and the page
        shows the one named by the status's phase (``"stimulus <file name>"``).
    """

    def __init__(
        self,
        on_answer: AnswerCallback,
        on_shown: ShownCallback,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        title: str = "bci-affect calibration",
        keepalive_s: float = 15.0,
        stimuli: str | os.PathLike | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be an integer 0-65535 (0 = any free port), got {port!r}")
        if not keepalive_s > 0:
            raise ConfigError(f"keepalive_s must be > 0 seconds, got {keepalive_s!r}")
        if token is not None and not token:
            raise ConfigError("token must be a non-empty string or None")
        self._on_answer = on_answer
        self._on_shown = on_shown
        self._host = host
        self._requested_port = port
        self._token = (
            token
            if token is not None
            else (None if is_loopback(host) else secrets.token_urlsafe(16))
        )
        self._title = title
        self._keepalive_s = float(keepalive_s)
        self._stimuli = {}
        if stimuli is not None:
            folder = Path(stimuli)
            if not folder.is_dir():
                raise ConfigError(f"stimulus folder {folder} does not exist")
            self._stimuli = {
                f.name: f
                for f in sorted(folder.iterdir())
                if f.is_file() and f.suffix.lower() in STIMULUS_TYPES
            }
        self._page = _PAGE.replace("{{TITLE}}", html.escape(title)).encode("utf-8")

        self._cond = threading.Condition()
        self._query: QueryView | None = None
        self._pushed_wall = 0.0  # time.time() when the open query was pushed
        self._shown_reported = False
        self._status: SessionStatus | None = None
        self._clients: list[_Client] = []
        self._closing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the server and serve in a daemon thread; returns once it accepts connections.

        Raises
        ------
        ConfigError
            The port is in use or the address cannot be bound.
        """
        if self._server is not None:
            return
        if self._closing:
            raise ConfigError("this WebUI was closed; create a new one")
        server_cls = _Server6 if ":" in self._host else _Server
        try:
            server = server_cls((self._host, self._requested_port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {self._requested_port} on {self._host} is already in use; "
                    "choose another with --port N, or --port 0 for any free port"
                ) from None
            raise ConfigError(
                f"cannot serve the labelling page on {self._host}:{self._requested_port} "
                f"({exc.strerror or exc}); check --host, or use 127.0.0.1"
            ) from None
        server.ui = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="calibration-web",
            daemon=True,
        )
        self._thread.start()
        logger.info("labelling page at %s", self.url)

    def close(self) -> None:
        """End every event stream and stop the server (idempotent)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        # The streams write their "closed" event and return; wait briefly for them.
        deadline = time.monotonic() + 2.0
        with self._cond:
            while self._clients and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)

    def __enter__(self) -> WebUI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (the requested one before :meth:`start`)."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def token(self) -> str | None:
        """The token every request must carry, or ``None`` when none is needed."""
        return self._token

    @property
    def url(self) -> str:
        """The page's address, with ``?token=...`` when a token is needed."""
        host = self._host
        if host in _WILDCARD_HOSTS:
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{self.port}/"
        return f"{url}?token={self._token}" if self._token else url

    @property
    def n_clients(self) -> int:
        """Open event streams (pages connected)."""
        with self._cond:
            return len(self._clients)

    # -- LabelUI ---------------------------------------------------------------------------

    def show_query(self, query: QueryView) -> None:
        """Put ``query`` on every page (replacing any other)."""
        with self._cond:
            self._query = query
            self._pushed_wall = time.time()
            self._shown_reported = False
            self._push(_sse("query", query.to_dict()))

    def clear_query(self, query_id: int) -> None:
        """Take ``query_id`` off the pages; no-op unless it is the open query."""
        with self._cond:
            if self._query is not None and self._query.query_id == query_id:
                self._clear_locked()

    def update_status(self, status: SessionStatus) -> None:
        """Send the latest status to every page (a slow page only gets the newest)."""
        data = _sse("status", status.to_dict())
        with self._cond:
            self._status = status
            for client in self._clients:
                client.status = data
            self._cond.notify_all()

    # -- used by the request handler ---------------------------------------------------------

    def _push(self, event: str) -> None:
        """Queue ``event`` for every client (caller holds ``_cond``)."""
        for client in self._clients:
            client.events.append(event)
        self._cond.notify_all()

    def _clear_locked(self) -> None:
        assert self._query is not None
        qid = self._query.query_id
        self._query = None
        self._push(_sse("clear", {"query_id": qid}))

    def _state(self) -> dict[str, Any]:
        return {
            "query": None if self._query is None else self._query.to_dict(),
            "status": None if self._status is None else self._status.to_dict(),
        }

    def _token_ok(self, path: str) -> bool:
        if self._token is None:
            return True
        given = parse_qs(urlsplit(path).query).get("token", [""])[0]
        return secrets.compare_digest(given.encode(), self._token.encode())

    def _answer(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Handle ``POST /answer``: (HTTP status, JSON reply)."""
        qid = _query_id(body)
        if body.get("skip") is True:
            extra = {"valence", "arousal"} & body.keys()
            if any(body[k] is not None for k in extra):
                raise _BadRequest("a skipped question carries no ratings")
            valence = arousal = None
        elif "skip" in body and body["skip"] not in (False, None):
            raise _BadRequest(f"skip must be true or false, got {body['skip']!r}")
        else:
            for key in ("valence", "arousal"):
                if key not in body:
                    raise _BadRequest(f"choose a {key} rating (1-9) or skip")
            try:
                valence = check_rating(body["valence"], "valence")
                arousal = check_rating(body["arousal"], "arousal")
            except ValueError as exc:
                raise _BadRequest(str(exc)) from None
        with self._cond:
            if self._query is None or self._query.query_id != qid:
                return HTTPStatus.CONFLICT, {
                    "error": f"question {qid} is no longer open",
                    **self._state(),
                }
            answer = Answer(qid, valence, arousal, valence is None, time.time())
            self._clear_locked()
        try:
            self._on_answer(answer)
        except BciAffectError as exc:  # not stored (e.g. the disk is full): never confirmed
            logger.error("the answer to question %s was not stored: %s", qid, exc)
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"The answer was not stored: {exc}"}
        except Exception:
            logger.exception("on_answer failed for query %s", qid)
        return HTTPStatus.OK, {"ok": True}

    def _shown(self, body: Any) -> tuple[int, dict[str, Any]]:
        """Handle ``POST /shown``: report the open query on screen once."""
        t_wall = time.time()
        qid = _query_id(body)
        with self._cond:
            if self._query is None or self._query.query_id != qid:
                return HTTPStatus.CONFLICT, {"error": f"question {qid} is no longer open"}
            first = not self._shown_reported
            self._shown_reported = True
            pushed = self._pushed_wall
        if first:
            _log_display_times(qid, pushed, body, t_wall)
            try:
                self._on_shown(qid, t_wall)
            except Exception:
                logger.exception("on_shown failed for query %s", qid)
        return HTTPStatus.OK, {"ok": True}

    def _stream(self, write: Any) -> None:
        """Serve one ``/events`` stream until the client goes away or the UI closes."""
        client = _Client()
        with self._cond:
            if self._closing:
                return
            self._clients.append(client)
            first = "retry: 1000\n" + _sse("state", self._state())
        try:
            write(first)
            while True:
                deadline = time.monotonic() + self._keepalive_s
                with self._cond:
                    while not (client.events or client.status or self._closing):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    chunks = list(client.events)
                    client.events.clear()
                    if client.status is not None:
                        chunks.append(client.status)
                        client.status = None
                    closing = self._closing
                if closing:
                    chunks.append(_sse("closed", {"message": "The session has ended."}))
                write("".join(chunks) if chunks else ": keep-alive\n\n")
                if closing:
                    return
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            logger.debug("event stream client went away")
        finally:
            with self._cond:
                self._clients.remove(client)
                self._cond.notify_all()


def _log_display_times(qid: int, pushed: float, body: dict, arrived: float) -> None:
    """Debug log: where a query's display time went (the page's clock is the host's on
    localhost; over a network the split is only indicative)."""
    received, painted = body.get("received_ms"), body.get("painted_ms")
    if not all(isinstance(t, int | float) for t in (received, painted)):
        return
    logger.debug(
        "query %d on screen: push -> page %.0f ms, page -> painted %.0f ms, painted -> "
        "server %.0f ms",
        qid,
        received - 1e3 * pushed,
        painted - received,
        1e3 * arrived - painted,
    )


def _query_id(body: Any) -> int:
    if not isinstance(body, dict):
        raise _BadRequest("the request body must be a JSON object")
    qid = body.get("query_id")
    if isinstance(qid, bool) or not isinstance(qid, int):
        raise _BadRequest(f"query_id must be an integer, got {qid!r}")
    return qid


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ui: WebUI


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "bci-affect"
    disable_nagle_algorithm = True  # events are small; send them at once

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._reply(status, json.dumps(data).encode(), "application/json")

    def _allowed(self) -> bool:
        if self.server.ui._token_ok(self.path):
            return True
        self._reply(
            HTTPStatus.FORBIDDEN,
            b"403 forbidden: open the address with ?token=... exactly as bci-affect printed it\n",
            "text/plain; charset=utf-8",
        )
        return False

    def do_GET(self) -> None:
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        ui = self.server.ui
        if path in ("/", "/index.html"):
            self._reply(HTTPStatus.OK, ui._page, "text/html; charset=utf-8")
        elif path == "/events":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def write(text: str) -> None:
                self.wfile.write(text.encode("utf-8"))
                self.wfile.flush()

            ui._stream(write)
        elif path.startswith("/stimuli/") and unquote(path[9:]) in ui._stimuli:
            f = ui._stimuli[unquote(path[9:])]  # only files listed at start: no traversal
            self._reply(HTTPStatus.OK, f.read_bytes(), STIMULUS_TYPES[f.suffix.lower()])
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        ui = self.server.ui
        routes = {"/answer": ui._answer, "/shown": ui._shown}
        if path not in routes:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._json(
                HTTPStatus.BAD_REQUEST,
                {"error": f"send a JSON body of 1-{MAX_BODY_BYTES} bytes with Content-Length"},
            )
            return
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        raw = self.rfile.read(length)
        if ctype != "application/json":
            self._json(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                {"error": f"Content-Type must be application/json, got {ctype or 'none'!r}"},
            )
            return
        try:
            body = json.loads(raw)
            status, reply = routes[path](body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            status, reply = HTTPStatus.BAD_REQUEST, {"error": "the request body is not JSON"}
        except _BadRequest as exc:
            status, reply = HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        self._json(status, reply)


_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title>
<style>
  :root { --bg:#f6f5f1; --card:#fff; --ink:#27313a; --muted:#6b7580; --accent:#3f6e8c;
          --accent-soft:#dce8f0; --line:#d9dcdf; --warn:#a05a2c; --ok:#3b7a57; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--ink);
         font:17px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
  header { display:flex; justify-content:space-between; align-items:center;
           padding:.8rem 1.5rem; border-bottom:1px solid var(--line); background:var(--card); }
  header h1 { font-size:1.1rem; font-weight:600; margin:0; }
  #connection { font-size:.9rem; color:var(--muted); }
  #connection[data-state="connected"]::before { content:"\25CF  "; color:var(--ok); }
  #connection[data-state="reconnecting"]::before { content:"\25CF  "; color:var(--warn); }
  main { display:grid; grid-template-columns:minmax(0,2fr) minmax(16rem,1fr); gap:1.5rem;
         max-width:72rem; margin:1.5rem auto; padding:0 1.5rem; }
  @media (max-width:50rem) { main { grid-template-columns:1fr; } }
  section { background:var(--card); border:1px solid var(--line); border-radius:10px;
            padding:1.5rem; }
  #idle { color:var(--muted); font-size:1.2rem; text-align:center; padding:3rem 0; }
  #number { color:var(--muted); font-size:.95rem; margin:0; }
  #prompt { font-size:1.45rem; margin:.3rem 0 1.2rem; font-weight:500; }
  .scale { margin:1.2rem 0; }
  .scale h3 { font-size:1rem; margin:0 0 .4rem; }
  .row { display:flex; gap:.4rem; flex-wrap:wrap; }
  .row button { width:3rem; height:3rem; font-size:1.1rem; border-radius:8px;
                border:1px solid var(--line); background:#fbfbfa; color:var(--ink); cursor:pointer; }
  .row button:hover { border-color:var(--accent); }
  .row button[aria-pressed="true"] { background:var(--accent); color:#fff; border-color:var(--accent); }
  .ends { display:flex; justify-content:space-between; max-width:30.2rem; color:var(--muted);
          font-size:.9rem; margin-top:.2rem; }
  .actions { display:flex; gap:.8rem; margin-top:1.5rem; }
  .actions button { font-size:1rem; padding:.6rem 1.6rem; border-radius:8px; cursor:pointer;
                    border:1px solid var(--accent); }
  #submit { background:var(--accent); color:#fff; }
  #submit:disabled { background:var(--line); border-color:var(--line); color:var(--muted);
                     cursor:not-allowed; }
  #skip { background:transparent; color:var(--accent); }
  button:focus-visible { outline:3px solid #e0a526; outline-offset:2px; }
  #error { color:var(--warn); min-height:1.5em; margin:.8rem 0 0; }
  #status h2 { font-size:1rem; margin:0 0 .6rem; }
  #status dl { display:grid; grid-template-columns:auto 1fr; gap:.25rem .8rem; margin:0;
               font-size:.95rem; }
  #status dt { color:var(--muted); }
  #status dd { margin:0; }
  progress { width:100%; height:.7rem; accent-color:var(--accent); }
  #personalising { color:var(--accent); font-size:.9rem; }
  #message { margin-top:.8rem; font-size:.95rem; }
  [hidden] { display:none !important; }
  #stimulus { grid-column:1 / -1; text-align:center; }
  #stimulus img, #stimulus video { max-width:100%; max-height:60vh; border-radius:8px; }
</style>
</head>
<body>
<header>
  <h1>{{TITLE}}</h1>
  <span id="connection" role="status" data-state="connecting">connecting...</span>
</header>
<main>
  <section id="stimulus" hidden aria-label="Stimulus"></section>
  <section id="query" aria-live="polite">
    <p id="idle">Relax - a question will appear here.</p>
    <form id="form" hidden>
      <p id="number"></p>
      <p id="prompt"></p>
      <div class="scale">
        <h3 id="valence-label">Valence: how pleasant did you feel?</h3>
        <div class="row" id="valence" role="group" aria-labelledby="valence-label"></div>
        <div class="ends"><span>1 unpleasant</span><span>9 pleasant</span></div>
      </div>
      <div class="scale">
        <h3 id="arousal-label">Arousal: how calm or excited did you feel?</h3>
        <div class="row" id="arousal" role="group" aria-labelledby="arousal-label"></div>
        <div class="ends"><span>1 calm</span><span>9 excited</span></div>
      </div>
      <div class="actions">
        <button type="submit" id="submit" disabled>Submit</button>
        <button type="button" id="skip">Skip</button>
      </div>
    </form>
    <p id="error" role="alert"></p>
  </section>
  <section id="status" aria-label="Session status">
    <h2>Session</h2>
    <dl>
      <dt>Subject</dt><dd id="subject">-</dd>
      <dt>Phase</dt><dd id="phase">-</dd>
      <dt>Elapsed</dt><dd id="elapsed">-</dd>
      <dt>Model</dt>
      <dd><span id="model-version">-</span> <span id="personalising" hidden>personalising...</span></dd>
    </dl>
    <p style="margin:.9rem 0 .2rem"><span id="progress-text">-</span></p>
    <progress id="progress" max="1" value="0" aria-label="Questions asked of budget"></progress>
    <h2 style="margin-top:1rem">Signal</h2>
    <dl id="quality">
      <dt>EEG quality</dt><dd id="eeg-quality">-</dd>
      <dt>Face</dt><dd id="face">-</dd>
      <dt>Bad channels</dt><dd id="bad-channels">-</dd>
      <dt>Artefacts</dt><dd id="artefacts">-</dd>
      <dt>Prediction</dt><dd id="prediction">-</dd>
    </dl>
    <p id="message"></p>
  </section>
</main>
<script>
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token");
const withToken = p => TOKEN ? p + "?token=" + encodeURIComponent(TOKEN) : p;
const $ = id => document.getElementById(id);
let current = null;              // the open query (object) or null
let choice = {valence: null, arousal: null};
let busy = false;

function buildRow(name) {
  const row = $(name);
  for (let v = 1; v <= 9; v++) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = String(v);
    b.dataset.value = String(v);
    b.setAttribute("aria-label", name + " " + v);
    b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", () => { choice[name] = v; refreshChoices(); });
    row.appendChild(b);
  }
}
function refreshChoices() {
  for (const name of ["valence", "arousal"]) {
    for (const b of $(name).children) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.value) === choice[name]));
    }
  }
  $("submit").disabled = busy || choice.valence === null || choice.arousal === null;
  $("skip").disabled = busy;
}
function showError(text) { $("error").textContent = text || ""; }

function renderQuery(q) {
  const same = current && q && current.query_id === q.query_id;
  current = q;
  if (!q) {
    $("form").hidden = true;
    $("idle").hidden = false;
    $("query").dataset.queryId = "";
    return;
  }
  if (!same) { choice = {valence: null, arousal: null}; busy = false; showError(""); }
  $("number").textContent = "Question " + q.number + " of " + q.budget;
  $("prompt").textContent = q.prompt;
  $("query").dataset.queryId = String(q.query_id);
  $("idle").hidden = true;
  $("form").hidden = false;
  refreshChoices();
  reportShown(q.query_id);
}
function reportShown(id) {
  // After the next paint: the question is on screen (a hidden tab paints when shown).
  const received = Date.now();
  requestAnimationFrame(() => setTimeout(() => {
    if (current && current.query_id === id)
      post("/shown", {query_id: id, received_ms: received, painted_ms: Date.now()}).catch(() => {});
  }, 0));
}

const pct = x => Math.round(100 * x) + "%";
const yesNo = x => x === null || x === undefined ? "-" : (x ? "yes" : "no");
function clock(s) {
  s = Math.max(0, Math.floor(s));
  const m = Math.floor(s / 60), r = s % 60;
  return m + ":" + String(r).padStart(2, "0");
}
let stimulus = null;
function renderStimulus(name) {
  if (name === stimulus) return;
  stimulus = name;
  const box = $("stimulus");
  box.replaceChildren();
  box.hidden = name === null;
  if (name === null) return;
  const video = /\.(mp4|webm|ogv)$/i.test(name);
  const el = document.createElement(video ? "video" : "img");
  el.src = withToken("/stimuli/" + encodeURIComponent(name));
  if (video) { el.autoplay = true; el.muted = true; el.loop = true; el.playsInline = true; }
  else el.alt = "stimulus";
  el.id = "stimulus-media";
  box.appendChild(el);
}
function renderStatus(s) {
  if (!s) return;
  $("subject").textContent = s.subject + (s.session ? " / " + s.session : "");
  $("phase").textContent = s.phase;
  renderStimulus(s.phase.startsWith("stimulus ") ? s.phase.slice(9) : null);
  $("elapsed").textContent = clock(s.elapsed_s) + (s.duration_s ? " of " + clock(s.duration_s) : "");
  $("model-version").textContent = "v" + s.model_version;
  $("personalising").hidden = !s.personalising;
  const asked = s.answered + s.skipped;
  $("progress").max = Math.max(1, s.budget);
  $("progress").value = Math.min(asked, Math.max(1, s.budget));
  $("progress-text").textContent =
    s.answered + " answered, " + s.skipped + " skipped, of " + s.budget;
  $("eeg-quality").textContent = s.eeg_quality === null ? "-" : pct(s.eeg_quality);
  $("face").textContent = yesNo(s.face_present);
  $("bad-channels").textContent = s.bad_channels.length ? s.bad_channels.join(", ") : "none";
  const flags = [];
  if (s.blink) flags.push("blink");
  if (s.muscle) flags.push("muscle");
  $("artefacts").textContent =
    s.blink === null && s.muscle === null ? "-" : (flags.length ? flags.join(", ") : "none");
  $("prediction").textContent = s.predicted === null ? "-" :
    s.predicted + (s.uncertainty === null ? "" : " (uncertainty " + pct(s.uncertainty) + ")");
  $("message").textContent = s.message || "";
}

async function post(path, body) {
  const r = await fetch(withToken(path), {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  let data = {};
  try { data = await r.json(); } catch (e) { /* empty reply */ }
  return {status: r.status, data: data};
}
async function send(body) {
  busy = true; refreshChoices(); showError("");
  try {
    const r = await post("/answer", body);
    if (r.status === 200) {
      if (current && current.query_id === body.query_id) renderQuery(null);
    } else if (r.status === 409) {
      renderQuery(r.data.query || null);
      showError((r.data.error || "That question is no longer open") + ".");
    } else {
      showError(r.data.error || ("The answer was not accepted (HTTP " + r.status + ")."));
    }
  } catch (e) {
    showError("Could not reach the session; please try again.");
  } finally {
    busy = false; refreshChoices();
  }
}
$("form").addEventListener("submit", ev => {
  ev.preventDefault();
  if (!current || busy || choice.valence === null || choice.arousal === null) return;
  send({query_id: current.query_id, valence: choice.valence, arousal: choice.arousal});
});
$("skip").addEventListener("click", () => {
  if (current && !busy) send({query_id: current.query_id, skip: true});
});

function setConnection(state, text) {
  $("connection").dataset.state = state;
  $("connection").textContent = text;
}
function connect() {
  const es = new EventSource(withToken("/events"));
  es.addEventListener("open", () => setConnection("connected", "connected"));
  es.addEventListener("error", () => {
    if (es.readyState !== EventSource.CLOSED) setConnection("reconnecting", "reconnecting...");
    else { setConnection("reconnecting", "reconnecting..."); setTimeout(connect, 2000); }
  });
  es.addEventListener("state", ev => {
    const d = JSON.parse(ev.data);
    setConnection("connected", "connected");
    renderQuery(d.query);
    renderStatus(d.status);
  });
  es.addEventListener("query", ev => renderQuery(JSON.parse(ev.data)));
  es.addEventListener("clear", ev => {
    const d = JSON.parse(ev.data);
    if (current && current.query_id === d.query_id) renderQuery(null);
  });
  es.addEventListener("status", ev => renderStatus(JSON.parse(ev.data)));
  es.addEventListener("closed", ev => {
    es.close();
    renderQuery(null);
    $("idle").textContent = JSON.parse(ev.data).message + " You can close this tab.";
    setConnection("closed", "session ended");
  });
}
buildRow("valence");
buildRow("arousal");
connect();
</script>
</body>
</html>
"""
