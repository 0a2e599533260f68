"""Faults while ``bci-affect record`` runs: signals to the command and to its recording process
at a random moment, and a disk that fills up.

Real processes and real POSIX signals, a real LSL publisher on localhost, real XDF files read
back with the project's reader (:func:`acquisition.xdf.load_xdf`). Every case checks that the
file holds every sample it should, in order and without gaps, and that the JSON sidecar tells
the truth about how the recording ended. The moment of each signal is a seeded random delay
after the file is known to hold samples.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pylsl
import pytest

from acquisition.lsl import Outlet
from acquisition.recorder import sidecar_path
from acquisition.xdf import RecordingWarning, load_xdf
from bci_affect.core import Chunk, FileFormatError, StreamInfo, StreamNotFoundError

from .processes import fill_disk, tmpfs

pytestmark = [
    pytest.mark.lsl,
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and sends POSIX signals"),
]

SFREQ = 250.0
N_CHANS = 8
#: Bytes of one sample in the file: 1 (timestamp flag) + 8 (timestamp) + 8 x float32.
SAMPLE_BYTES = 1 + 8 + 4 * N_CHANS


class CounterPublisher:
    """An EEG stream on LSL, pushed in real time from a thread in 10-sample chunks.

    Channel 0 counts samples (0, 1, 2, ...) and sample ``k`` is stamped ``t0 + k / SFREQ``,
    so a gap, a duplicate or a reordering in a recording shows. ``n_pushed`` is the number of
    samples pushed so far.
    """

    def __init__(self, uid: str) -> None:
        labels = tuple(f"ch{i}" for i in range(N_CHANS))
        self.info = StreamInfo(
            f"EEG{uid}", "EEG", SFREQ, labels, ("microvolts",) * N_CHANS, uid, "float32"
        )
        self.outlet = Outlet(self.info)
        self.n_pushed = 0
        self.t0 = pylsl.local_clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n, k = 10, 0
        while not self._stop.is_set():
            i = np.arange(k * n, (k + 1) * n)
            data = np.repeat(i[None, :].astype(np.float32), N_CHANS, axis=0)
            data[1:] += np.sin(i / 7.0).astype(np.float32) * 50
            self.outlet.push(Chunk(data, self.t0 + i / SFREQ, self.info))
            self.n_pushed = int(i[-1]) + 1
            k += 1
            # pace like a device: the next chunk is due at t0 + k * n / SFREQ
            self._stop.wait(max(0.0, self.t0 + k * n / SFREQ - pylsl.local_clock()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.outlet.close()


@pytest.fixture
def publisher(uid):
    pub = CounterPublisher(uid)
    yield pub
    pub.close()


def production_env() -> dict[str, str]:
    """The environment of a user's shell: stream errors are logged, not raised."""
    env = dict(os.environ)
    env.pop("BCI_AFFECT_RAISE_STREAM_ERRORS", None)
    return env


def start_record(out: Path, uid: str, *extra: str, launcher: list[str] = ()) -> subprocess.Popen:
    """``bci-affect record`` of the publisher's stream; returns once it says it is recording."""
    cmd = [*launcher] or [sys.executable, "-m", "bci_affect"]
    cmd += ["record", "--out", str(out), "--streams", f"source_id={uid}", *extra]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=production_env()
    )
    first = proc.stdout.readline()
    if not first.startswith("recording 1 stream(s)"):
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"record did not start: {first!r} {err!r}")
    return proc


