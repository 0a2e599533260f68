"""LslSource and stream resolution against real LSL outlets on localhost."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pylsl
import pytest

from acquisition.lsl import Outlet
from acquisition.lsl_inlet import (
    LslSource,
    StreamSelector,
    resolve_selectors,
    resolve_streams,
)
from bci_affect.core import (
    Chunk,
    ConfigError,
    DeviceError,
    Source,
    StreamInfo,
    StreamNotFoundError,
    read_all,
)

pytestmark = pytest.mark.lsl


# --------------------------------------------------------------------------------------------
# helpers


class Collector:
    """Iterates a source in a thread; the test waits on conditions with deadlines."""

    def __init__(self, source: LslSource) -> None:
        self.source = source
        self.chunks: list[Chunk] = []
        self.error: BaseException | None = None
        self.done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self.source:
                with self._cond:
                    self.chunks.append(chunk)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 (inspected by the test)
            self.error = exc
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self) or self.done, timeout)
            if not ok or not predicate(self):
                raise AssertionError(f"timed out waiting for {what}; error: {self.error!r}")

    def data(self, name: str) -> list[Chunk]:
        with self._cond:
            return [c for c in self.chunks if c.info.name == name]

    def n_samples(self, name: str) -> int:
        return sum(c.n_times for c in self.data(name))

    def events(self, name: str) -> list[dict]:
        return [json.loads(v) for c in self.data(f"{name}-events") for v in c.data[0]]

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "source iteration did not end"


def eeg_info(uid: str, n_chans: int = 3, sfreq: float = 100.0) -> StreamInfo:
    return StreamInfo(
        f"EEG{uid}",
        "EEG",
        sfreq,
        tuple(f"C{i}" for i in range(n_chans)),
        ("microvolts",) * n_chans,
        uid,
        "float32",
    )


def push_block(outlet: Outlet, info: StreamInfo, start: int, n: int, t0: float) -> Chunk:
    data = (start + np.arange(n, dtype=np.float32))[None, :] + 1000 * np.arange(
        info.n_chans, dtype=np.float32
    )[:, None]
    chunk = Chunk(data, t0 + np.arange(n) / info.sfreq, info)
    outlet.push(chunk)
    return chunk


# --------------------------------------------------------------------------------------------
# selectors


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("EEG", "any", "EEG"),
        ("name=EEG", "name", "EEG"),
        (" type = FaceFeatures ", "type", "FaceFeatures"),
        ("source_id=abc=1", "source_id", "abc=1"),
        ("host=lab-pc", "host", "lab-pc"),
        ("hostname=lab-pc", "host", "lab-pc"),
        ("NAME=x", "name", "x"),
    ],
)
def test_selector_parse(text, key, value):
    sel = StreamSelector.parse(text)
    assert (sel.key, sel.value) == (key, value)
    assert StreamSelector.parse(str(sel)) == sel


@pytest.mark.parametrize("text", ["", "   ", "colour=red", "name=", "type= "])
def test_selector_parse_rejects(text):
    with pytest.raises(ConfigError, match="selector"):
        StreamSelector.parse(text)


def test_selector_predicate_quotes_and_matches(uid):
    assert StreamSelector.parse("EEG").predicate() == "name='EEG' or type='EEG'"
    assert StreamSelector.parse("name=it's").predicate() == 'name="it\'s"'
    both = StreamSelector.parse("name=a'b\"c").predicate()
    assert both.startswith("name=concat(")
    info = pylsl.StreamInfo(f"N{uid}", "FaceFeatures", 1, 0, "float32", uid)
    assert StreamSelector.parse("FaceFeatures").matches(info)
    assert StreamSelector.parse(f"N{uid}").matches(info)
    assert StreamSelector.parse(f"source_id={uid}").matches(info)
    assert not StreamSelector.parse("type=EEG").matches(info)


def test_selector_with_quote_resolves(uid):
    name = f"it's {uid}"
    info = StreamInfo(name, "EEG", 10.0, ("a",), source_id=uid)
    out = Outlet(info)
    (found,) = resolve_selectors([f"name={name}"], timeout_s=5)
    assert found.source_id() == uid
    out.close()


# --------------------------------------------------------------------------------------------
# resolution


def test_resolve_by_source_id(uid):
    out = Outlet(eeg_info(uid))
    (found,) = resolve_streams(source_id=uid, timeout_s=5)
    assert found.name() == f"EEG{uid}"
    (found2,) = resolve_streams(name=f"EEG{uid}", type="EEG", timeout_s=5)
    assert found2.uid() == found.uid()
    out.close()


def test_resolve_timeout_lists_visible_streams(uid):
    out = Outlet(eeg_info(uid))
    resolve_streams(source_id=uid, timeout_s=5)  # visible before we ask for a missing one
    t = time.monotonic()
    with pytest.raises(StreamNotFoundError, match="no LSL stream with .* found within") as err:
        resolve_streams(source_id=f"missing-{uid}", timeout_s=0.3)
    assert time.monotonic() - t < 5
    msg = str(err.value)
    assert f"missing-{uid}" in msg
    assert f"'EEG{uid}'" in msg and uid in msg  # the visible stream is named
    assert "\n" not in msg
    with pytest.raises(StreamNotFoundError, match=f"selector 'type=Nope{uid}'"):
        LslSource(f"type=Nope{uid}", timeout_s=0.3).open()
    out.close()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="timeout_s"):
        LslSource("EEG", timeout_s=0)
    with pytest.raises(ConfigError, match="poll_s"):
        LslSource("EEG", poll_s=-1)
    with pytest.raises(ConfigError, match="lost_timeout_s"):
        LslSource("EEG", lost_timeout_s=0)
    with pytest.raises(ConfigError, match="timeout_s"):
        resolve_streams(name="x", timeout_s=0)


# --------------------------------------------------------------------------------------------
# reading


def test_receives_exactly_what_was_pushed(uid):
    info = eeg_info(uid, n_chans=4, sfreq=250.0)
    marker_info = StreamInfo(f"M{uid}", "Markers", 0.0, ("event",), source_id=f"m{uid}",
                             channel_format="string")  # fmt: skip
    out, mout = Outlet(info), Outlet(marker_info)
    src = LslSource([f"source_id={uid}", f"source_id=m{uid}"], timeout_s=5)
    assert isinstance(src, Source)
    with src:
        names = [s.name for s in src.streams]
        assert names == [info.name, f"{info.name}-events", marker_info.name, f"M{uid}-events"]
        assert src.streams[0].ch_names == info.ch_names
        assert src.streams[0].units == info.units
        assert src.streams[0].sfreq == 250.0
        assert out.wait_for_consumers(5) and mout.wait_for_consumers(5)
        col = Collector(src)
        t0 = pylsl.local_clock()
        sent = [push_block(out, info, 100 * k, 100, t0 + 0.4 * k) for k in range(3)]
        texts = [json.dumps({"event": "trial_start", "trial": i}) for i in range(5)]
        mtimes = t0 + np.arange(5) * 0.1
        mout.push(Chunk(np.array([texts], dtype=object), mtimes, marker_info))
        col.wait_for(lambda c: c.n_samples(info.name) >= 300, 10, "300 EEG samples")
        col.wait_for(lambda c: c.n_samples(marker_info.name) >= 5, 10, "5 markers")
        src.stop()
        col.join()
    assert col.error is None
    got = read_all(c for c in col.chunks if not c.info.name.endswith("-events"))
    expected = np.concatenate([c.data for c in sent], axis=1)
    np.testing.assert_array_equal(got[info.name].data, expected)
    assert got[info.name].data.dtype == np.float32
    t_sent = np.concatenate([c.times for c in sent])
    offset = got[info.name].times - t_sent
    # Same machine: the clock correction liblsl applies is tiny and the same for every sample.
    assert np.abs(offset).max() < 1e-3
    assert np.ptp(offset) < 1e-6
    assert list(got[marker_info.name].data[0]) == texts
    np.testing.assert_allclose(got[marker_info.name].times, mtimes, atol=1e-3)
    # no events: nothing was lost, the 0.4 s block spacing matches the data (no gap)
    assert col.events(info.name) == []


def test_gap_in_timestamps_is_reported(uid):
    info = eeg_info(uid, sfreq=100.0)
    out = Outlet(info)
    with LslSource(f"source_id={uid}", timeout_s=5) as src:
        assert out.wait_for_consumers(5)
        col = Collector(src)
        t0 = pylsl.local_clock()
        push_block(out, info, 0, 50, t0)
        push_block(out, info, 50, 50, t0 + 2.0)  # 1.5 s missing between the blocks
        col.wait_for(lambda c: len(c.events(info.name)) >= 1, 10, "a gap event")
        src.stop()
        col.join()
    (gap,) = col.events(info.name)
    assert gap["event"] == "gap" and gap["stream"] == info.name
    assert gap["start"] == pytest.approx(t0 + 0.49, abs=1e-3)
    assert gap["end"] == pytest.approx(t0 + 2.0, abs=1e-3)


def test_stop_from_another_thread_ends_iteration(uid):
    out = Outlet(eeg_info(uid))
    src = LslSource(f"source_id={uid}", timeout_s=5, poll_s=0.05)
    with src:
        col = Collector(src)
        t = time.monotonic()
        src.stop()
        col.join(5)
        assert time.monotonic() - t < 2.0
    assert col.error is None
    out.close()


# --------------------------------------------------------------------------------------------
# clock correction: a publisher whose LSL clock is really offset (libfaketime)

_PUBLISHER = textwrap.dedent(
    """
    import sys, time, pylsl
    sid, n = sys.argv[1], int(sys.argv[2])
    out = pylsl.StreamOutlet(pylsl.StreamInfo("Fake" + sid, "EEG", 1, 100.0, "double64", sid))
    print(pylsl.local_clock(), flush=True)
    if not out.wait_for_consumers(20):
        sys.exit(3)
    for i in range(n):
        out.push_sample([float(i)])  # stamped with this process's (offset) local_clock()
        time.sleep(0.01)             # pacing, as a device would
    sys.stdin.read()                 # stay alive until the test is done
    """
)


def _libfaketime() -> str | None:
    for pattern in (
        "/usr/lib/*/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ):
        hits = glob.glob(pattern)
        if hits:
            return hits[0]
    return None


def test_clock_offset_is_corrected(uid):
    lib = _libfaketime()
    if lib is None:
        pytest.skip("libfaketime not installed (Debian/Ubuntu: apt-get install faketime)")
    env = dict(
        os.environ,
        LD_PRELOAD=lib,
        FAKETIME="+100s",
        FAKETIME_DONT_FAKE_MONOTONIC="0",  # shift CLOCK_MONOTONIC too: liblsl's local_clock
        FAKETIME_NO_CACHE="1",
    )
    n = 150
    proc = subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, uid, str(n)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        their_clock = float(proc.stdout.readline())
        offset = their_clock - pylsl.local_clock()
        # libfaketime 0.9.10 maps a faked monotonic clock onto the faked wall clock, so the
        # publisher's LSL clock is ~1.8e9 s (epoch + 100 s) ahead; other versions give +100 s.
        assert abs(offset) > 50, f"libfaketime did not shift CLOCK_MONOTONIC (offset {offset})"
        received = []  # (value, corrected t, arrival, chunk index)
        with LslSource(f"source_id={uid}", timeout_s=10) as src:
            for k, chunk in enumerate(src):
                now = pylsl.local_clock()
                received += [
                    (v, t, now, k) for v, t in zip(chunk.data[0], chunk.times, strict=True)
                ]
                if len(received) >= n:
                    break
    finally:
        proc.stdin.close()
        proc.wait(10)
    values, times, arrival, index = map(np.array, zip(*received, strict=True))
    np.testing.assert_array_equal(values, np.arange(n))
    lag = arrival - times
    # The first pull waits for liblsl's first offset estimate (a few probes, ~0.5 s) and then
    # returns the backlog in one chunk; judge the samples that arrived live after it.
    steady = lag[index >= 2]
    assert steady.size > 50
    assert np.median(steady) < 0.005, f"median lag {np.median(steady):.4f} s"
    assert steady.min() > -0.002, "corrected timestamps lie in this machine's future"
    assert np.percentile(steady, 90) < 0.02
    # Without correction the timestamps would be the publisher's clock, |offset| seconds away.
    assert abs(times[-1] - pylsl.local_clock()) < 5 < abs(offset)


# --------------------------------------------------------------------------------------------
# loss and recovery


def test_stream_lost_and_recovered(uid):
    info = eeg_info(uid, sfreq=100.0)
    out = Outlet(info)
    with LslSource(f"source_id={uid}", timeout_s=5, lost_timeout_s=None) as src:
        assert out.wait_for_consumers(5)
        col = Collector(src)
        t0 = pylsl.local_clock()
        first = push_block(out, info, 0, 20, t0)
        col.wait_for(lambda c: c.n_samples(info.name) >= 20, 10, "the first block")
        out.close()
        del out
        col.wait_for(
            lambda c: any(e["event"] == "stream_lost" for e in c.events(info.name)),
            15,
            "stream_lost",
        )
        out = Outlet(info)  # the publisher comes back with the same source_id
        assert out.wait_for_consumers(15), "the inlet did not reconnect"
        t1 = pylsl.local_clock()
        second = push_block(out, info, 20, 30, t1)
        col.wait_for(lambda c: c.n_samples(info.name) >= 50, 10, "samples after recovery")
        col.wait_for(
            lambda c: any(e["event"] == "gap" for e in c.events(info.name)), 5, "the gap event"
        )
        src.stop()
        col.join()
    assert col.error is None
    got = read_all(col.data(info.name))[info.name]
    np.testing.assert_array_equal(got.data, np.concatenate([first.data, second.data], axis=1))
    events = col.events(info.name)
    kinds = [e["event"] for e in events]
    assert kinds == ["stream_lost", "stream_recovered", "gap"], events
    lost, recovered, gap = events
    assert lost["last"] == pytest.approx(first.times[-1], abs=1e-3)
    assert gap["start"] == pytest.approx(first.times[-1], abs=1e-3)
    assert gap["end"] == pytest.approx(second.times[0], abs=1e-3)
    assert lost["t"] < recovered["t"]
    # the events stream's own timestamps are on the LSL clock too
    ev_times = np.concatenate([c.times for c in col.data(f"{info.name}-events")])
    assert np.all(np.diff(ev_times) >= 0) and ev_times[0] > t0


def test_stream_that_never_returns_raises_after_timeout(uid):
    info = eeg_info(uid, sfreq=100.0)
    out = Outlet(info)
    with LslSource(f"source_id={uid}", timeout_s=5, lost_timeout_s=0.5) as src:
        assert out.wait_for_consumers(5)
        col = Collector(src)
        push_block(out, info, 0, 10, pylsl.local_clock())
        col.wait_for(lambda c: c.n_samples(info.name) >= 10, 10, "the first block")
        out.close()
        del out
        col.join(20)
    assert isinstance(col.error, DeviceError)
    assert "gone for 0.5 s" in str(col.error) and uid in str(col.error)
    assert [e["event"] for e in col.events(info.name)] == ["stream_lost"]
