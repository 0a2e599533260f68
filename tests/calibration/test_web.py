"""The labelling web page, driven in Debian's chromium through playwright."""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found (apt-get install chromium, or bash scripts/setup.sh --dev as root)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')"
)
expect = sync_api.expect

from bci_affect.core.errors import ConfigError  # noqa: E402
from calibration.ui import Answer, QueryView, SessionStatus  # noqa: E402
from calibration.web import WebUI  # noqa: E402

TIMEOUT_S = 5.0
TIMEOUT_MS = 5000
PROMPT = "How did you feel during the last 8 seconds?"
IDLE = "Relax - a question will appear here."


class Recorder:
    """The two callbacks, with events to wait on."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.shown: list[tuple[int, float, float]] = []  # (query_id, t_wall, perf_counter)
        self.answered = threading.Event()
        self.shown_event = threading.Event()

    def on_answer(self, answer: Answer) -> None:
        self.answers.append(answer)
        self.answered.set()

    def on_shown(self, query_id: int, t_wall: float) -> None:
        self.shown.append((query_id, t_wall, time.perf_counter()))
        self.shown_event.set()

    def next_answer(self) -> Answer:
        assert self.answered.wait(TIMEOUT_S), "no answer delivered"
        self.answered.clear()
        return self.answers[-1]


def query(qid: int = 7, number: int = 3) -> QueryView:
    return QueryView(query_id=qid, span_s=8.0, prompt=PROMPT, number=number, budget=20)


def wait_until(predicate, timeout: float = TIMEOUT_S) -> bool:
    """Poll ``predicate`` every 10 ms until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


