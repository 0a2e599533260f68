"""The signals chain: live chunk by chunk == offline vectorised, for any chunking."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from scipy import signal

from acquisition.xdf import RecordingWarning, XdfSource
from acquisition.xdf_writer import write_xdf
from bci_affect.core import Chunk, ConfigError, StreamInfo, read_all
from bci_affect.engine import Engine, EngineConfig
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
from bci_affect.processors.signals import FiniteSamples

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


# -- NaN / inf EEG samples: left out like a gap, the same live and offline ---------------------

#: (first second, seconds, channels, value) of each burst of non-finite samples
BURSTS = ((6.1, 0.3, (0, 7), np.nan), (12.22, 0.4, (2, 5), np.inf))
N_BURST_SAMPLES = 75 + 100  # at 250 Hz


def _with_bursts(sig, rng) -> tuple[Chunk, Chunk, list[tuple[float, float]]]:
    """20 s of EEG with a NaN burst on Fp1, O2 and a +/-inf burst on C3, P8; the same EEG
    with those samples removed (a plain gap); each burst as (first bad, first good again)
    on the LSL clock (s)."""
    eeg = sig.make_eeg(rng, seconds=20, dtype=np.float64)
    x = eeg.data.copy()
    t = eeg.times - eeg.times[0]
    keep = np.ones(t.size, dtype=bool)
    spans = []
    for start, seconds, chans, value in BURSTS:
        idx = np.flatnonzero((t >= start - 1e-9) & (t < start + seconds - 1e-9))
        x[chans[0], idx] = value
        x[chans[1], idx] = -value
        keep[idx] = False
        spans.append((float(eeg.times[idx[0]]), float(eeg.times[idx[-1] + 1])))
    assert keep.size - np.count_nonzero(keep) == N_BURST_SAMPLES
    bursty = replace(eeg, data=x)
    gap = replace(eeg, data=x[:, keep], times=eeg.times[keep])
    return bursty, gap, spans


def _run_lines(records) -> list[str]:
    """The messages about runs of NaN/inf samples, without the label before them."""
    keys = ("NaN or inf samples", "finite again")
    return [
        r.getMessage().split(": ", 1)[-1] for r in records if any(k in r.getMessage() for k in keys)
    ]


def test_nan_and_inf_bursts_are_left_out_offline_like_a_gap(sig, rng, caplog):
    """A recording with a NaN burst and an inf burst: the offline chain gives exactly the
    windows of the same recording with those samples removed (the filters restart after each
    burst instead of carrying NaN to the end); windows over a burst are incomplete, every
    other window complete with finite features; the samples left out are counted and each
    burst gives one warning when it starts (naming its channels) and one when it ends."""
    cfg = CONFIGS["average"]
    bursty, gap, spans = _with_bursts(sig, rng)
    finite = FiniteSamples()
    with caplog.at_level(logging.WARNING, logger="bci_affect.processors.signals"):
        got = list(iter_recording(bursty, None, cfg, batch=5, finite=finite))
    _assert_same(process_recording(gap, None, cfg), got, rtol=1e-12)
    assert finite.n_left_out == N_BURST_SAMPLES and finite.n_runs == 2

    n_over = [0, 0]
    for r in got:
        w, f = r.window, r.features
        over = [i for i, (a, b) in enumerate(spans) if w.t_start < b and w.t_end > a]
        if over:
            n_over[over[0]] += 1
            assert not w.complete and r.quality.quality == 0.0 and f.tensor is None
            continue
        assert w.complete and np.isfinite(f.tensor).all() and np.isfinite(f.de[f.used]).all()
        assert f.used.all() and np.isfinite(r.quality.quality) and r.quality.quality > 0.5
    assert min(n_over) >= 7  # 4 s windows every 0.5 s
    assert sum(w.t_start >= spans[1][1] for w in (r.window for r in got)) >= 4

    lines = _run_lines(caplog.records)
    assert len(lines) == 4, lines
    assert lines[0].startswith(
        f"EEG stream 'EEG' sends NaN or inf samples from t={spans[0][0]:.3f}"
    )
    assert "(channels Fp1, O2)" in lines[0] and "(channels C3, P8)" in lines[2]
    assert lines[1].startswith(
        f"EEG stream 'EEG' finite again at t={spans[0][1]:.3f} s (75 samples"
    )
    assert lines[3].startswith(
        f"EEG stream 'EEG' finite again at t={spans[1][1]:.3f} s (100 samples"
    )


def test_nan_runs_give_the_same_warnings_however_the_stream_is_cut(sig, rng, caplog):
    """The left-out samples, their count and the warnings do not depend on the chunking: a
    whole recording, 0.1 s chunks and uneven chunks give the same; a stream that ends inside
    a run says so; after many runs, one line says later runs are only counted."""
    bursty, gap, _ = _with_bursts(sig, rng)
    x = bursty.data.copy()
    x[4, -10:] = np.nan
    bursty = replace(bursty, data=x)
    seen = []
    for pieces in ([bursty], sig.split_every(bursty, 0.1), sig.split(bursty, 37)):
        caplog.clear()
        step = FiniteSamples("rec")
        with caplog.at_level(logging.WARNING, logger="bci_affect.processors.signals"):
            kept = [step(c) for c in pieces]
            step.finish(bursty.name)
        np.testing.assert_array_equal(np.concatenate([c.times for c in kept]), gap.times[:-10])
        assert step.n_left_out == N_BURST_SAMPLES + 10 and step.n_runs == 3
        assert all(r.getMessage().startswith("rec: EEG stream 'EEG' ") for r in caplog.records)
        seen.append(_run_lines(caplog.records))
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) == 6, seen
    assert "ended in a run of NaN or inf samples (10 samples left out" in seen[0][-1]

    caplog.clear()
    y = sig.make_eeg(rng, seconds=4).data.copy()
    y[3, 10::20] = np.inf  # 50 single-sample runs
    step = FiniteSamples()
    with caplog.at_level(logging.WARNING, logger="bci_affect.processors.signals"):
        step(replace(sig.make_eeg(rng, seconds=4), data=y))
    lines = _run_lines(caplog.records)
    assert step.n_left_out == step.n_runs == 50
    assert len(lines) == 2 * FiniteSamples.MAX_LOGGED_RUNS + 1
    assert "(run 21); this and later runs are left out and counted" in lines[-1]


def test_engine_and_offline_give_the_same_windows_for_an_xdf_with_nan_and_inf(
    sig, rng, tmp_path, caplog
):
    """The same XDF recording (NaN and inf bursts) through the engine chunk by chunk and
    through the offline chain: the same windows, features and quality, the same count of
    left-out samples (the engine's stats), the same warnings (the engine's name the
    session)."""
    cfg = CONFIGS["default"]
    bursty, _, _ = _with_bursts(sig, rng)
    path = write_xdf(tmp_path / "bursts.xdf", [bursty])
    with pytest.warns(RecordingWarning, match="NaN values"), XdfSource(path) as src:
        recorded = read_all(src)["EEG"]
    assert np.count_nonzero(~np.isfinite(recorded.data)) == 2 * N_BURST_SAMPLES  # kept on disk

    finite = FiniteSamples()
    with caplog.at_level(logging.WARNING, logger="bci_affect.processors.signals"):
        offline = list(iter_recording(recorded, None, cfg, finite=finite))
    offline_lines = _run_lines(caplog.records)
    caplog.clear()

    live: list[WindowResult] = []
    engine = Engine("untrained", config=EngineConfig(realtime=False), signals=cfg)
    with (
        caplog.at_level(logging.WARNING, logger="bci_affect.processors.signals"),
        pytest.warns(RecordingWarning, match="NaN values"),
        XdfSource(path, chunk_s=0.1) as src,
    ):
        session = engine.add_session("S01", streams=src.streams, window_sinks=[live.extend])
        for chunk in src:
            session.push(chunk)
        assert engine.close(timeout=30)
    assert not engine.errors, engine.errors
    _assert_same(offline, live, rtol=1e-9)
    assert session.stats.n_nonfinite == finite.n_left_out == N_BURST_SAMPLES
    assert session.stats.n_incomplete == sum(not r.window.complete for r in offline) >= 14
    engine_lines = [r.getMessage() for r in caplog.records if "NaN or inf" in r.getMessage()]
    assert all(x.startswith("session 'S01': EEG stream 'EEG' ") for x in engine_lines)
    assert _run_lines(caplog.records) == offline_lines and len(offline_lines) == 4
