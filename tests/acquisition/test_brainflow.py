"""BrainFlowSource and `bci-affect stream` against real BrainFlow (synthetic and playback boards)
and real LSL on localhost."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pylsl
import pytest

from acquisition.brainflow_source import (
    BOARD_IDS,
    BOARD_NAMES,
    COUNTERS,
    BrainFlowSource,
    CounterSpec,
    DropDetector,
    StampRegulariser,
    UnixToLslClock,
    _brainflow,
    board_description,
    clock_offset,
    find_dropped,
)
from acquisition.lsl import from_lsl_info
from bci_affect.cli import main
from bci_affect.core import ConfigError, DeviceError, FileFormatError, Source, read_all

FS = 250.0


def _collect(source: BrainFlowSource, seconds: float):
    """Chunks of ``source`` for ``seconds`` (stopped from a timer thread), with arrival times."""
    got = []
    with source:
        timer = threading.Timer(seconds, source.stop)
        timer.start()
        try:
            for chunk in source:
                got.append((chunk, pylsl.local_clock()))
        finally:
            timer.cancel()
    return got


def _record_synthetic(n_rows: int) -> np.ndarray:
    """``n_rows`` samples of BrainFlow's synthetic board, shape (num_rows, n_rows)."""
    bs = _brainflow()
    bs.BoardShim.disable_board_logger()
    shim = bs.BoardShim(BOARD_IDS["synthetic"], bs.BrainFlowInputParams())
    shim.prepare_session()
    try:
        shim.start_stream()
        deadline = time.monotonic() + 10 + n_rows / FS
        while shim.get_board_data_count() < n_rows:
            assert time.monotonic() < deadline, "synthetic board produced no data"
            time.sleep(0.01)
        data = shim.get_board_data(n_rows)
        shim.stop_stream()
    finally:
        shim.release_session()
    return data


def _write_csv(data: np.ndarray, path) -> None:
    from brainflow.data_filter import DataFilter

    DataFilter.write_file(np.ascontiguousarray(data), str(path), "w")


def _events(chunks: dict) -> list[dict]:
    ev = chunks.get("EEG-events")
    return [] if ev is None else [json.loads(s) for s in ev.data[0]]


# --------------------------------------------------------------------------------------------
# Pure parts: counters, clocks, regularisation
# --------------------------------------------------------------------------------------------


def test_board_ids_match_brainflow():
    bs = _brainflow()
    assert BOARD_IDS["synthetic"] == bs.BoardIds.SYNTHETIC_BOARD
    assert BOARD_IDS["cyton"] == bs.BoardIds.CYTON_BOARD
    assert BOARD_IDS["cyton-daisy"] == bs.BoardIds.CYTON_DAISY_BOARD
    assert BOARD_IDS["ganglion"] == bs.BoardIds.GANGLION_BOARD
    assert BOARD_IDS["playback"] == bs.BoardIds.PLAYBACK_FILE_BOARD
    assert set(BOARD_NAMES) == set(BOARD_IDS)


@pytest.mark.parametrize("start", [0, 17, 250])
def test_find_dropped_with_wrap(rng, start):
    full = (start + np.arange(2000)) % 256
    # Gaps of random sizes (< 256), some straddling the wrap from 255 to 0.
    removed, pos, expected = [], 5, []
    while pos < 1900:
        size = int(rng.integers(1, 40))
        removed.extend(range(pos, pos + size))
        expected.append((pos - len(removed) + size, size))
        pos += size + int(rng.integers(1, 200))
    keep = np.setdiff1d(np.arange(full.size), removed)
    assert find_dropped(full[keep], 256) == expected
    assert find_dropped(full, 256) == []


