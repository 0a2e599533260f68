"""The terminal labelling prompt, driven through a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator

import pytest

from calibration.terminal import AROUSAL_PROMPT, VALENCE_PROMPT, TerminalUI, format_status
from calibration.ui import Answer, QueryView, SessionStatus

TIMEOUT_S = 5.0
PROMPT = "How did you feel during the last 8 seconds?"


class PtyReader:
    """Collects what the UI writes to the slave side, read from the master side."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.text = ""
        self.pos = 0  # where the next expect() starts looking
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO once every slave descriptor is closed
                return
            if not data:
                return
            with self._cond:
                self.text += data.decode("utf-8", "replace").replace("\r\n", "\n")
                self._cond.notify_all()

    def expect(self, needle: str, timeout: float = TIMEOUT_S) -> str:
        """Wait for ``needle`` after the last match; returns the text up to and including it."""
        with self._cond:
            found = self._cond.wait_for(lambda: needle in self.text[self.pos :], timeout)
            assert found, f"{needle!r} not printed within {timeout} s; output:\n{self.text}"
            end = self.text.index(needle, self.pos) + len(needle)
            seen, self.pos = self.text[self.pos : end], end
            return seen

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def join(self) -> None:
        self._thread.join(timeout=TIMEOUT_S)


class Recorder:
    """The two callbacks, with events to wait on."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.shown: list[tuple[int, float]] = []
        self.answered = threading.Event()
        self.shown_event = threading.Event()

    def on_answer(self, answer: Answer) -> None:
        self.answers.append(answer)
        self.answered.set()

    def on_shown(self, query_id: int, t_wall: float) -> None:
        self.shown.append((query_id, t_wall))
        self.shown_event.set()

    def next_answer(self) -> Answer:
        assert self.answered.wait(TIMEOUT_S), "no answer delivered"
        self.answered.clear()
        return self.answers[-1]


def wait_until(predicate, timeout: float = TIMEOUT_S) -> bool:
    """Poll ``predicate`` every 10 ms until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


def query(qid: int = 7, number: int = 3) -> QueryView:
    return QueryView(query_id=qid, span_s=8.0, prompt=PROMPT, number=number, budget=20)


