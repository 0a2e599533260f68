"""Sample-counter reconstruction of text recordings, with the host timestamps as a witness.

Every file here is made by the test, BrainFlow CSVs through BrainFlow's own
``DataFilter.write_file``, from a known truth: which board samples exist, which were lost,
repeated, written out of order or written twice, and when each was taken on the host clock.
The reconstruction is checked against that truth sample by sample.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from acquisition.textfiles import (
    BrainFlowCsvSource,
    counter_layout,
    reconstruct_counter,
)
from bci_affect.core import read_all

DAISY_FS = 125.0  # Cyton+Daisy: 16 channels, 125 Hz, counter 0, 2, ..., 254
DAISY_CYCLE = 128  # samples per counter cycle (256 / 2)
T0 = 1_715_000_000.0  # host clock at the first sample, unix seconds


@dataclass
class Truth:
    """What a made-up recording really holds; the rows are in file order."""

    positions: np.ndarray  # (n_rows,) true sample number of each row
    arrival: np.ndarray  # (n_rows,) host timestamp written with each row, s
    board_fs: float  # the board's real rate on the host clock, Hz
    markers: dict[int, float] = field(default_factory=dict)  # true position -> marker value

    def sample_time(self, pos: np.ndarray) -> np.ndarray:
        """When sample ``pos`` was taken, on the host clock (s)."""
        return T0 + np.asarray(pos) / self.board_fs

    @property
    def kept(self) -> np.ndarray:
        """Distinct true positions in the file, sorted."""
        return np.unique(self.positions)

    @property
    def n_missing(self) -> int:
        k = self.kept
        return int(k[-1] - k[0] + 1 - k.size)


def make_rows(
    rng: np.random.Generator,
    *,
    n_true: int = 10_325,
    long_gaps: tuple[tuple[int, int], ...] = (),
    n_small_lost: int = 0,
    n_repeat: int = 0,
    n_swap: int = 0,
    n_copy: int = 0,
    stalls: tuple[tuple[int, int], ...] = (),
    board_fs: float = DAISY_FS * (1 + 3e-4),
    n_markers: int = 0,
) -> Truth:
    """Rows of a board recording with known faults.

    ``long_gaps``: ``(start, n)`` runs of lost samples; ``n_small_lost`` more samples lost in
    runs of 1-12; ``n_repeat`` packets written twice in a row; ``n_swap`` packets written 1-4
    packets late; ``n_copy`` packets written again 1-4 packets later; ``stalls``: ``(start, n)``
    samples held back and delivered in one burst with the next sample. Host timestamps
    follow the USB link: 16 ms blocks, up to 1 ms jitter, never decreasing.
    """
    lost = np.zeros(n_true, dtype=bool)
    for start, n in long_gaps:
        lost[start : start + n] = True
    protected = np.zeros(n_true, dtype=bool)  # around long gaps and the ends: keep clean
    for start, n in long_gaps:
        protected[max(0, start - 20) : start + n + 20] = True
    protected[:20] = protected[-20:] = True
    while n_small_lost > 0:
        n = int(min(n_small_lost, rng.integers(1, 13)))
        start = int(rng.integers(20, n_true - 40))
        if protected[start - 3 : start + n + 3].any() or lost[start - 3 : start + n + 3].any():
            continue
        lost[start : start + n] = True
        n_small_lost -= n
    rows = list(np.flatnonzero(~lost))
    # faults on rows 9 apart at least, so each is one clear pattern
    slots = np.arange(10, len(rows) - 10, 9)
    near_gap = np.searchsorted(rows, [s for s, _ in long_gaps])
    slots = slots[[not any(abs(int(j) - int(g)) < 9 for g in near_gap) for j in slots]]
    slots = rng.permutation(slots)[: n_repeat + n_swap + n_copy]
    assert slots.size == n_repeat + n_swap + n_copy, "too many faults for the rows"
    kinds = ["repeat"] * n_repeat + ["swap"] * n_swap + ["copy"] * n_copy
    plan = list(zip(slots.tolist(), kinds, strict=True))
    kind_at = dict(plan)
    order: list[int] = []
    delayed: list[tuple[int, int]] = []  # (release after row index, position)
    for j, p in enumerate(rows):
        kind = kind_at.get(j)
        if kind == "swap":
            delayed.append((j + int(rng.integers(1, 5)), p))
            continue
        order.append(p)
        if kind == "repeat":
            order.append(p)
        elif kind == "copy":
            order.append(rows[j - int(rng.integers(1, 5))])
        for due in [d for d in delayed if d[0] == j]:
            order.append(due[1])
            delayed.remove(due)
    positions = np.array(order, dtype=np.int64)
    taken = T0 + positions / board_fs
    block = 0.016
    arrival = np.ceil((taken + 0.002 - T0) / block) * block + T0 + rng.uniform(0, 1e-3, taken.size)
    for start, n in stalls:
        held = (positions >= start) & (positions < start + n)
        arrival[held] = arrival[np.flatnonzero(positions >= start + n)[0]]
    arrival = np.maximum.accumulate(arrival)  # stamped on arrival: file order
    markers = {}
    if n_markers:
        clean = [p for j, p in enumerate(rows) if j not in kind_at and 50 < j < len(rows) - 50]
        for k, p in enumerate(rng.choice(clean, n_markers, replace=False)):
            markers[int(p)] = float(k + 1)
    return Truth(positions, arrival, board_fs, markers)


def write_brainflow(path: Path, truth: Truth, *, counter_step: int = 2) -> Path:
    """The rows as a Cyton+Daisy BrainFlow CSV, written by ``DataFilter.write_file``.

    EEG channel 1 holds the true position (µV) so the order of the samples read back can be
    checked; channel 2 a 10 Hz sine of the true sample time.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brainflow.board_shim import BoardIds, BoardShim
        from brainflow.data_filter import DataFilter

    descr = BoardShim.get_board_descr(BoardIds.CYTON_DAISY_BOARD.value)
    data = np.zeros((descr["num_rows"], truth.positions.size))
    data[descr["package_num_channel"]] = (counter_step * truth.positions) % 256
    eeg = descr["eeg_channels"]
    data[eeg[0]] = truth.positions
    data[eeg[1]] = 50 * np.sin(2 * np.pi * 10 * truth.positions / DAISY_FS)
    data[descr["timestamp_channel"]] = truth.arrival
    for p, value in truth.markers.items():
        data[descr["marker_channel"], np.flatnonzero(truth.positions == p)[0]] = value
    DataFilter.write_file(data, str(path), "w")
    return path


