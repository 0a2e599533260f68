"""Signal quality: flat, railed, line noise, muscle and blink scores, window quality, and bad
channels left out of features and of the average reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import signal

from bci_affect.core import Chunk, ConfigError
from bci_affect.dsp import quality as dq
from bci_affect.processors import QualityConfig, SignalsConfig, process_recording

FLAT, LINE, MUSCLE, RAILED = 3, 2, 4, 5
SFREQ = 250.0


def _with_artifacts(sig, rng) -> Chunk:
    eeg = sig.make_eeg(rng, seconds=20, dtype=np.float64)
    x = eeg.data.copy()
    t = eeg.times - eeg.times[0]
    x[FLAT] = 1234.5
    x[LINE] += 150.0 * np.sin(2 * np.pi * 50.0 * t)
    sos = signal.butter(4, [30, 100], "bandpass", fs=SFREQ, output="sos")
    emg = signal.sosfilt(sos, rng.standard_normal(t.shape))
    emg *= 40.0 / emg.std()
    x[MUSCLE] += np.where((t >= 4) & (t < 8), emg, 0.0)
    x[RAILED] = np.where((t >= 10) & (t < 11), 187_500.0, x[RAILED])
    bump = sum(np.exp(-0.5 * ((t - c) / 0.08) ** 2) for c in (14.0, 16.0))
    x[0] += 250.0 * bump
    x[1] += 230.0 * bump
    return replace(eeg, data=x)


def _rel(results, eeg):
    t0 = eeg.times[0]
    return [(r.window.t_start - t0, r.window.t_end - t0, r) for r in results]


def test_each_artifact_is_flagged_where_it_is(sig, rng):
    eeg = _with_artifacts(sig, rng)
    results = _rel(process_recording(eeg, None, SignalsConfig.make(line_hz=50.0)), eeg)
    assert len(results) == 32  # ends at 4, 4.5, ... 19.5 s (the last sample is at 19.996 s)
    for start, end, r in results:
        q = r.quality
        assert q.flat[FLAT] and q.bad[FLAT]
        assert q.line_noise[LINE] and not q.line_noise[[0, 1, 6, 7]].any()
        assert q.line_ratio[LINE] > 50 * np.nanmax(q.line_ratio[[0, 1, 6, 7]])
        assert not q.bad[LINE]  # line noise is reported, the notch removes it
        # 40 µV RMS for 4 s: above the 20 µV threshold once a window holds more than 1 s of it
        overlap = max(0.0, min(end, 8.0) - max(start, 4.0))
        if overlap >= 1.5 or overlap <= 0.5:
            assert q.muscle_ch[MUSCLE] == (overlap >= 1.5)
            assert bool(q.muscle) == (overlap >= 1.5)
        in_rail = start < 11 and end >= 10  # the window ending at 10 s holds the sample at 10 s
        assert q.railed[RAILED] == in_rail and q.bad[RAILED] == in_rail
        in_blink = start < 15.8 and end > 14.2
        assert bool(q.blink) == in_blink, (start, end, float(q.blink_score))
        assert 0.0 <= q.quality <= 1.0
        n_good = 8 - q.bad.sum()
        expected = n_good / 8 / max(1, float(q.muscle_score)) / max(1, float(q.blink_score))
        assert float(q.quality) == pytest.approx(expected)
    clean = [
        r.quality
        for _, _, r in results
        if not (r.quality.muscle or r.quality.blink or r.quality.railed.any())
    ]
    assert len(clean) >= 2 and all(float(q.quality) == pytest.approx(7 / 8) for q in clean)
    worst = min(float(r.quality.quality) for _, _, r in results)
    assert worst < 0.5


def test_bad_channels_are_left_out_of_features_and_of_the_average(sig, rng):
    eeg = _with_artifacts(sig, rng)
    cfg = SignalsConfig.make(line_hz=50.0, reference="average")
    results = process_recording(eeg, None, cfg)
    keep = [i for i in range(8) if i != FLAT]
    subset = Chunk(
        eeg.data[keep],
        eeg.times,
        replace(
            eeg.info,
            ch_names=tuple(eeg.ch_names[i] for i in keep),
            units=tuple(eeg.info.units[i] for i in keep),
        ),
    )
    sub_results = process_recording(subset, None, cfg)
    n_compared = 0
    for r, s in zip(results, sub_results, strict=True):
        assert np.isnan(r.features.de[FLAT]).all() and not r.features.used[FLAT]
        assert (r.features.tensor[FLAT] == 0).all()
        if r.quality.bad.sum() == 1:  # only the flat channel: same average as without it
            np.testing.assert_allclose(r.features.de[keep], s.features.de, rtol=1e-9)
            n_compared += 1
        else:
            assert r.quality.bad[RAILED] and np.isnan(r.features.de[RAILED]).all()
    assert n_compared > 10


def test_scores_without_frontal_channels_cost_nothing(sig, rng):
    eeg = sig.make_eeg(rng, seconds=8, ch_names=("C3", "C4", "P3", "P4", "O1", "O2", "T7", "T8"))
    results = process_recording(eeg, None, SignalsConfig.make(line_hz=50.0))
    for r in results:
        assert np.isnan(r.quality.blink_score) and not r.quality.blink
        assert float(r.quality.quality) == 1.0


def test_pure_score_functions():
    lo = np.array([0.0, -187_500.0, 10.0])
    hi = np.array([0.5, 100.0, 200.0])
    flat, railed = dq.flat_and_railed(lo, hi, flat_uv=1.0, rail_uv=187_500.0)
    assert flat.tolist() == [True, False, False]
    assert railed.tolist() == [False, True, False]
    assert not dq.flat_and_railed(lo, hi, flat_uv=1.0, rail_uv=None)[1].any()
    freqs = np.arange(126.0)
    psd = np.ones((2, 126))
    psd[1, 49:52] = 100.0
    ratio = dq.line_noise_ratio(psd, freqs, line_hz=50.0)
    assert ratio[1] > 10 * ratio[0]
    assert np.isnan(dq.line_noise_ratio(psd, freqs, line_hz=200.0)).all()
    emg = dq.emg_rms(psd, freqs, line_hz=50.0)
    # 30-100 Hz (top clipped to 0.9 * 125 Hz is above 100) without 47-53 and 97-100 Hz
    assert emg[0] == pytest.approx(np.sqrt(70 - 7 - 3))
    x = np.zeros((1, 500))
    x[0, 200:260] = 300.0
    assert dq.blink_amplitude(x, 25)[0] == pytest.approx(300.0)
    noise = np.random.default_rng(1).standard_normal((1, 500)) * 50
    assert dq.blink_amplitude(noise, 25)[0] < 100.0  # fast activity averages out
    assert dq.window_quality(np.array([True, True, False, True]), 2.0, np.nan) == 0.375


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flat_uv": 0}, "flat_uv"),
        ({"rail_uv": -1.0}, "rail_uv"),
        ({"emg_band_hz": (100.0, 30.0)}, "emg_band_hz"),
        ({"blink_uv": float("nan")}, "blink_uv"),
    ],
)
def test_config_is_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        QualityConfig(**kwargs)


def test_unknown_frontal_channel_is_a_clear_error(sig, rng):
    eeg = sig.make_eeg(rng, seconds=6)
    cfg = SignalsConfig(quality=QualityConfig(frontal=("Fpz",)))
    with pytest.raises(ConfigError, match="no channel named 'Fpz'"):
        process_recording(eeg, None, cfg)