def request(url: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
    """GET (``body`` None) or POST JSON to ``path``; (HTTP status, decoded reply)."""
    full = url.split("?")[0].rstrip("/") + path + (f"?token={token}" if token else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(full, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, raw, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
    return status, json.loads(raw) if ctype.startswith("application/json") else raw.decode()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pw = sync_api.sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()
    finally:
        pw.stop()


@pytest.fixture
def context(browser) -> Iterator[Any]:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def ui(rec) -> Iterator[WebUI]:
    web = WebUI(rec.on_answer, rec.on_shown, keepalive_s=0.3)
    web.start()
    yield web
    web.close()


def open_page(context, ui: WebUI) -> Any:
    page = context.new_page()
    page.goto(ui.url)
    expect(page.locator("#connection")).to_have_text("connected")
    return page


def show(page, ui: WebUI, rec: Recorder, q: QueryView) -> None:
    rec.shown_event.clear()
    ui.show_query(q)
    expect(page.locator("#number")).to_have_text(f"Question {q.number} of {q.budget}")
    assert rec.shown_event.wait(TIMEOUT_S), "the page did not report the query shown"


def test_page_loads_self_contained(context, ui):
    requested: list[str] = []
    page = context.new_page()
    page.on("request", lambda r: requested.append(r.url))
    page.goto(ui.url)
    expect(page).to_have_title("bci-affect calibration")
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator("#query")).to_contain_text(IDLE)
    expect(page.locator("#form")).to_be_hidden()
    for sel in ("#status", "#progress", "#quality", "#model-version"):
        expect(page.locator(sel)).to_be_attached()
    origin = ui.url.rstrip("/")
    assert requested and all(u.startswith(origin) for u in requested), requested
    status, html = request(ui.url, "/")
    assert status == 200 and "<script src" not in html and "https://" not in html


def test_show_query_reaches_the_page_fast(context, ui, rec):
    page = open_page(context, ui)
    latencies = []
    for i in range(1, 6):
        rec.shown_event.clear()
        t0 = time.perf_counter()
        ui.show_query(query(qid=100 + i, number=i))
        assert rec.shown_event.wait(TIMEOUT_S), "no /shown POST"
        qid, t_wall, t1 = rec.shown[-1]
        assert qid == 100 + i and abs(t_wall - time.time()) < 1.0
        latencies.append(t1 - t0)
        expect(page.locator("#number")).to_have_text(f"Question {i} of 20")
        expect(page.locator("#prompt")).to_have_text(PROMPT)
        ui.clear_query(100 + i)
        expect(page.locator("#query")).to_contain_text(IDLE)
    print(
        f"show_query -> /shown: median {1000 * statistics.median(latencies):.1f} ms, "
        f"max {1000 * max(latencies):.1f} ms over {len(latencies)}"
    )
    # pushed, not polled: the typical query is on screen well within 200 ms; one slow display
    # on a loaded machine is tolerated (the timing target is measured in benchmarks/)
    assert statistics.median(latencies) < 0.2 and max(latencies) < 1.0, latencies
    assert [s[0] for s in rec.shown] == [101, 102, 103, 104, 105]  # once per query


def test_ratings_and_submit_deliver_the_answer(context, ui, rec):
    page = open_page(context, ui)
    show(page, ui, rec, query(qid=7))
    submit = page.get_by_role("button", name="Submit")
    expect(submit).to_be_disabled()
    page.get_by_role("button", name="valence 7", exact=True).click()
    expect(submit).to_be_disabled()
    page.get_by_role("button", name="arousal 2", exact=True).click()
    page.get_by_role("button", name="arousal 3", exact=True).click()  # changed mind
    expect(page.get_by_role("button", name="arousal 3", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.get_by_role("button", name="arousal 2", exact=True)).to_have_attribute(
        "aria-pressed", "false"
    )
    before = time.time()
    submit.click()
    answer = rec.next_answer()
    assert answer == Answer(7, 7, 3, False, answer.t_wall)
    assert before <= answer.t_wall <= time.time()
    expect(page.locator("#query")).to_contain_text(IDLE)
    # the server closed the question itself: a second answer is refused
    status, reply = request(ui.url, "/answer", {"query_id": 7, "valence": 1, "arousal": 1})
    assert status == 409 and reply["query"] is None
    assert len(rec.answers) == 1


def test_keyboard_only(context, ui, rec):
    page = open_page(context, ui)
    show(page, ui, rec, query(qid=8))
    page.get_by_role("button", name="valence 2", exact=True).focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # to valence 3
    page.keyboard.press("Space")
    for _ in range(7):  # valence 4..9, then arousal 1
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Submit")).to_be_enabled()
    page.get_by_role("button", name="Submit").focus()
    page.keyboard.press("Enter")
    answer = rec.next_answer()
    assert (answer.query_id, answer.valence, answer.arousal, answer.skipped) == (8, 3, 1, False)


def test_skip_button(context, ui, rec):
    page = open_page(context, ui)
    show(page, ui, rec, query(qid=9))
    page.get_by_role("button", name="valence 4", exact=True).click()
    page.get_by_role("button", name="Skip").click()
    answer = rec.next_answer()
    assert (answer.query_id, answer.valence, answer.arousal, answer.skipped) == (
        9,
        None,
        None,
        True,
    )
    expect(page.locator("#query")).to_contain_text(IDLE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query_id": 5, "valence": 12, "arousal": 3}, "valence must be in 1-9, got 12"),
        ({"query_id": 5, "valence": 4, "arousal": 2.5}, "arousal must be an integer 1-9"),
        ({"query_id": 5, "valence": 4}, "choose a arousal rating"),
        ({"query_id": "5", "skip": True}, "query_id must be an integer"),
        ({"query_id": 5, "skip": True, "valence": 3}, "a skipped question carries no ratings"),
        ([5, 4, 3], "must be a JSON object"),
    ],
)
def test_invalid_answer_is_400_with_a_message(ui, rec, body, message):
    ui.show_query(query(qid=5))
    status, reply = request(ui.url, "/answer", body)
    assert status == 400
    assert message in reply["error"]
    assert not rec.answers
    assert request(ui.url, "/answer", {"query_id": 5, "skip": True})[0] == 200  # still open


def test_page_shows_the_400_message(context, ui, rec):
    page = open_page(context, ui)
    show(page, ui, rec, query(qid=5))
    page.evaluate("send({query_id: 5, valence: 12, arousal: 3})")
    expect(page.locator("#error")).to_contain_text("valence must be in 1-9, got 12")
    expect(page.locator("#number")).to_have_text("Question 3 of 20")  # still asked
    assert not rec.answers


def test_answer_for_a_question_not_open_is_409(context, ui, rec):
    status, reply = request(ui.url, "/answer", {"query_id": 1, "skip": True})
    assert status == 409 and "no longer open" in reply["error"] and reply["query"] is None
    page = open_page(context, ui)
    show(page, ui, rec, query(qid=10, number=4))
    status, reply = request(ui.url, "/answer", {"query_id": 9, "valence": 5, "arousal": 5})
    assert status == 409 and reply["query"]["query_id"] == 10
    # a page that answers a stale question shows the message and the current state
    page.evaluate("send({query_id: 9, skip: true})")
    expect(page.locator("#error")).to_contain_text("question 9 is no longer open")
    expect(page.locator("#number")).to_have_text("Question 4 of 20")
    assert not rec.answers


def test_status_updates_appear(context, ui):
    page = open_page(context, ui)
    ui.update_status(SessionStatus(subject="S01", session="cal1", budget=20))
    expect(page.locator("#model-version")).to_have_text("v0")
    expect(page.locator("#personalising")).to_be_hidden()
    ui.update_status(
        SessionStatus(
            subject="S01",
            session="cal1",
            phase="free",
            elapsed_s=125.0,
            answered=3,
            skipped=2,
            budget=20,
            model_version=2,
            personalising=True,
            eeg_quality=0.87,
            face_present=True,
            bad_channels=["Fp1", "T7"],
            blink=True,
            muscle=False,
            predicted="happy",
            uncertainty=0.32,
        )
    )
    quality = page.locator("#quality")
    expect(quality).to_contain_text("87%")
    expect(page.locator("#face")).to_have_text("yes")
    expect(page.locator("#bad-channels")).to_have_text("Fp1, T7")
    expect(page.locator("#artefacts")).to_have_text("blink")
    expect(page.locator("#prediction")).to_have_text("happy (uncertainty 32%)")
    expect(page.locator("#model-version")).to_have_text("v2")
    expect(page.locator("#personalising")).to_be_visible()
    expect(page.locator("#elapsed")).to_have_text("2:05")
    expect(page.locator("#progress")).to_have_js_property("value", 5)
    expect(page.locator("#progress")).to_have_js_property("max", 20)
    expect(page.locator("#status")).to_contain_text("3 answered, 2 skipped, of 20")


def test_new_tab_shows_the_open_query_and_dead_tabs_are_dropped(context, ui, rec):
    first = open_page(context, ui)
    second = open_page(context, ui)
    assert ui.n_clients == 2
    ui.update_status(SessionStatus(subject="S01", session="cal1", model_version=1))
    show(first, ui, rec, query(qid=12, number=5))
    expect(second.locator("#number")).to_have_text("Question 5 of 20")  # every tab, same state
    first.close()
    second.close()
    # a closed tab's stream fails at the next keep-alive and is removed quietly
    assert wait_until(lambda: ui.n_clients == 0), f"{ui.n_clients} streams left"
    third = open_page(context, ui)
    expect(third.locator("#number")).to_have_text("Question 5 of 20")
    expect(third.locator("#model-version")).to_have_text("v1")
    assert [s[0] for s in rec.shown] == [12]  # reported once, not per tab
    fourth = open_page(context, ui)
    third.get_by_role("button", name="Skip").click()
    assert rec.next_answer().query_id == 12
    expect(fourth.locator("#query")).to_contain_text(IDLE)  # cleared in the other tab too


class Link:
    """A TCP relay between the page and the server whose connections can be cut (network drop)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the relay threads; sends FIN both ways
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_page_reconnects_after_a_network_drop(context, ui, rec):
    link = Link(ui.port)
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{link.port}/")
        expect(page.locator("#connection")).to_have_text("connected")
        link.down()
        expect(page.locator("#connection")).to_have_text("reconnecting...")
        ui.show_query(query(qid=13, number=6))  # while the page is cut off
        link.up()
        expect(page.locator("#connection")).to_have_text("connected")
        expect(page.locator("#number")).to_have_text("Question 6 of 20")
        assert rec.shown_event.wait(TIMEOUT_S) and rec.shown[-1][0] == 13
    finally:
        link.down()


def test_non_loopback_bind_needs_the_token(context, rec):
    with WebUI(rec.on_answer, rec.on_shown, host="0.0.0.0") as web:
        assert web.token and len(web.token) >= 16
        assert web.url.endswith(f"/?token={web.token}")
        local = f"http://127.0.0.1:{web.port}/"
        status, text = request(local, "/")
        assert status == 403 and "token" in text
        assert request(local, "/", token="wrong")[0] == 403
        assert request(local, "/answer", {"query_id": 1, "skip": True})[0] == 403
        status, text = request(local, "/", token=web.token)
        assert status == 200 and "<html" in text
        page = context.new_page()
        page.goto(f"{local}?token={web.token}")
        expect(page.locator("#connection")).to_have_text("connected")
        web.show_query(query(qid=20))
        page.get_by_role("button", name="Skip").click()
        assert rec.next_answer().query_id == 20


def test_loopback_needs_no_token_but_honours_one(rec):
    with WebUI(rec.on_answer, rec.on_shown) as web:
        assert web.token is None and "token" not in web.url
        assert request(web.url, "/")[0] == 200
    with WebUI(rec.on_answer, rec.on_shown, token="s3cret") as web:
        assert web.url.endswith("?token=s3cret")
        assert request(web.url, "/")[0] == 403
        assert request(web.url, "/", token="s3cret")[0] == 200


def test_port_in_use_is_a_config_error(rec):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        web = WebUI(rec.on_answer, rec.on_shown, port=port)
        with pytest.raises(ConfigError, match=rf"port {port} .*in use.*--port 0"):
            web.start()
        web.close()


def test_close_ends_every_stream(context, rec):
    web = WebUI(rec.on_answer, rec.on_shown)
    web.start()
    pages = [open_page(context, web) for _ in range(2)]
    assert web.n_clients == 2
    web.close()
    assert web.n_clients == 0
    for page in pages:
        expect(page.locator("#connection")).to_have_text("session ended")
    web.close()  # idempotent
    with pytest.raises(ConfigError, match="port must be an integer 0-65535.*got 70000"):
        WebUI(rec.on_answer, rec.on_shown, port=70000)


def test_non_json_requests_are_refused(ui, rec):
    ui.show_query(query(qid=30))
    url = ui.url.rstrip("/") + "/answer"
    body = b'{"query_id": 30, "skip": true}'
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "text/plain"})
    with pytest.raises(
        urllib.error.HTTPError, match="HTTP Error 415: Unsupported Media Type"
    ) as err:
        urllib.request.urlopen(req, timeout=TIMEOUT_S)
    assert err.value.code == 415 and "application/json" in json.loads(err.value.read())["error"]
    req = urllib.request.Request(
        url, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError, match="HTTP Error 400: Bad Request") as err:
        urllib.request.urlopen(req, timeout=TIMEOUT_S)
    assert err.value.code == 400 and "not JSON" in json.loads(err.value.read())["error"]
    assert request(ui.url, "/nowhere")[0] == 404
    assert not rec.answers


def test_stimulus_blocks_show_the_file_and_nothing_outside_the_folder(
    context, rec, shared_data, tmp_path
):
    """A stimulus phase shows that image (a real photo, decoded by the browser); other
    phases hide it; only files of the folder are served."""
    folder = tmp_path / "stimuli"
    folder.mkdir()
    (folder / "scene.png").write_bytes((shared_data / "faces" / "astronaut.png").read_bytes())
    (tmp_path / "secret.txt").write_text("not a stimulus")
    web = WebUI(rec.on_answer, rec.on_shown, stimuli=folder)
    web.start()
    try:
        page = context.new_page()
        page.goto(web.url)
        web.update_status(SessionStatus(subject="S01", session="s", phase="stimulus scene.png"))
        media = page.locator("#stimulus-media")
        expect(media).to_be_visible()
        assert wait_until(lambda: media.evaluate("e => e.complete && e.naturalWidth") > 0)
        web.update_status(SessionStatus(subject="S01", session="s", phase="rest"))
        expect(page.locator("#stimulus")).to_be_hidden()
        for bad in ("/stimuli/..%2Fsecret.txt", "/stimuli/../secret.txt", "/stimuli/nope.png"):
            status, _ = request(web.url, bad)
            assert status == 404, bad
    finally:
        web.close()
    with pytest.raises(ConfigError, match="does not exist"):
        WebUI(rec.on_answer, rec.on_shown, stimuli=tmp_path / "missing")
