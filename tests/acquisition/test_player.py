"""Real-time replay through LSL: what an LSL consumer receives equals the recording."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pylsl
import pytest

from acquisition.lsl_inlet import LslSource
from acquisition.player import Player
from acquisition.textfiles import OpenBciTextSource
from acquisition.xdf import RecordingWarning, XdfSource, load_xdf
from bci_affect.cli import main
from bci_affect.core import ConfigError, concat, read_all

pytestmark = pytest.mark.lsl


@pytest.fixture(scope="module")
def xdf_dir(shared_data):
    return shared_data / "xdf"


def _open_inlets(prefix: str, chunks) -> dict[str, pylsl.StreamInlet]:
    inlets = {}
    for c in chunks:
        sid = f"{prefix}:{c.info.source_id or c.name}"
        found = pylsl.resolve_byprop("source_id", sid, timeout=10)
        assert len(found) == 1, f"stream {sid} not found"
        inlet = pylsl.StreamInlet(found[0], max_buflen=360)
        inlet.open_stream(timeout=10)
        inlets[c.name] = inlet
    return inlets


def _collect(inlets, expected: dict[str, int], timeout_s: float):
    """Pull until every inlet has its expected sample count (or the deadline passes)."""
    got = {name: ([], [], []) for name in inlets}  # samples, timestamps, arrival times
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(len(got[n][1]) < expected[n] for n in inlets):
        for name, inlet in inlets.items():
            samples, stamps = inlet.pull_chunk(timeout=0.05, max_samples=4096)
            if stamps:
                now = pylsl.local_clock()
                got[name][0].extend(samples)
                got[name][1].extend(stamps)
                got[name][2].extend([now] * len(stamps))
    return got


def test_realtime_replay_equals_in_process_replay(xdf_dir, uid):
    path = xdf_dir / "bci_essentials_switch_example.xdf"
    speed = 40.0  # 134 s of recording in about 3.4 s
    with XdfSource(path) as source:
        expected = {name: c for name, c in read_all(source).items()}
        t_first = source.t_first
    player = Player(path, speed=speed, source_id_prefix=uid, wait_for_consumers_s=20)
    with player:
        inlets = _open_inlets(uid, expected.values())
        got = _collect(inlets, {n: c.n_times for n, c in expected.items()}, timeout_s=60)
        assert player.join(timeout=30)
        info = inlets["g.USBamp-1"].info(timeout=5)
    span = max(c.times[-1] for c in expected.values()) - t_first
    t_start = t_first + player.offset_s
    for name, chunk in expected.items():
        samples, stamps, arrival = (np.asarray(x) for x in got[name])
        assert len(stamps) == chunk.n_times, name
        if chunk.info.is_string:
            assert samples.T.tolist() == chunk.data.tolist()
        else:
            np.testing.assert_array_equal(samples.T.astype(chunk.data.dtype), chunk.data)
        # Timestamps: the recording's, shifted by offset_s (within float precision).
        np.testing.assert_allclose(stamps - player.offset_s, chunk.times, rtol=0, atol=1e-6)
        # Pacing: no sample arrived before its (speed-scaled) time.
        due = t_start + (chunk.times - t_first) / speed
        assert np.all(arrival >= due - 0.005), name
    assert max(got["g.USBamp-1"][2]) - t_start >= span / speed - 0.05
    assert player.n_pushed == {n: c.n_times for n, c in expected.items()}
    # The shift and the original source travel in the stream's desc.
    desc = info.desc()
    assert float(desc.child_value("replay_offset_s")) == player.offset_s
    assert desc.child_value("original_source_id") == "gUSBamp_1_UB-2016.05.45"
    assert info.desc().child("channels").child("channel").child_value("label") == "F3"
    assert info.source_id() == f"{uid}:gUSBamp_1_UB-2016.05.45"


def test_realtime_replay_through_the_live_lsl_source(xdf_dir, uid):
    """The live code path: Player -> LSL -> LslSource gives the recording's chunks."""
    path = xdf_dir / "bci_essentials_switch_example.xdf"
    names = ["g.USBamp-1", "UnityMarkerStream"]
    with XdfSource(path, streams=names) as source:
        expected = read_all(source)
    selectors = [f"source_id={uid}:gUSBamp_1_UB-2016.05.45", f"source_id={uid}:UnityMarkerStream"]
    got: dict[str, list] = {n: [] for n in names}
    player = Player(path, speed=40.0, streams=names, source_id_prefix=uid, wait_for_consumers_s=20)
    with player, LslSource(selectors, timeout_s=10) as live:
        watchdog = threading.Timer(60, live.stop)  # a deadline, should samples go missing
        watchdog.start()
        try:
            for chunk in live:
                if chunk.name in got:
                    got[chunk.name].append(chunk)
                if all(sum(c.n_times for c in got[n]) >= expected[n].n_times for n in names):
                    break
        finally:
            watchdog.cancel()
    for name in names:
        whole, want = concat(got[name]), expected[name]
        assert whole.n_times == want.n_times, name
        assert whole.data.tolist() == want.data.tolist()
        # liblsl's clock correction on one machine is microseconds
        np.testing.assert_allclose(whole.times - player.offset_s, want.times, rtol=0, atol=1e-3)
    assert {c.info.source_id for c in got["g.USBamp-1"]} == {f"{uid}:gUSBamp_1_UB-2016.05.45"}