def recording_process(parent: int, deadline_s: float = 20.0) -> int:
    """Pid of the recording process (``python -m acquisition.recorder``) of ``parent``."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):  # gone meanwhile
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == parent and b"acquisition.recorder" in (proc / "cmdline").read_bytes():
                    return int(proc.name)
        time.sleep(0.05)
    raise AssertionError(f"process {parent} has no recording process")


def wait_until_gone(pid: int, deadline_s: float = 60.0) -> None:
    """Wait until ``pid`` (not a child of this process) has exited."""
    until = time.monotonic() + deadline_s
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < until:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return  # exited; its new parent has not collected it yet
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs after {deadline_s} s")


def read_eeg(path: Path, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The sample counter and timestamps of ``name`` in ``path``, and the reader's warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordingWarning)
        (chunk,) = load_xdf(path, streams=[name])
    problems = [str(w.message) for w in caught if issubclass(w.category, RecordingWarning)]
    return chunk.data[0].astype(np.int64), chunk.times, problems


def wait_for_samples(path: Path, name: str, up_to: int = 0, deadline_s: float = 30.0) -> int:
    """Wait until the growing file holds samples of ``name``, up to sample number ``up_to`` at
    least; return how many it holds."""
    until = time.monotonic() + deadline_s
    counter = np.zeros(0)
    while time.monotonic() < until:
        with contextlib.suppress(FileFormatError, StreamNotFoundError):  # no header yet
            counter = read_eeg(path, name)[0]
        if counter.size and counter[-1] >= up_to:
            return counter.size
        time.sleep(0.1)
    raise AssertionError(f"{path} holds {counter.size} samples of {name} after {deadline_s} s")


def wait_for_final_sidecar(path: Path, deadline_s: float = 60.0) -> dict:
    until = time.monotonic() + deadline_s
    side: dict = {}
    while time.monotonic() < until:
        side = json.loads(sidecar_path(path).read_text())
        if side["status"] != "recording":
            return side
        time.sleep(0.1)
    raise AssertionError(f"the sidecar still says {side.get('status')!r} after {deadline_s} s")


def check_samples(pub: CounterPublisher, counter: np.ndarray, times: np.ndarray) -> None:
    """The samples are consecutive pushed samples with their own timestamps."""
    assert counter.size > 0
    np.testing.assert_array_equal(counter, np.arange(counter[0], counter[0] + counter.size))
    assert np.all(np.diff(times) > 0), "timestamps do not increase"
    np.testing.assert_allclose(times, pub.t0 + counter / SFREQ, atol=1e-3)
    assert counter[-1] < pub.n_pushed


def check_sidecar(side: dict, path: Path, status: str, n_samples: int, stop_range) -> None:
    """The sidecar's outcome, stop time (LSL clock, within ``stop_range``) and counts."""
    assert side["status"] == status, side["error"]
    assert side["size_bytes"] == path.stat().st_size
    lo, hi = stop_range
    assert lo <= side["stop"]["lsl_clock"] <= hi
    start = datetime.fromisoformat(side["start"]["utc"].replace("Z", "+00:00"))
    stop = datetime.fromisoformat(side["stop"]["utc"].replace("Z", "+00:00"))
    assert (stop - start).total_seconds() == pytest.approx(side["duration_s"], abs=0.1)
    assert side["duration_s"] > 0
    (stream,) = side["streams"]
    assert stream["n_samples"] == n_samples
    assert not path.with_name(f".{sidecar_path(path).name}.tmp").exists()


def signal_at_random_moment(pid: int, sig: signal.Signals, seed: str) -> tuple[float, float]:
    """Send ``sig`` after a seeded random delay (0-1 s); return (delay, LSL time it was sent)."""
    delay = random.Random(seed).uniform(0.0, 1.0)
    time.sleep(delay)  # the moment of the fault, not a synchronisation
    t = pylsl.local_clock()
    os.kill(pid, sig)
    return delay, t


def one_error_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith("bci-affect record: error: recording to "), stderr
    return stderr


# --------------------------------------------------------------------------------------------
# signals to the command


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_command_stops_cleanly_on(sig, tmp_path, uid, publisher):
    out = tmp_path / "S01" / "ses1.xdf"
    proc = start_record(out, uid)
    try:
        n0 = wait_for_samples(out, publisher.info.name)
        delay, t_sig = signal_at_random_moment(proc.pid, sig, f"command-{sig.name}")
        pushed = publisher.n_pushed
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    t_end = pylsl.local_clock()
    assert proc.returncode == 0, f"delay {delay:.3f} s: {stderr}"
    assert f"wrote {out}" in stdout and "Traceback" not in stderr

    counter, times, problems = read_eeg(out, publisher.info.name)
    assert problems == []  # complete: every stream footer, nothing cut
    check_samples(publisher, counter, times)
    assert counter.size >= n0
    assert counter[-1] + 1 >= pushed, "samples pushed before the signal are missing"
    side = json.loads(sidecar_path(out).read_text())
    assert side["error"] is None
    check_sidecar(side, out, "complete", counter.size, (t_sig, t_end))