def test_find_dropped_step_repeats_and_unknowns():
    # Cyton-Daisy counts even numbers only.
    assert find_dropped([250, 252, 254, 0, 6, 8], 256, step=2) == [(4, 2)]
    # A repeated value is not a drop; NaN breaks the comparison.
    assert find_dropped([3, 4, 4, 5, np.nan, 9, 10], 256) == []
    assert find_dropped([], 256) == [] and find_dropped([7], 256) == []
    with pytest.raises(ConfigError, match="modulo"):
        find_dropped([1, 2], 1)


@pytest.mark.parametrize("n_splits", [1, 3, 29])
def test_drop_detector_chunk_invariant(rng, n_splits):
    full = np.arange(3000) % 256
    removed = np.concatenate([np.arange(10, 13), [255, 256, 257], np.arange(1000, 1100)])
    keep = np.setdiff1d(np.arange(full.size), removed)
    expected = find_dropped(full[keep], 256)
    det = DropDetector(COUNTERS["cyton"])
    cuts = np.sort(rng.choice(np.arange(1, keep.size), n_splits - 1, replace=False))
    ns, drops, offset = [], [], 0
    for part in np.split(full[keep], cuts):
        n, d = det(part.astype(float))
        ns.append(n)
        drops += [(offset + i, k) for i, k in d]
        offset += part.size
    assert drops == expected
    # Sample indices keep every kept sample at its original position.
    np.testing.assert_array_equal(np.concatenate(ns), keep)