def test_loop_continues_timestamps(xdf_dir, uid):
    path = xdf_dir / "minimal.xdf"
    eeg, markers = load_xdf(path)
    player = Player(path, speed=4.0, loop=True, source_id_prefix=uid, wait_for_consumers_s=20)
    with player:
        inlets = _open_inlets(uid, [eeg, markers])
        got = _collect(inlets, {eeg.name: 3 * eeg.n_times, markers.name: 0}, timeout_s=30)
    samples, stamps, _ = (np.asarray(x) for x in got[eeg.name])
    assert len(stamps) >= 3 * eeg.n_times
    assert player.passes >= 2
    samples, stamps = samples[: 3 * eeg.n_times], stamps[: 3 * eeg.n_times]
    np.testing.assert_array_equal(samples.T, np.tile(eeg.data, 3))
    # each pass starts one sample period (0.1 s) after the recording's end (5.9 s): +1.0 s
    n = eeg.n_times
    np.testing.assert_allclose(stamps[n : 2 * n] - stamps[:n], 1.0, atol=1e-9)
    np.testing.assert_allclose(stamps[2 * n :] - stamps[n : 2 * n], 1.0, atol=1e-9)


def test_scale_times_follows_the_clock(xdf_dir, uid):
    path = xdf_dir / "minimal.xdf"
    eeg, markers = load_xdf(path)
    player = Player(
        path, speed=2.0, scale_times=True, source_id_prefix=uid, wait_for_consumers_s=20
    )
    with player:
        inlets = _open_inlets(uid, [eeg, markers])
        got = _collect(inlets, {eeg.name: eeg.n_times, markers.name: 0}, timeout_s=30)
    stamps = np.asarray(got[eeg.name][1])
    np.testing.assert_allclose(np.diff(stamps), 0.05, atol=1e-9)  # 10 Hz at twice the speed
    np.testing.assert_allclose(stamps[0], eeg.times[0] + player.offset_s, atol=1e-9)


def test_any_source_and_stream_subset(shared_data, uid):
    path = shared_data / "openbci" / "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
    with OpenBciTextSource(path) as source:
        eeg = read_all(source)["EEG"]
    eeg = eeg.slice_times(eeg.times[0], eeg.times[0] + 20.0)  # first 20 s
    source = OpenBciTextSource(path)
    player = Player(
        source, speed=20.0, streams=["EEG"], source_id_prefix=uid, wait_for_consumers_s=20
    )
    with player:
        assert [s.name for s in player.streams] == ["EEG"]
        inlets = _open_inlets(uid, [eeg])
        got = _collect(inlets, {"EEG": eeg.n_times}, timeout_s=30)
    samples, stamps, _ = (np.asarray(x) for x in got["EEG"])
    samples, stamps = samples[: eeg.n_times], stamps[: eeg.n_times]
    np.testing.assert_array_equal(samples.T, eeg.data)
    np.testing.assert_allclose(stamps - player.offset_s, eeg.times, rtol=0, atol=1e-5)


def test_stop_is_prompt(xdf_dir, uid):
    path = xdf_dir / "bci_essentials_switch_example.xdf"
    player = Player(path, speed=1.0, source_id_prefix=uid)
    player.start()
    try:
        deadline = time.monotonic() + 10
        while player.n_pushed["g.USBamp-1"] == 0 and time.monotonic() < deadline:
            player.join(timeout=0.02)
        assert player.n_pushed["g.USBamp-1"] > 0
    finally:
        t = time.monotonic()
        player.stop()
    assert time.monotonic() - t < 1.0
    assert not player.running and player.join(timeout=0)
    assert player.n_pushed["g.USBamp-1"] < 34320
    player.stop()  # twice is fine


def test_player_validates(xdf_dir):
    path = xdf_dir / "minimal.xdf"
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="speed"):
            Player(path, speed=bad)
    player = Player(path, source_id_prefix="validate-test")
    with player, pytest.raises(ConfigError, match="already started"):
        player.start()


def test_cli_realtime_replay(xdf_dir, uid, capsys):
    path = xdf_dir / "minimal.xdf"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecordingWarning)
        rc = main(["replay", str(path), "--realtime", "--speed", "4", "--source-id-prefix", uid])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"source_id {uid}:SendDataC" in out and f"source_id {uid}:SendDataString" in out
    assert "done: pushed 18 samples" in out
    assert main(["replay", str(path), "--speed", "2"]) == 2
    assert "--speed only applies with --realtime" in capsys.readouterr().err