def test_command_killed_leaves_a_finished_file_and_sidecar(tmp_path, uid, publisher):
    out = tmp_path / "S01" / "ses1.xdf"
    proc = start_record(out, uid)
    try:
        child = recording_process(proc.pid)
        n0 = wait_for_samples(out, publisher.info.name)
        delay, t_kill = signal_at_random_moment(proc.pid, signal.SIGKILL, "command-SIGKILL")
        pushed = publisher.n_pushed
        assert proc.wait(30) == -signal.SIGKILL
        side = wait_for_final_sidecar(out)
        wait_until_gone(child)
    finally:
        if proc.poll() is None:
            proc.kill()
    t_end = pylsl.local_clock()

    counter, times, problems = read_eeg(out, publisher.info.name)
    assert problems == [], f"delay {delay:.3f} s"  # finalised by the recording process
    check_samples(publisher, counter, times)
    assert counter.size >= n0
    assert counter[-1] + 1 >= pushed, "samples pushed before the kill are missing"
    check_sidecar(side, out, "interrupted", counter.size, (t_kill, t_end))
    assert f"pid {proc.pid}" in side["error"] and "killed" in side["error"]
    assert (side["subject"], side["session"]) == ("S01", "ses1")


# --------------------------------------------------------------------------------------------
# signals to the recording process


def test_recording_process_ignores_sigint(tmp_path, uid, publisher):
    out = tmp_path / "ses.xdf"
    proc = start_record(out, uid)
    try:
        child = recording_process(proc.pid)
        wait_for_samples(out, publisher.info.name)
        delay, _ = signal_at_random_moment(child, signal.SIGINT, "recording-SIGINT")
        n_at_signal = publisher.n_pushed
        # recording goes on: samples pushed well after the signal reach the file
        wait_for_samples(out, publisher.info.name, up_to=n_at_signal + int(SFREQ))
        t_stop = pylsl.local_clock()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"delay {delay:.3f} s: {stderr}"
    counter, times, problems = read_eeg(out, publisher.info.name)
    assert problems == []
    check_samples(publisher, counter, times)
    side = json.loads(sidecar_path(out).read_text())
    check_sidecar(side, out, "complete", counter.size, (t_stop, pylsl.local_clock()))


@pytest.mark.parametrize(
    ("sig", "status", "needle"),
    [
        (signal.SIGTERM, "interrupted", "ended early: the recording process received SIGTERM"),
        (signal.SIGKILL, "failed", "failed: the recording process was killed by signal 9"),
    ],
    ids=["SIGTERM", "SIGKILL"],
)
def test_recording_process_signal_is_reported(sig, status, needle, tmp_path, uid, publisher):
    out = tmp_path / "ses.xdf"
    proc = start_record(out, uid)
    try:
        child = recording_process(proc.pid)
        n0 = wait_for_samples(out, publisher.info.name)
        delay, t_sig = signal_at_random_moment(child, sig, f"recording-{sig.name}")
        pushed = publisher.n_pushed
        _, stderr = proc.communicate(timeout=60)  # the command ends by itself
    finally:
        if proc.poll() is None:
            proc.kill()
    t_end = pylsl.local_clock()
    assert proc.returncode == 2, f"delay {delay:.3f} s: {stderr}"
    err = one_error_line(stderr)
    assert needle in err and str(out) in err and "ses.json" in err

    counter, times, problems = read_eeg(out, publisher.info.name)
    check_samples(publisher, counter, times)
    assert counter.size >= n0, "samples already in the file were lost"
    side = json.loads(sidecar_path(out).read_text())
    assert needle.split(": ", 1)[1] in side["error"]
    if sig == signal.SIGTERM:  # finalised: complete up to the signal
        assert problems == []
        assert counter[-1] + 1 >= pushed, "samples pushed before the signal are missing"
        check_sidecar(side, out, status, counter.size, (t_sig, t_end))
    else:  # cut off: readable up to the cut, and the reader says so
        assert problems and "truncated" in problems[0]
        assert side["status"] == status and side["size_bytes"] == out.stat().st_size
        assert t_sig <= side["stop"]["lsl_clock"] <= t_end
        assert 0 < side["streams"][0]["n_samples"] <= counter.size