def read_back(path: Path, **kwargs):
    """(whole recording by stream name, the source) of a Cyton+Daisy CSV."""
    with BrainFlowCsvSource(path, board="cyton-daisy", **kwargs) as src:
        return read_all(src), src


def events_of(whole, kind: str) -> list[dict]:
    if "EEG-events" not in whole:
        return []
    return [e for e in map(json.loads, whole["EEG-events"].data[0]) if e["event"] == kind]


def check_against_truth(whole, src, truth: Truth, *, tol_s: float = 0.003) -> None:
    """Every kept sample in its true place and time; counts exact; span within bounds."""
    eeg = whole["EEG"]
    kept = truth.kept
    # each distinct sample once, in time order (channel 1 holds the true position)
    np.testing.assert_array_equal(eeg.data[0], kept)
    # reconstructed times: the true sample times, up to the link's constant latency
    err = eeg.times - truth.sample_time(kept)
    assert np.ptp(err) < tol_s, f"times off by up to {np.ptp(err) * 1e3:.2f} ms"
    assert 0 <= np.median(err) < 0.03  # the line sits on the arrivals, a few ms late
    rec = src.counter_report
    assert src.n_dropped == rec.n_dropped == truth.n_missing
    drops = events_of(whole, "dropped_samples")
    assert sum(e["n"] for e in drops) == truth.n_missing
    host_span = truth.arrival[-1] - truth.arrival[0]
    span = eeg.times[-1] - eeg.times[0]
    assert span <= host_span + DAISY_CYCLE / DAISY_FS


# --------------------------------------------------------------------------------------------
# the issue's file: 7,500 rows of Cyton+Daisy with every fault at once


@pytest.fixture(scope="module")
def issue_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    truth = make_rows(
        rng,
        long_gaps=((2000, 300), (4000, 256), (6000, 122), (8000, 255)),
        n_small_lost=3252 - 300 - 256 - 122 - 255,
        n_repeat=387,
        n_swap=60,
        n_copy=40,
        stalls=((5000, 100),),
        n_markers=6,
    )
    assert truth.positions.size == 7500
    path = write_brainflow(tmp_path_factory.mktemp("issue") / "BrainFlow-RAW-daisy.csv", truth)
    return path, truth


