"""The signals chain: live chunk by chunk == offline vectorised, for any chunking."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import signal

from bci_affect.core import Chunk, ConfigError, StreamInfo
from bci_affect.processors import (
    FeatureConfig,
    PreprocessConfig,
    SignalPipeline,
    SignalsConfig,
    WindowConfig,
    WindowResult,
    iter_recording,
    process_recording,
)

CONFIGS = {
    "default": SignalsConfig.make(line_hz=50.0),
    "average": SignalsConfig.make(line_hz=50.0, reference="average"),
    "channel": SignalsConfig.make(line_hz=60.0, reference="C4", window_s=2.0, hop_s=0.25),
}


def _recording(sig, rng, fps: float = 30.0) -> tuple[Chunk, Chunk]:
    """EEG with a railed stretch, a muscle burst, blinks and a lost 0.3 s; a face stream."""
    eeg = sig.make_eeg(rng, seconds=16, dtype=np.float64)
    x = eeg.data.copy()
    t = eeg.times - eeg.times[0]
    x[5] = np.where((t >= 6) & (t < 7), -187_500.0, x[5])
    sos = signal.butter(4, [30, 100], "bandpass", fs=250.0, output="sos")
    x[3] += np.where((t > 2) & (t < 5), 50 * signal.sosfilt(sos, rng.standard_normal(t.size)), 0)
    x[:2] += 300 * np.exp(-0.5 * ((t - 9.0) / 0.08) ** 2)
    keep = (t < 11.0) | (t >= 11.3)
    eeg = replace(eeg, data=x[:, keep], times=eeg.times[keep])
    ft = eeg.times[0] + np.arange(0, 16, 1 / fps)
    face = Chunk(
        np.stack([(ft % 3 < 2).astype(float), np.full(ft.size, 0.8), np.cos(ft)]),
        ft,
        StreamInfo("FaceFeatures", "FaceFeatures", 0.0, ("face_present", "quality", "au12")),
    )
    return eeg, face


def _live(pipe: SignalPipeline, eeg: Chunk, face: Chunk, pieces) -> list[WindowResult]:
    out: list[WindowResult] = []
    fed = -np.inf
    for c in pieces:  # the face frames up to the end of each EEG chunk, then the chunk
        out += pipe(face.slice_times(fed, c.times[-1] + 1e-9))
        fed = c.times[-1] + 1e-9
        out += pipe(c)
    return out + pipe(face.slice_times(fed, np.inf)) + pipe.flush()


def _assert_same(a: list[WindowResult], b: list[WindowResult], rtol: float = 0.0) -> None:
    assert [r.t_end for r in a] == [r.t_end for r in b]
    for x, y in zip(a, b, strict=True):
        for name in ("quality", "blink_score", "muscle_score", "line_ratio", "emg_rms_uv"):
            np.testing.assert_allclose(
                getattr(x.quality, name), getattr(y.quality, name), rtol=rtol, atol=0
            )
        for name in ("flat", "railed", "bad", "blink", "muscle", "muscle_ch", "line_noise"):
            np.testing.assert_array_equal(getattr(x.quality, name), getattr(y.quality, name))
        for name in ("power", "relative", "de", "faa"):
            np.testing.assert_allclose(
                getattr(x.features, name), getattr(y.features, name), rtol=rtol, atol=0
            )
        if x.features.tensor is None:
            assert y.features.tensor is None
        else:
            np.testing.assert_allclose(x.features.tensor, y.features.tensor, rtol=1e-5, atol=1e-4)
        assert x.window.face_coverage == y.window.face_coverage


@pytest.mark.parametrize("config", list(CONFIGS))
def test_live_chunks_of_any_size_give_identical_windows(sig, rng, config):
    eeg, face = _recording(sig, rng)
    cfg = CONFIGS[config]
    whole = _live(SignalPipeline(cfg), eeg, face, [eeg])
    assert len(whole) > 20
    for pieces in (sig.split(eeg, 3), sig.split(eeg, 17), sig.split_every(eeg, 0.1)):
        _assert_same(whole, _live(SignalPipeline(cfg), eeg, face, pieces))  # exactly


@pytest.mark.parametrize(("config", "fps"), [(c, 30.0) for c in CONFIGS] + [("default", 0.4)])
def test_offline_vectorised_equals_live(sig, rng, config, fps):
    eeg, face = _recording(sig, rng, fps)
    cfg = CONFIGS[config]
    live = _live(SignalPipeline(cfg), eeg, face, sig.split_every(eeg, 0.1))
    offline = list(iter_recording(eeg, face, cfg, batch=7))
    _assert_same(live, offline, rtol=1e-9)


def test_what_the_windows_hold(sig, rng):
    eeg, face = _recording(sig, rng)
    results = process_recording(eeg, face, CONFIGS["average"])
    t0 = eeg.times[0]
    n_gap = n_rail = 0
    for r in results:
        w, q, f = r.window, r.quality, r.features
        start, end = w.t_start - t0, w.t_end - t0
        assert f.power.shape == (8, 5) and f.bands == ("delta", "theta", "alpha", "beta", "gamma")
        if start < 11.3 and end > 11.0:  # the lost 0.3 s
            n_gap += 1
            assert not w.complete and q.quality == 0.0 and np.isnan(f.de).all()
            assert f.tensor is None and 0.9 < w.eeg_coverage < 1.0
            continue
        assert w.complete and f.tensor.shape == (8, 1000) and f.tensor.dtype == np.float32
        np.testing.assert_allclose(f.tensor[f.used].sum(axis=0), 0.0, atol=1e-2)  # average ref
        assert (f.tensor[~f.used] == 0).all()
        if start < 7 and end >= 6:
            n_rail += 1
            assert q.railed[5] and not f.used[5] and np.isnan(f.power[5]).all()
        assert np.isfinite(f.faa)  # Fp1/Fp2 are a frontal pair
        assert np.isfinite(f.de[f.used]).all()
        assert w.face.shape[1] == 3 and 0.45 < w.face_coverage < 0.8
    assert n_gap >= 8 and n_rail >= 8


def test_other_streams_are_ignored_and_two_eeg_streams_refused(sig, rng):
    eeg = sig.make_eeg(rng, seconds=6)
    pipe = SignalPipeline(CONFIGS["default"])
    markers = Chunk(
        np.array([['{"event": "trial_start", "trial": 1}']], dtype=object),
        np.array([eeg.times[10]]),
        StreamInfo("Markers", "Markers", 0.0, ("event",), channel_format="string"),
    )
    assert pipe(markers) == []
    assert len(pipe(eeg)) == 4
    other = replace(eeg, info=replace(eeg.info, name="EEG2"))
    with pytest.raises(ConfigError, match="two EEG streams"):
        pipe(other)
    chosen = SignalPipeline(CONFIGS["default"], eeg_stream="EEG2")
    assert chosen(eeg) == [] and len(chosen(other)) == 4


def test_reset_equals_a_fresh_pipeline(sig, rng):
    eeg, face = _recording(sig, rng)
    a, b = sig.split(eeg, 2)
    pipe = SignalPipeline(CONFIGS["average"])
    _live(pipe, eeg, face, [a])
    pipe.reset()
    _assert_same(
        _live(pipe, eeg, face, [b]), _live(SignalPipeline(CONFIGS["average"]), eeg, face, [b])
    )


def test_config_errors():
    with pytest.raises(ConfigError, match="features.reference"):
        SignalsConfig(preprocess=PreprocessConfig(reference="average"))
    with pytest.raises(ConfigError, match="welch_seg_s"):
        SignalsConfig(window=WindowConfig(window_s=0.5))
    with pytest.raises(ConfigError, match="band 'x'"):
        FeatureConfig(bands=(("x", 10.0, 5.0),))
    with pytest.raises(ConfigError, match="unique"):
        FeatureConfig(bands=(("a", 1.0, 5.0), ("a", 5.0, 9.0)))


def test_band_above_nyquist_is_a_clear_error(sig, rng):
    eeg = sig.make_eeg(rng, seconds=6, sfreq=80.0)
    with pytest.raises(ConfigError, match="Nyquist"):
        process_recording(eeg, None, SignalsConfig.make(line_hz=None, h_freq_hz=35.0))