# --------------------------------------------------------------------------------------------
# a full disk


#: Bytes the recording may write under a file-size limit: headers plus about 2 s of samples.
FILE_LIMIT_BYTES = 32 * 1024

LIMITED = (
    "import os, resource, signal, sys; "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "  # writes fail with EFBIG instead
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
    "os.execv(sys.executable, [sys.executable, '-m', 'bci_affect', *sys.argv[2:]])"
)


def check_failed_on_storage(out: Path, stderr: str, needle: str, pub, n_before: int) -> int:
    """One error line and a ``failed`` sidecar that both name the cause; the file reads back
    up to the cut, with every sample it held before. Returns the number of samples read."""
    err = one_error_line(stderr)
    assert "failed" in err and needle in err and "record again" in err
    size = out.stat().st_size
    counter, times, _ = read_eeg(out, pub.info.name)  # readable up to the cut
    check_samples(pub, counter, times)
    assert counter.size >= n_before, "samples already in the file were lost"
    # every sample written is read: the headers and chunk framing take under 4 kB, and a
    # sample at most SAMPLE_BYTES
    assert counter.size * SAMPLE_BYTES >= size - 4096
    side = json.loads(sidecar_path(out).read_text())
    assert side["status"] == "failed" and needle in side["error"] and side["error"] in err
    assert side["size_bytes"] == size and side["stop"] is not None
    assert 0 < side["streams"][0]["n_samples"] <= counter.size
    assert not out.with_name(f".{sidecar_path(out).name}.tmp").exists()
    return counter.size


def test_file_size_limit_during_record(tmp_path, uid, publisher):
    out = tmp_path / "S01" / "ses1.xdf"
    launcher = [sys.executable, "-c", LIMITED, str(FILE_LIMIT_BYTES)]
    proc = start_record(out, uid, "--duration", "60", launcher=launcher)
    try:
        n0 = wait_for_samples(out, publisher.info.name)
        _, stderr = proc.communicate(timeout=60)  # ends by itself, long before --duration
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stderr
    assert out.stat().st_size == FILE_LIMIT_BYTES
    check_failed_on_storage(out, stderr, "ulimit -f", publisher, n0)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs (needs root; skipped otherwise: the file-size limit case still runs)."""
    with tmpfs(tmp_path / "disk", "256k") as why:
        if why is not None:
            pytest.skip(f"cannot mount a tmpfs ({why}); the file-size limit case runs")
        yield tmp_path / "disk"


def test_disk_filled_by_another_program_during_record(small_disk, uid, publisher):
    out = small_disk / "S01" / "ses1.xdf"
    proc = start_record(out, uid, "--duration", "60")
    try:
        n0 = wait_for_samples(out, publisher.info.name)
        delay = random.Random("disk-full").uniform(0.0, 1.0)
        time.sleep(delay)  # the moment of the fault, not a synchronisation
        fill_disk(small_disk / "filler.bin")
        assert os.statvfs(small_disk).f_bfree == 0
        _, stderr = proc.communicate(timeout=60)  # ends by itself, long before --duration
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, f"delay {delay:.3f} s: {stderr}"
    # the final sidecar was written on a disk without one free byte (into reserved space)
    check_failed_on_storage(out, stderr, "is full", publisher, n0)