def test_drop_detector_ganglion_packets():
    # Ganglion: packet ids 1..100 (18-bit) then 101..200 (19-bit), two samples per packet.
    ids = np.repeat(np.r_[np.arange(1, 101), np.arange(101, 201), np.arange(1, 51)], 2)
    packet_of_sample = np.repeat(np.arange(ids.size // 2), 2)
    lost_packets = {40, 41, 99, 100, 101, 160}  # includes the 100 -> 101 hand-over
    keep = np.flatnonzero(~np.isin(packet_of_sample, list(lost_packets)))
    n, drops = DropDetector(COUNTERS["ganglion"])(ids[keep])
    np.testing.assert_array_equal(n, keep)
    assert [k for _, k in drops] == [4, 6, 2]
    assert [int(keep[i]) for i, _ in drops] == [84, 204, 322]


def test_drop_detector_without_counter_counts_arrivals():
    det = DropDetector(None)
    np.testing.assert_array_equal(det(np.zeros(3))[0], [0, 1, 2])
    np.testing.assert_array_equal(det(np.zeros(2))[0], [3, 4])


def test_counter_spec_rejects_nonsense():
    with pytest.raises(ConfigError, match="CounterSpec needs modulo >= 2"):
        CounterSpec(modulo=1)


def test_clock_offset_maps_unix_time_to_lsl():
    offset, uncertainty = clock_offset()
    assert 0 <= uncertainty < 1e-3
    clock = UnixToLslClock()
    lsl_before = pylsl.local_clock()
    mapped = float(clock(time.time()))
    lsl_after = pylsl.local_clock()
    assert lsl_before - 1e-3 <= mapped <= lsl_after + 1e-3
    assert abs(clock.offset_s - offset) < 1e-3


def _simulate_arrivals(rng, n_samples, fs_true, batch, t0=1000.0):
    """True sample times and packet-arrival stamps (batches share the stamp, random latency)."""
    true = t0 + np.arange(n_samples) / fs_true
    batch_end = np.minimum((np.arange(n_samples) // batch + 1) * batch - 1, n_samples - 1)
    latency = 0.002 + rng.exponential(0.003, n_samples // batch + 1)
    arrival = true[batch_end] + latency[np.arange(n_samples) // batch]
    return true, arrival


def test_regulariser_removes_jitter_and_follows_the_real_rate(rng):
    fs_true = FS * (1 + 8e-5)  # a crystal 80 ppm fast
    true, arrival = _simulate_arrivals(rng, 60 * int(FS), fs_true, batch=6)
    reg = StampRegulariser(FS)
    n = np.arange(true.size)
    out = []
    for sl in np.array_split(np.arange(true.size), true.size // 5):
        t, jump = reg(n[sl], arrival[sl])
        assert jump is None
        out.append(t)
    t = np.concatenate(out)
    assert np.all(np.diff(t) > 0)
    late = slice(20 * int(FS), None)
    # The line sits a constant latency after the true times; its scatter is far below the
    # arrival jitter.
    err = t[late] - true[late]
    raw_err = arrival[late] - true[late]
    assert err.std() < raw_err.std() / 5
    assert 0 < err.mean() < 0.02
    assert abs(reg.rate_hz / fs_true - 1) < 2e-5
    # Intervals: the real period, moved by at most the 0.2 % slew.
    np.testing.assert_allclose(np.diff(t[late]), 1 / fs_true, rtol=2.5e-3)
    assert abs(np.median(np.diff(t[late])) * fs_true - 1) < 1e-4


def test_regulariser_restarts_on_a_jump(rng):
    _, arrival = _simulate_arrivals(rng, 2000, FS, batch=5)
    arrival[1000:] += 2.0  # 2 s of silence the counter does not show
    reg = StampRegulariser(FS)
    n = np.arange(arrival.size)
    jumps, out = [], []
    for sl in np.array_split(n, 200):
        t, jump = reg(n[sl], arrival[sl])
        out.append(t)
        if jump is not None:
            jumps.append((int(sl[0]), jump))
    assert len(jumps) == 1
    assert 990 <= jumps[0][0] <= 1000 and 1.9 < jumps[0][1] < 2.1
    t = np.concatenate(out)
    assert np.all(np.diff(t) > 0)
    assert abs(np.median(t[1100:] - arrival[1100:])) < 0.01


def test_regulariser_validates():
    with pytest.raises(ConfigError, match="sfreq"):
        StampRegulariser(0)
    with pytest.raises(
        ConfigError,
        match=r"n and .* s must be 1-D arrays of the same length, got shapes \(3,\) and \(2,\)",
    ):
        StampRegulariser(FS)(np.arange(3), np.zeros(2))


# --------------------------------------------------------------------------------------------
# Configuration errors
# --------------------------------------------------------------------------------------------


def test_unknown_board_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown board 'muse-s'; valid boards: ") as err:
        BrainFlowSource("muse-s")
    assert "'muse-s'" in str(err.value)
    for name in BOARD_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("board", ["cyton", "cyton-daisy", "ganglion"])
def test_serial_boards_need_a_port(board):
    with pytest.raises(ConfigError, match="--serial-port") as err:
        BrainFlowSource(board)
    assert "/dev/ttyUSB0" in str(err.value)


def test_port_or_file_where_the_board_takes_none(tmp_path):
    with pytest.raises(ConfigError, match="does not use a serial port"):
        BrainFlowSource("synthetic", serial_port="/dev/ttyUSB0")
    with pytest.raises(ConfigError, match="does not read a file"):
        BrainFlowSource("synthetic", file=tmp_path / "x.csv")


def test_playback_needs_an_existing_file_and_a_known_master(tmp_path):
    with pytest.raises(ConfigError, match="--file"):
        BrainFlowSource("playback")
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match="does not exist") as err:
        BrainFlowSource("playback", file=missing)
    assert str(missing) in str(err.value)
    (tmp_path / "a.csv").write_text("1\t2\n")
    with pytest.raises(ConfigError, match="master board 'playback'"):
        BrainFlowSource("playback", file=tmp_path / "a.csv", master_board="playback")


def test_playback_file_with_wrong_columns(tmp_path):
    path = tmp_path / "cyton.csv"
    path.write_text("\t".join(["0.0"] * 24) + "\n")  # a Cyton file (24 rows per sample)
    with pytest.raises(FileFormatError, match="--master-board") as err:
        BrainFlowSource("playback", file=path, master_board="synthetic")
    assert "24 columns" in str(err.value) and "32" in str(err.value)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(FileFormatError, match="no data rows"):
        BrainFlowSource("playback", file=empty)


def test_montage_override_and_mismatch():
    labels = [f"E{i}" for i in range(16)]
    src = BrainFlowSource("synthetic", montage=labels, name="Head")
    assert src.streams[0].ch_names == tuple(labels)
    assert [s.name for s in src.streams] == ["Head", "Head-accel", "Head-events"]
    with pytest.raises(ConfigError, match="montage has 8 labels but board 'synthetic' has 16"):
        BrainFlowSource("synthetic", montage=labels[:8])
    with pytest.raises(ConfigError, match="unique"):
        BrainFlowSource("synthetic", montage=["A"] * 16)
    cyton = BrainFlowSource("cyton", serial_port="/dev/ttyUSB9", montage=labels[:8])
    assert cyton.streams[0].ch_names == tuple(labels[:8])
    assert cyton.source_id == "bci-affect:cyton:/dev/ttyUSB9"


def test_ganglion_channels_get_names():
    info = BrainFlowSource("ganglion", serial_port="/dev/ttyACM0").streams[0]
    assert info.ch_names == ("EEG1", "EEG2", "EEG3", "EEG4") and info.sfreq == 200


def test_unopenable_port_is_a_device_error(uid):
    port = f"/dev/bci-affect-no-such-port-{uid}"
    src = BrainFlowSource("cyton", serial_port=port)
    with pytest.raises(DeviceError, match="cannot open board 'cyton' on serial port") as err, src:
        pass
    assert "'cyton'" in str(err.value) and port in str(err.value)
    with pytest.raises(DeviceError, match="not open"):
        next(iter(src))


# --------------------------------------------------------------------------------------------
# The synthetic board, live
# --------------------------------------------------------------------------------------------


def test_synthetic_streams_metadata_and_timestamps():
    src = BrainFlowSource("synthetic")
    assert isinstance(src, Source)
    descr = board_description("synthetic")
    eeg, accel, events = src.streams
    assert (eeg.name, eeg.type, eeg.sfreq) == ("EEG", "EEG", FS)
    assert eeg.ch_names == tuple(descr["eeg_names"].split(","))
    assert set(eeg.units) == {"microvolts"}
    assert (accel.name, accel.type, accel.ch_names, set(accel.units)) == (
        "EEG-accel",
        "Accelerometer",
        ("AccX", "AccY", "AccZ"),
        {"g"},
    )
    assert (events.name, events.type, events.channel_format, events.sfreq) == (
        "EEG-events",
        "Markers",
        "string",
        0.0,
    )
    assert eeg.source_id == "bci-affect:synthetic:synthetic"

    got = _collect(src, 2.5)
    eeg_chunks = [(c, arrival) for c, arrival in got if c.name == "EEG"]
    sizes = [c.n_times for c, _ in eeg_chunks]
    assert not [c for c, _ in got if c.name == "EEG-events"], "no drops expected"
    times = np.concatenate([c.times for c, _ in eeg_chunks])
    data = np.concatenate([c.data for c, _ in eeg_chunks], axis=1)
    assert data.shape[0] == 16 and data.dtype == np.float32
    assert 1.5 * FS < times.size < 3.5 * FS
    assert src.stats.n_samples == times.size and src.stats.n_dropped == 0
    # Stamps land just before the moment the chunk reached us (LSL clock).
    lags = np.array([arrival - c.times[-1] for c, arrival in eeg_chunks])
    assert lags.min() > -0.005 and lags.max() < 0.25
    assert 0 <= np.median(lags) < 0.04
    # The README's promise: each chunk continues the line already issued, slewed towards the
    # fit by at most 0.2 %, so every interval lies within 0.2 % of T (T = 1 / FS here: the
    # rate is fitted only after 5 s). Only a chunk whose fit lies more than 20 ms off the
    # issued line (a stalled board) steps to it; at most one such chunk in 2.5 s.
    dt = np.diff(times)
    assert np.all(dt > 0)
    off = np.abs(dt * FS - 1) > 2e-3 + 1e-6  # + float64 rounding of the stamps
    chunk_of_interval = np.repeat(np.arange(len(sizes)), sizes)[1:]
    stepped = np.unique(chunk_of_interval[off])
    assert stepped.size <= 1, [(i, dt[chunk_of_interval == i] * FS - 1) for i in stepped]
    assert abs(np.median(dt) * FS - 1) < 1e-3
    # The accelerometer shares the EEG stamps.
    accel_times = np.concatenate([c.times for c, _ in got if c.name == "EEG-accel"])
    np.testing.assert_array_equal(accel_times, times)


# --------------------------------------------------------------------------------------------
# Playback of a recording with dropped rows or a pause
# --------------------------------------------------------------------------------------------


def _play(path, seconds_max: float, **kw) -> tuple[dict, BrainFlowSource, bool]:
    src = BrainFlowSource("playback", file=path, master_board="synthetic", **kw)
    stopped_by_timer = threading.Event()

    def stop():
        stopped_by_timer.set()
        src.stop()

    timer = threading.Timer(seconds_max, stop)
    with src:
        timer.start()
        try:
            chunks = read_all(src)
        finally:
            timer.cancel()
    return chunks, src, stopped_by_timer.is_set()


def test_playback_reports_exactly_the_deleted_rows(tmp_path):
    data = _record_synthetic(400)
    counter = data[0]
    # The synthetic board counts 0..255 and wraps, one step per sample.
    assert np.all(np.mod(np.diff(counter), 256) == 1)
    wrap = int(np.flatnonzero(np.diff(counter) < 0)[0]) + 1  # first row after 255 -> 0
    deleted = [np.arange(40, 43), np.array([120]), np.arange(wrap - 4, wrap + 6)]
    keep = np.setdiff1d(np.arange(data.shape[1]), np.concatenate(deleted))
    path = tmp_path / "synthetic.csv"
    _write_csv(data[:, keep], path)

    chunks, src, timed_out = _play(path, 15.0)
    assert not timed_out, "playback did not end at the end of the file"
    eeg = chunks["EEG"]
    assert eeg.n_times == keep.size
    np.testing.assert_allclose(eeg.data, data[1:17, keep], rtol=1e-6, atol=1e-4)

    events = _events(chunks)
    drops = [e for e in events if e["event"] == "dropped_samples"]
    assert [e["n"] for e in drops] == [len(d) for d in deleted]
    assert all(e["stream"] == "EEG" for e in drops)
    assert not [e for e in events if e["event"] != "dropped_samples"]
    assert src.stats.n_dropped == sum(len(d) for d in deleted) and src.stats.n_drops == 3
    # Each drop is placed where the first missing sample belonged, and the stamps keep room for
    # the missing samples.
    for d, e in zip(deleted, drops, strict=True):
        after = int(np.searchsorted(keep, d[-1] + 1))
        assert e["t"] == pytest.approx(eeg.times[after] - len(d) / FS, abs=2e-3)
        assert eeg.times[after] - eeg.times[after - 1] == pytest.approx((len(d) + 1) / FS, abs=2e-3)
    np.testing.assert_array_equal(chunks["EEG-events"].times, [e["t"] for e in drops])


def test_playback_pause_gives_gap_and_lost_recovered_events(tmp_path):
    data = _record_synthetic(300)
    data[30, 150:] += 1.5  # the recording's clock shows a 1.5 s pause, the counter does not
    path = tmp_path / "paused.csv"
    _write_csv(data, path)

    chunks, src, timed_out = _play(path, 15.0, stall_s=0.5)
    assert not timed_out
    assert chunks["EEG"].n_times == 300
    events = _events(chunks)
    kinds = [e["event"] for e in events]
    assert kinds == ["stream_lost", "gap", "stream_recovered"]
    lost, gap, recovered = events
    t = chunks["EEG"].times
    assert gap["start"] == pytest.approx(t[149]) and gap["end"] == pytest.approx(t[150])
    assert gap["end"] - gap["start"] == pytest.approx(1.5, abs=0.1)
    assert lost["t"] <= gap["start"] + 1e-9 and recovered["t"] == pytest.approx(t[150])
    assert np.all(np.diff(t) > 0) and src.stats.n_gaps == 1 and src.stats.n_dropped == 0


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stream", "--board", "nope"], "unknown board 'nope'; valid boards: synthetic, cyton"),
        (["stream", "--board", "cyton"], "needs --serial-port"),
        (["stream", "--board", "playback"], "needs --file"),
        (["stream", "--board", "synthetic", "--montage", "Fp1,Fp2"], "montage has 2 labels"),
        (["stream", "--board", "synthetic", "--duration", "0"], "--duration must be > 0"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bci-affect stream: error: ")
    assert expected in err


@pytest.mark.lsl
def test_cli_streams_synthetic_board_to_lsl(capsys, uid):
    sid = f"bci-affect-test:{uid}"
    montage = [f"C{i}" for i in range(16)]
    result = {}
    argv = ["stream", "--board", "synthetic", "--name", f"EEG{uid}", "--source-id", sid]
    argv += ["--montage", ",".join(montage), "--duration", "4"]
    thread = threading.Thread(target=lambda: result.setdefault("rc", main(argv)))
    thread.start()
    try:
        found = pylsl.resolve_byprop("source_id", sid, timeout=10)
        assert len(found) == 1, "the EEG stream was not found by its source_id"
        inlet = pylsl.StreamInlet(found[0])
        info = from_lsl_info(inlet.info(timeout=5))
        assert (info.name, info.type, info.sfreq) == (f"EEG{uid}", "EEG", FS)
        assert info.ch_names == tuple(montage) and set(info.units) == {"microvolts"}
        inlet.open_stream(timeout=5)
        samples, stamps = [], []
        deadline = time.monotonic() + 10
        while len(stamps) < 2 * FS and time.monotonic() < deadline:
            s, t = inlet.pull_chunk(timeout=1.0)
            samples += s
            stamps += t
            if t:
                # Stamps are on this machine's LSL clock, a few tens of ms behind "now".
                assert -0.01 < pylsl.local_clock() - t[-1] < 0.5
        assert len(stamps) >= 2 * FS
        stamps = np.asarray(stamps)
        assert np.asarray(samples).shape[1] == 16
        assert abs((len(stamps) - 1) / (stamps[-1] - stamps[0]) / FS - 1) < 0.01
        accel = pylsl.resolve_byprop("source_id", f"{sid}:accel", timeout=5)
        assert accel and accel[0].type() == "Accelerometer"
    finally:
        thread.join(timeout=20)
    assert not thread.is_alive() and result["rc"] == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"publishing 'EEG{uid}': type EEG, 16 ch (C0,C1,")
    assert out[0].endswith(f"250 Hz, source_id {sid}")
    assert [line.split("'")[1] for line in out[:3]] == [
        f"EEG{uid}",
        f"EEG{uid}-accel",
        f"EEG{uid}-events",
    ]
    assert out[-1].startswith("streamed ") and "0 dropped samples" in out[-1]
    n_eeg = int(out[-1].split(f"EEG{uid} ")[1].split(" samples")[0])
    assert 3 * FS < n_eeg < 5 * FS


@pytest.mark.lsl
def test_cli_process_ends_cleanly_on_sigterm(uid):
    sid = f"bci-affect-test:{uid}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bci_affect", "stream", "--board", "synthetic"]
        + ["--name", f"EEG{uid}", "--source-id", sid],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the streams are announced and visible on the network.
        assert pylsl.resolve_byprop("source_id", sid, timeout=15), "stream never appeared"
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("streamed ")
    assert int(lines[-1].split(f"EEG{uid} ")[1].split(" samples")[0]) > 0
