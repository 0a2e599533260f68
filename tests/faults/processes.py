"""Helpers of the live-session fault tests: ``bci-affect`` and EEG publishers as real child
processes, their output lines collected as they come, and waits with deadlines on lines and on
the predictions file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PUBLISHER = Path(__file__).with_name("eeg_publisher.py")


def production_env() -> dict[str, str]:
    """The environment of a user's shell: stream errors are reported, not re-raised."""
    env = dict(os.environ)
    env.pop("BCI_AFFECT_RAISE_STREAM_ERRORS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``predicate`` (e.g. a file's content) until it is truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        tick.wait(0.05)


class Child:
    """A child process; threads collect its stdout and stderr lines as they arrive.

    Parameters
    ----------
    argv : list of str
    stdin : bool
        Open a pipe to the child's stdin (see :meth:`send`).
    """

    def __init__(self, argv: list[str], *, stdin: bool = False) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=production_env(),
            cwd=ROOT,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._cv = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._cv:
                lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(
        self, pattern: str, timeout: float, *, stderr: bool = False, after: int = 0
    ) -> re.Match:
        """The first line (stdout, or stderr) matching the regular expression ``pattern``,
        among the lines from number ``after`` on."""
        regex = re.compile(pattern)
        lines = self.err if stderr else self.out

        def found() -> re.Match | None:
            return next((m for m in map(regex.search, lines[after:]) if m), None)

        with self._cv:
            self._cv.wait_for(lambda: found() or self.proc.poll() is not None, timeout)
            match = found()
        if match is None:
            raise AssertionError(
                f"no line matching {pattern!r} within {timeout:g} s from {self.argv[2:6]}; "
                f"exit status {self.proc.poll()}\nstdout:\n" + "\n".join(self.out)
                + "\nstderr:\n" + "\n".join(self.err)
            )  # fmt: skip
        return match

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit and for its output to be read; its exit status."""
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(timeout)
        return rc

    def stop(self) -> None:
        """Kill the child if it still runs (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def bci_affect(*args: str) -> list[str]:
    """The command line of ``bci-affect ARGS`` with this interpreter."""
    return [sys.executable, "-m", "bci_affect", *args]


def start_publisher(name: str, source_id: str, *extra: str) -> tuple[Child, float]:
    """The EEG publisher (``eeg_publisher.py``, options ``extra``) in its own process, once its
    outlet exists; returns it and its first sample's time (LSL clock)."""
    child = Child([sys.executable, str(PUBLISHER), name, source_id, *extra], stdin=True)
    t0 = float(child.wait_line(r"^ready (\S+)", 30).group(1))
    return child, t0


def run_args(uid: str, out: Path, *extra: str) -> list[str]:
    """``bci-affect run`` options naming everything after ``uid`` (no clash with other runs)."""
    return [
        "run",
        "--session",
        uid,
        "--predictions-name",
        f"AffectPredictions-{uid}",
        "--out",
        str(out),
        "--threads",
        "1",
        *extra,
    ]


def read_records(path: Path) -> list[dict]:
    """The complete lines of a predictions file being written (a last partial line is not)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def summary_counts(lines: list[str]) -> dict[str, int]:
    """The counts in the one ``ran ... s: ...`` summary line of ``run``."""
    ran = [line for line in lines if line.startswith("ran ")]
    assert len(ran) == 1, lines
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (windows|scored|skipped)", ran[0])}
    m = re.search(r"(\d+) not scored", ran[0])
    counts["not scored"] = int(m.group(1)) if m else 0
    return counts


@contextlib.contextmanager
def tmpfs(mnt: Path, size: str) -> Iterator[str | None]:
    """Mount a tmpfs of ``size`` (e.g. ``"256k"``) on ``mnt`` for the block (needs root).

    Yields ``None`` when mounted (unmounted at the end), else why it could not be mounted.
    """
    mnt.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        yield res.stderr.strip() or f"mount exited with status {res.returncode}"
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(path: Path) -> None:
    """Write ``path`` until the disk holding it has not one byte left."""
    with open(path, "wb", buffering=0) as f:
        for block in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