def status(**kw: object) -> SessionStatus:
    base: dict[str, object] = {"subject": "S01", "session": "cal1", "budget": 20}
    return SessionStatus(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture
def term() -> Iterator[tuple[TerminalUI, PtyReader, Recorder]]:
    master, slave = os.openpty()
    fin = open(slave, encoding="utf-8", closefd=False)  # noqa: SIM115
    fout = open(os.dup(slave), "w", encoding="utf-8")  # noqa: SIM115
    reader = PtyReader(master)
    rec = Recorder()
    ui = TerminalUI(rec.on_answer, rec.on_shown, input=fin, output=fout, status_interval_s=0.0)
    ui.start()
    reader.expect("Calibration: questions appear here")
    try:
        yield ui, reader, rec
    finally:
        ui.close()
        fin.close()
        fout.close()
        os.close(slave)
        reader.join()
        os.close(master)


def test_answer_both_ratings(term):
    ui, pty_, rec = term
    before = time.time()
    ui.show_query(query(qid=7, number=3))
    pty_.expect(f"Question 3 of 20: {PROMPT}\n{VALENCE_PROMPT}")
    assert rec.shown_event.is_set()  # on_shown is called once the prompt is printed
    assert rec.shown[0][0] == 7 and before <= rec.shown[0][1] <= time.time()
    pty_.type("7\n")
    pty_.expect(AROUSAL_PROMPT)
    pty_.type("3\n")
    answer = rec.next_answer()
    assert (answer.query_id, answer.valence, answer.arousal, answer.skipped) == (7, 7, 3, False)
    assert before <= answer.t_wall <= time.time()
    pty_.expect("thank you")
    assert len(rec.answers) == 1


def test_skip(term):
    ui, pty_, rec = term
    ui.show_query(query(qid=11))
    pty_.expect(VALENCE_PROMPT)
    pty_.type("s\n")
    answer = rec.next_answer()
    assert (answer.query_id, answer.valence, answer.arousal, answer.skipped) == (
        11,
        None,
        None,
        True,
    )


def test_invalid_input_is_asked_again(term):
    ui, pty_, rec = term
    ui.show_query(query(qid=4))
    pty_.expect(VALENCE_PROMPT)
    pty_.type("12\n")
    seen = pty_.expect(VALENCE_PROMPT)
    assert "valence must be in 1-9, got 12" in seen
    pty_.type("happy\n")
    assert "valence must be an integer 1-9, got 'happy'" in pty_.expect(VALENCE_PROMPT)
    pty_.type("5\n")
    pty_.expect(AROUSAL_PROMPT)
    pty_.type("0\n")
    assert "arousal must be in 1-9, got 0" in pty_.expect(AROUSAL_PROMPT)
    assert not rec.answers
    pty_.type("9\n")
    answer = rec.next_answer()
    assert (answer.query_id, answer.valence, answer.arousal) == (4, 5, 9)


def test_expired_question_drops_the_partial_answer(term):
    ui, pty_, rec = term
    ui.show_query(query(qid=1, number=1))
    pty_.expect(VALENCE_PROMPT)
    pty_.type("7\n")
    pty_.expect(AROUSAL_PROMPT)
    ui.clear_query(99)  # not the open question: nothing happens
    ui.clear_query(1)
    pty_.expect("(question expired)\n")
    pty_.type("3\n")  # too late: no question is open
    pty_.expect("(no question open)")
    ui.show_query(query(qid=2, number=2))
    pty_.expect(f"Question 2 of 20: {PROMPT}\n{VALENCE_PROMPT}")  # asks valence again
    pty_.type("4\n")
    pty_.expect(AROUSAL_PROMPT)
    pty_.type("6\n")
    answer = rec.next_answer()
    assert rec.answers == [answer]
    assert (answer.query_id, answer.valence, answer.arousal) == (2, 4, 6)


def test_end_of_input_stops_reading_quietly(term):
    ui, pty_, rec = term
    assert ui.reading
    pty_.type("\x04")  # Ctrl-D at the start of a line: end of input on the slave side
    assert wait_until(lambda: not ui.reading), "the reader did not stop at end of input"
    ui.show_query(query(qid=3))  # the session goes on: prompts still print
    pty_.expect(VALENCE_PROMPT)
    assert rec.shown and rec.shown[-1][0] == 3
    ui.clear_query(3)
    pty_.expect("(question expired)")
    assert not rec.answers
    assert "Traceback" not in pty_.text


def test_status_lines_are_throttled_and_wait_for_the_question():
    master, slave = os.openpty()
    fin = open(slave, encoding="utf-8", closefd=False)  # noqa: SIM115
    fout = open(os.dup(slave), "w", encoding="utf-8")  # noqa: SIM115
    reader = PtyReader(master)
    rec = Recorder()
    ui = TerminalUI(rec.on_answer, rec.on_shown, input=fin, output=fout, status_interval_s=3600)
    ui.start()
    try:
        for i in range(20):
            ui.update_status(status(elapsed_s=i, answered=i))
        ui.show_query(query(qid=5))
        seen = reader.expect(VALENCE_PROMPT)
        assert seen.count("answered") == 1  # one line for twenty updates
        assert "0 answered" in seen
        ui.update_status(status(elapsed_s=99, message="never during a question"))
        reader.type("2\n")
        reader.expect(AROUSAL_PROMPT)
        reader.type("8\n")
        assert rec.next_answer().arousal == 8
        reader.expect("thank you")
        assert "never during a question" not in reader.text
    finally:
        ui.close()
        fin.close()
        fout.close()
        os.close(slave)
        reader.join()
        os.close(master)


def test_status_prints_after_the_question(term):
    ui, pty_, rec = term  # status_interval_s=0: every update prints unless a question is open
    ui.show_query(query(qid=6))
    pty_.expect(VALENCE_PROMPT)
    ui.update_status(status(message="held back"))
    pty_.type("s\n")
    rec.next_answer()
    ui.update_status(status(answered=0, skipped=1, message="after"))
    seen = pty_.expect("after\n")
    assert "held back" not in pty_.text
    assert "0 answered, 1 skipped of 20" in seen


def test_close_is_idempotent_and_stops_reading(term):
    ui, _, _ = term
    assert ui.reading
    ui.close()
    assert not ui.reading
    ui.close()


def test_format_status_is_one_compact_line():
    line = format_status(
        status(
            elapsed_s=65.4,
            phase="free",
            answered=3,
            skipped=1,
            model_version=2,
            personalising=True,
            eeg_quality=0.873,
            face_present=False,
            bad_channels=["Fp1", "T7"],
            blink=True,
            muscle=False,
            predicted="happy",
            uncertainty=0.316,
        )
    )
    assert "\n" not in line
    assert line == (
        "[01:05] free: 3 answered, 1 skipped of 20 | model v2 personalising... | "
        "EEG 87% face no bad Fp1,T7 blink | pred happy (u=0.32)"
    )
    assert format_status(status()) == "[00:00] rest: 0 answered, 0 skipped of 20 | model v0"


def test_input_without_a_file_descriptor():
    rec = Recorder()
    out = io.StringIO()
    ui = TerminalUI(rec.on_answer, rec.on_shown, input=io.StringIO("5\n"), output=out)
    ui.start()
    try:
        assert wait_until(lambda: not ui.reading), "reading did not stop at end of input"
        assert "(no question open)" in out.getvalue()  # the line came before any question
        assert not rec.answers
    finally:
        ui.close()
