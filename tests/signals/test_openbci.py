"""The signals chain on a real OpenBCI Cyton recording (see ../shared/data/README.md).

Facts of the recording: eye blinks in the first ~20 s (Fp1, Fp2), jaw clenches around 8-16 s
and after 80 s, eyes closed with strong posterior alpha from about 28 s to 76 s (O1, O2).
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from bci_affect.core import Chunk, StreamInfo
from bci_affect.processors import (
    Preprocess,
    SignalPipeline,
    SignalsConfig,
    extract_features,
    process_recording,
    score_windows,
)

CFG = SignalsConfig.make(line_hz=60.0)  # recorded in the Americas: 60 Hz mains
O1, O2 = 6, 7


@pytest.fixture(scope="module")
def scored(openbci_eeg):
    results = process_recording(openbci_eeg, None, CFG)
    t0 = openbci_eeg.times[0]
    end = np.array([r.t_end - t0 for r in results])
    return {
        "results": results,
        "end": end,
        "start": end - CFG.window.window_s,
        "blink": np.array([float(r.quality.blink_score) for r in results]),
        "blink_flag": np.array([bool(r.quality.blink) for r in results]),
        "muscle": np.array([float(r.quality.muscle_score) for r in results]),
        "muscle_flag": np.array([bool(r.quality.muscle) for r in results]),
        "alpha_beta": np.array(
            [
                np.mean(r.features.power[[O1, O2], 2] / r.features.power[[O1, O2], 3])
                for r in results
            ]
        ),
    }


def test_the_recording_is_read_as_expected(openbci_eeg, scored):
    assert openbci_eeg.ch_names == ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
    assert openbci_eeg.sfreq == 250.0
    assert len(scored["results"]) >= 170
    assert all(r.window.complete for r in scored["results"])
    assert not any(r.quality.bad.any() for r in scored["results"])  # no flat or railed channel


def test_blinks_are_flagged_in_the_first_20_s(scored):
    end, start = scored["end"], scored["start"]
    early = end <= 20.0
    eyes_closed = (start >= 30.0) & (end <= 76.0)
    assert scored["blink_flag"][early].mean() >= 0.7
    assert not scored["blink_flag"][eyes_closed].any()
    assert np.median(scored["blink"][early]) > 3 * np.median(scored["blink"][eyes_closed])


def test_muscle_is_flagged_during_the_jaw_clenches(scored):
    end, start = scored["end"], scored["start"]
    first = (end >= 10.5) & (end <= 16.0)
    last = end >= 84.0
    calm = (start >= 17.0) & (end <= 82.0)
    assert scored["muscle_flag"][first].all() and scored["muscle_flag"][last].all()
    assert not scored["muscle_flag"][calm].any()
    assert np.median(scored["muscle"][first | last]) > 4 * np.median(scored["muscle"][calm])


def test_posterior_alpha_beta_ratio_is_higher_with_eyes_closed(scored):
    end, start = scored["end"], scored["start"]
    inside = (start >= 28.0) & (end <= 76.0)
    outside = (end <= 28.0) | (start >= 80.0)
    ab = scored["alpha_beta"]
    assert inside.sum() > 80 and outside.sum() > 40
    assert np.median(ab[inside]) > 2.5 * np.median(ab[outside])


def _live(pipe: SignalPipeline, chunks) -> list:
    out = []
    for c in chunks:
        out += pipe(c)
    return out + pipe.flush()


def _assert_same(a, b, *, rtol=0.0, t_shift=0.0, t_tol=1e-9):
    assert len(a) == len(b)
    np.testing.assert_allclose(
        [r.t_end for r in a], np.array([r.t_end for r in b]) + t_shift, rtol=0, atol=t_tol
    )
    for x, y in zip(a, b, strict=True):
        for name in ("power", "relative", "de", "faa"):
            np.testing.assert_allclose(
                getattr(x.features, name), getattr(y.features, name), rtol=rtol, atol=0
            )
        for name in ("quality", "blink_score", "muscle_score", "line_ratio", "emg_rms_uv"):
            np.testing.assert_allclose(
                getattr(x.quality, name), getattr(y.quality, name), rtol=rtol, atol=0
            )
        np.testing.assert_array_equal(x.quality.bad, y.quality.bad)


def test_live_chunks_of_any_size_and_the_file_give_the_same_numbers(
    openbci_eeg, shared_data, scored, sig
):
    from acquisition.textfiles import OpenBciTextSource

    reference = _live(SignalPipeline(CFG), [openbci_eeg])
    for pieces in (sig.split(openbci_eeg, 3), sig.split(openbci_eeg, 17)):
        _assert_same(reference, _live(SignalPipeline(CFG), pieces))  # exactly
    # the importer's own 0.1 s chunks, interleaved with its other streams, as a live source
    with OpenBciTextSource(
        shared_data / "openbci" / "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt", chunk_s=0.1
    ) as src:
        _assert_same(reference, _live(SignalPipeline(CFG), src))
    _assert_same(reference, scored["results"], rtol=1e-9)  # vectorised offline


class _SliceSource:
    """A recorded EEG stream slice as a Source (what the Player replays)."""

    def __init__(self, eeg: Chunk, chunk_s: float = 0.1) -> None:
        self.eeg, self.step = eeg, max(1, int(chunk_s * eeg.sfreq))
        self.t_first = float(eeg.times[0])

    @property
    def streams(self) -> list[StreamInfo]:
        return [self.eeg.info]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __iter__(self):
        for a in range(0, self.eeg.n_times, self.step):
            yield replace(
                self.eeg,
                data=self.eeg.data[:, a : a + self.step],
                times=self.eeg.times[a : a + self.step],
            )

    def stop(self) -> None:
        pass


@pytest.mark.slow
@pytest.mark.lsl
def test_replayed_through_lsl_in_real_time_gives_the_disk_numbers(openbci_eeg, uid):
    """A 36 s slice (blinks, the first jaw clench, the start of eyes closed) published by the
    Player at 4x real time and read back by an LSL inlet, chunk by chunk as it arrives.

    LSL's clock correction moves the received stamps by tens of microseconds (re-estimated
    every few seconds). Each window must hold exactly the samples the disk grid gives it, except
    where a sample lies within that jitter of the window's end: the window then ends one sample
    earlier or later. Every window's numbers must equal the disk numbers for its samples.
    """
    from acquisition.lsl_inlet import LslSource
    from acquisition.player import Player

    t0 = openbci_eeg.times[0]
    piece = openbci_eeg.slice_times(t0 + 4.0, t0 + 40.0)
    disk = _live(SignalPipeline(CFG), [piece])
    assert len(disk) >= 60
    player = Player(_SliceSource(piece), speed=4.0, source_id_prefix=uid, wait_for_consumers_s=20)
    got, received = [], 0
    deadline = threading.Event()
    with player:
        with LslSource(f"source_id={uid}:{piece.info.source_id}", timeout_s=20) as src:
            pipe = SignalPipeline(CFG)
            timer = threading.Timer(60.0, deadline.set)  # 36 s at 4x takes 9 s
            timer.start()
            try:
                for chunk in src:
                    if chunk.info.type == "EEG":
                        received += chunk.n_times
                        got += pipe(chunk)
                    if received >= piece.n_times or deadline.is_set():
                        break
            finally:
                timer.cancel()
            got += pipe.flush()
        shift = player.offset_s
    assert received == piece.n_times, "the replay did not deliver every sample in time"

    assert len(got) == len(disk)
    np.testing.assert_allclose(
        [r.t_end - shift for r in got], [r.t_end for r in disk], rtol=0, atol=1e-3
    )
    live_first = np.array([r.window.first_index for r in got])
    disk_first = np.array([r.window.first_index for r in disk])
    moved = live_first != disk_first
    assert np.abs(live_first - disk_first).max() <= 1 and moved.mean() <= 0.1
    n = disk[0].window.n_times
    half = 0.5 / piece.sfreq
    for k in np.flatnonzero(moved):  # only where the window end was ambiguous to the jitter
        last = max(live_first[k], disk_first[k]) + n - 1
        assert abs(piece.times[last] - (disk[k].t_end + half)) < 2e-4
    # the disk numbers for exactly the samples each live window holds
    filtered = Preprocess(CFG.preprocess)(piece).data
    raw = np.stack([piece.data[:, i : i + n] for i in live_first])
    filt = np.stack([filtered[:, i : i + n] for i in live_first])
    q = score_windows(raw, filt, piece.sfreq, piece.ch_names, CFG.quality)
    f = extract_features(filt, piece.sfreq, piece.ch_names, CFG.features, good=~q.bad)
    for k, r in enumerate(got):
        np.testing.assert_allclose(r.features.power, f.power[k], rtol=1e-9)
        np.testing.assert_allclose(r.features.de, f.de[k], rtol=1e-9)
        np.testing.assert_allclose(r.quality.emg_rms_uv, q.emg_rms_uv[k], rtol=1e-9)
        np.testing.assert_allclose(r.quality.blink_score, q.blink_score[k], rtol=1e-9)
        if not moved[k]:
            np.testing.assert_array_equal(r.features.power, disk[k].features.power)