def test_issue_file_every_sample_in_place(issue_file, caplog):
    """7,500 rows: 387 repeated packets, 60 written late, 40 written twice, real gaps, gaps of
    whole counter cycles (one the counter reads as a step back, one as a repeat, one as no
    gap at all) and a stall: every kept sample at its true place and time."""
    path, truth = issue_file
    with caplog.at_level(logging.WARNING, logger="acquisition.textfiles"):
        whole, src = read_back(path)
    check_against_truth(whole, src, truth)
    rec = src.counter_report
    assert rec.layout.step == 2 and rec.layout.modulus == 256 and rec.layout.cycle == DAISY_CYCLE
    assert rec.n_rows == 7500 and rec.n_kept == truth.kept.size == 7073
    assert rec.n_duplicates == 387 + 40 and rec.n_repeated == 387
    assert rec.n_reordered == 60
    assert sum(e["n"] for e in events_of(whole, "duplicate_samples")) == 427
    assert sum(e["n"] for e in events_of(whole, "reordered_samples")) == 60
    # whole cycles: 300 lost = 2 cycles + 44; 256 = 2 cycles exactly; 122 (+1) reads as a step
    # of -5 (1 cycle); 255 (+1) reads as a repeat (2 cycles)
    long_drops = [e for e in events_of(whole, "dropped_samples") if e["n"] >= 122]
    assert [(e["n"], e.get("lost_cycles", 0)) for e in long_drops] == [
        (300, 2),
        (256, 2),
        (122, 1),
        (255, 2),
    ]
    # each stamped when its first missing sample was due
    kept = truth.kept
    starts = kept[:-1][np.diff(kept) > 122] + 1
    due = truth.sample_time(starts)
    assert np.abs(np.array([e["t"] for e in long_drops]) - due).max() < 0.03
    # markers where they happened
    markers = whole["Markers"]
    by_value = {v: p for p, v in truth.markers.items()}
    values = [json.loads(m)["value"] for m in markers.data[0]]
    want = truth.sample_time([by_value[v] for v in values])
    assert np.abs(markers.times - want).max() < 0.03
    # one summary line; no wrong-rate warning (before: "timestamps run at 260.6 Hz")
    lines = [r.getMessage() for r in caplog.records]
    summary = [m for m in lines if "sample counter:" in m]
    assert len(summary) == 1 and "\n" not in summary[0]
    assert (
        "427 duplicate rows dropped (387 repeated in place, 40 written again later)" in (summary[0])
    )
    assert "60 out-of-order rows" in summary[0] and "3252 samples missing" in summary[0]
    assert not [m for m in lines if "timestamps give" in m]
    # times: unix, the file's own clock
    assert whole["EEG"].info.desc["time_base"] == "unix"


# --------------------------------------------------------------------------------------------
# one pattern at a time


PATTERNS = {
    "duplicates": {"n_repeat": 60, "n_copy": 25},
    "reordering": {"n_swap": 40},
    "real-gaps": {"n_small_lost": 300, "long_gaps": ((1500, 90),)},  # 90 < 3/4 cycle: seen
    "wrap-across-long-gaps": {"long_gaps": ((800, 300), (1600, 256), (2400, 122), (3200, 511))},
    "stall-longer-than-a-cycle": {"stalls": ((1500, 190),)},  # 1.5 s held, then a burst
}


@pytest.mark.parametrize("name", list(PATTERNS))
def test_pattern(name, tmp_path):
    truth = make_rows(np.random.default_rng(3), n_true=4000, **PATTERNS[name])
    whole, src = read_back(write_brainflow(tmp_path / f"{name}.csv", truth))
    check_against_truth(whole, src, truth)
    rec = src.counter_report
    kw = PATTERNS[name]
    assert rec.n_duplicates == kw.get("n_repeat", 0) + kw.get("n_copy", 0)
    assert rec.n_repeated == kw.get("n_repeat", 0)
    assert rec.n_reordered == kw.get("n_swap", 0)
    cycles = [e.get("lost_cycles", 0) for e in events_of(whole, "dropped_samples")]
    if name == "wrap-across-long-gaps":
        # 300 = 2 x 128 + 44; 256 = 2 x 128 (the counter shows no gap); 122 + 1 reads as a
        # step back of 5; 511 + 1 = 4 x 128 (the counter shows a repeat)
        assert [e["n"] for e in events_of(whole, "dropped_samples")] == [300, 256, 122, 511]
        assert cycles == [2, 2, 1, 4]
    else:
        assert not any(cycles)


def test_repeated_value_can_be_a_gap_of_whole_cycles():
    """Without timestamps a repeated counter value is a duplicate; with them, a repeat that
    arrives a whole cycle later is a gap of one cycle (the counter alone cannot tell)."""
    pos = np.r_[0:300, 300 + DAISY_CYCLE - 1 : 700]  # 127 lost: counter steps by 0
    counter = (2 * pos) % 256
    alone = reconstruct_counter(counter, None, DAISY_FS)
    assert alone.n_duplicates == 1 and alone.time_base == "zero"
    np.testing.assert_allclose(alone.times[alone.order][:3], np.arange(3) / DAISY_FS)
    host = T0 + pos / DAISY_FS + 0.004
    both = reconstruct_counter(counter, host, DAISY_FS)
    np.testing.assert_array_equal(both.positions, pos)
    assert both.n_duplicates == 0 and both.gaps() == [(300, 127, 1)]
    assert both.time_base == "unix"
    np.testing.assert_allclose(both.times, host - 0.004, atol=1e-6)


def test_span_never_exceeds_host_span_by_more_than_one_period(tmp_path, caplog):
    """A stall longer than the 5 s the host clock is read over fools the witness into whole
    cycles; they are taken back until the span fits the host timestamps (with a warning)."""
    truth = make_rows(np.random.default_rng(5), n_true=4000, stalls=((1500, 900),))
    with caplog.at_level(logging.WARNING, logger="acquisition.textfiles"):
        whole, src = read_back(write_brainflow(tmp_path / "stall.csv", truth))
    eeg = whole["EEG"]
    host_span = truth.arrival[-1] - truth.arrival[0]
    assert eeg.times[-1] - eeg.times[0] <= host_span + DAISY_CYCLE / DAISY_FS
    rec = src.counter_report
    assert rec.n_clamped >= 1
    assert any("taken back" in r.getMessage() for r in caplog.records)


def test_rate_warning_says_which_rate(tmp_path, caplog):
    """A board recorded at 250 Hz read as the nominal 125 Hz: the warning gives the rate of the
    host clock against the reconstructed samples and the rate of the rows, both right."""
    truth = make_rows(np.random.default_rng(1), n_true=5000, n_small_lost=1000, board_fs=250.0)
    with caplog.at_level(logging.WARNING, logger="acquisition.textfiles"):
        whole, src = read_back(write_brainflow(tmp_path / "fast.csv", truth))
    [msg] = [r.getMessage() for r in caplog.records if "timestamps give" in r.getMessage()]
    host_span = truth.arrival[-1] - truth.arrival[0]
    row_rate = truth.positions.size / host_span  # 4000 rows over 20 s: 200 Hz
    assert f"give {src.counter_report.fitted_rate_hz:.4g} Hz" in msg
    assert src.counter_report.fitted_rate_hz == pytest.approx(250.0, rel=2e-3)
    assert f"{truth.positions.size} rows over {host_span:.3f} s" in msg
    assert f"= {row_rate:.4g} Hz" in msg and "nominal rate is 125 Hz" in msg
    # times follow the nominal rate; the counter still places every sample
    np.testing.assert_allclose(
        np.diff(whole["EEG"].times), np.diff(truth.kept) / DAISY_FS, rtol=0, atol=1e-6
    )
    assert src.n_dropped == truth.n_missing


def test_counter_layout():
    assert counter_layout(np.arange(600) % 256).modulus == 256
    daisy = counter_layout((2 * np.arange(600)) % 256)
    assert (daisy.step, daisy.modulus, daisy.cycle) == (2, 256, 128)
    assert counter_layout(np.arange(100)).modulus is None  # never wraps
    assert counter_layout(np.repeat(np.arange(1, 101), 2)).repeats  # Ganglion: 2 per value
    irregular = np.cumsum(np.random.default_rng(0).choice([2, 3], 500))
    assert counter_layout(irregular) is None
