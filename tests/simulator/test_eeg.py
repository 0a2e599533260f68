"""The simulated EEG: anchored on the real OpenBCI recording, affect effects, artifacts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import signal

from acquisition.simulator import SimulatorConfig, simulate_session
from acquisition.simulator.montage import channel_layout
from acquisition.simulator.realism import segment_band_powers
from acquisition.textfiles import OpenBciTextSource
from bci_affect.core.source import read_all
from bci_affect.dsp.quality import flat_and_railed

REAL = "openbci/OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"

#: 16 trials of 10-12 s: enough trials for across-trial correlations, about 4 min.
SIXTEEN = {
    "n_trials": 16,
    "trial_s": [10.0, 12.0],
    "rest_s": [4.0, 5.0],
    "lead_in_s": 5.0,
    "tail_s": 2.0,
    "rating_s": 2.0,
}


def _highpass(x, sfreq, hz=1.0):
    sos = signal.butter(4, hz, "highpass", fs=sfreq, output="sos")
    x = np.asarray(x, dtype=np.float64)
    return signal.sosfiltfilt(sos, x - x[:, :1], axis=-1)


def test_spectrum_in_the_ballpark_of_the_real_recording(shared_data):
    """Default settings vs the eyes-open parts of the real Cyton file (20-28 s, 76-80 s)."""
    with OpenBciTextSource(shared_data / REAL) as src:
        real = read_all(src)["EEG"]
    rel = real.times - real.times[0]
    parts = []
    for a, b in ((20.0, 28.0), (76.0, 80.0)):
        lo, hi = np.searchsorted(rel, [a, b])
        parts.append(segment_band_powers(real.data[:, lo:hi], real.sfreq, segment_s=b - a - 0.1))
    real_bp = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    real_total = np.median(real_bp["total"])
    real_ratio = np.median(real_bp["alpha"] / real_bp["beta"])
    sims = [simulate_session(seed=s, subject_index=1) for s in (0, 1)]
    for sim in sims:
        eeg = sim.chunk("EEG")
        bp = segment_band_powers(eeg.data, eeg.sfreq)
        total, ratio = np.median(bp["total"]), np.median(bp["alpha"] / bp["beta"])
        assert real_total / 3 < total < real_total * 3, (total, real_total)
        assert real_ratio / 2.5 < ratio < real_ratio * 2.5, (ratio, real_ratio)
        # eyes open: alpha does not dominate beta (eyes closed in the real file: 1.5-1.7)
        assert ratio < 1.2
    assert 20.0 < real_total < 2000.0  # the reference itself is sane (1-45 Hz, µV²)


def test_channels_are_correlated_like_a_referenced_montage(short_session):
    eeg = short_session.chunk("EEG")
    x = _highpass(eeg.data, eeg.sfreq)
    sos = signal.butter(4, [1.0, 45.0], "bandpass", fs=eeg.sfreq, output="sos")
    x = signal.sosfiltfilt(sos, x, axis=-1)[:, 2500:-2500]
    c = np.corrcoef(x)
    names = list(eeg.ch_names)
    off = c[np.triu_indices(len(names), 1)]
    assert 0.25 < off.mean() < 0.8  # real eyes-open Cyton: about 0.5
    # neighbours more alike than distant sites
    assert c[names.index("O1"), names.index("P7")] > c[names.index("O1"), names.index("Fp2")]


def _trial_stats(session):
    eeg = session.chunk("EEG")
    x = _highpass(eeg.data, eeg.sfreq)
    names = list(eeg.ch_names)
    fp1, fp2 = names.index("Fp1"), names.index("Fp2")
    occ = [names.index("O1"), names.index("O2")]
    rows = []
    for t in session.schedule.trials:
        lo, hi = np.searchsorted(eeg.times, [t.start + 2.0, t.end])
        f, p = signal.welch(x[:, lo:hi], fs=eeg.sfreq, nperseg=int(eeg.sfreq), axis=-1)
        alpha = np.log(p[:, (f >= 8) & (f < 13)].sum(-1))
        beta = np.log(p[:, (f >= 13) & (f < 30)].sum(-1))
        v, a = (t.felt_valence - 5) / 4, (t.felt_arousal - 5) / 4
        rows.append((alpha[fp2] - alpha[fp1], alpha[occ].mean(), beta.mean(), v, a))
    r = np.array(rows)
    return (
        np.corrcoef(r[:, 0], r[:, 3])[0, 1],  # FAA vs valence
        np.corrcoef(r[:, 1], r[:, 4])[0, 1],  # posterior alpha vs arousal
        np.corrcoef(r[:, 2], r[:, 4])[0, 1],  # beta vs arousal
    )


def test_affect_effects_in_a_responder_and_none_in_a_non_responder():
    base = SimulatorConfig().replace(session=SIXTEEN)
    strong = base.replace(
        affect={
            "responder_prob": 1.0,
            "faa_effect": 1.0,
            "faa_effect_sd": 0.0,
            "alpha_suppression": 1.0,
            "alpha_suppression_sd": 0.0,
            "beta_gamma_effect": 0.5,
            "beta_gamma_effect_sd": 0.0,
        }
    )
    none = base.replace(affect={"responder_prob": 0.0})
    responder = simulate_session(strong, seed=0)
    non_responder = simulate_session(none, seed=0)
    assert responder.subject.responder and responder.subject.faa_effect == 1.0
    assert not non_responder.subject.responder
    assert non_responder.subject.faa_effect == non_responder.subject.alpha_suppression == 0.0
    # same subject otherwise: same felt states, same everything but the effects
    assert responder.schedule == non_responder.schedule
    faa, post_alpha, beta = _trial_stats(responder)
    assert faa > 0.6  # more right-frontal alpha (left activation) with positive valence
    assert post_alpha < -0.5  # posterior alpha suppression with arousal
    assert beta > 0.4  # more beta with arousal
    for r in _trial_stats(non_responder):
        assert abs(r) < 0.45


def test_blinks_are_frontal(short_session):
    eeg = short_session.chunk("EEG")
    sos = signal.butter(4, 15.0, "lowpass", fs=eeg.sfreq, output="sos")
    x = signal.sosfiltfilt(sos, _highpass(eeg.data, eeg.sfreq, hz=0.5), axis=-1)  # blink band
    names = list(eeg.ch_names)
    blinks = np.array(short_session.ground_truth["eeg_artifacts"]["blinks"])
    assert len(blinks) > 10  # about 15 / min
    idx = np.searchsorted(eeg.times, blinks)
    idx = idx[(idx > 50) & (idx < eeg.n_times - 100)]
    peak = np.array([x[:, i : i + 100].max(1) - x[:, i - 50 : i].mean(1) for i in idx]).mean(0)
    fp = np.mean([peak[names.index("Fp1")], peak[names.index("Fp2")]])
    occ = np.mean([peak[names.index("O1")], peak[names.index("O2")]])
    assert fp > 60.0  # µV, blink-locked average at Fp
    assert fp > 4 * occ
    # and not at random times
    rng = np.random.default_rng(0)
    rand = rng.integers(50, eeg.n_times - 100, size=len(idx))
    fp_rand = np.mean([x[:2, i : i + 100].max(1) - x[:2, i - 50 : i].mean(1) for i in rand])
    assert fp > 2 * fp_rand


def test_smile_emg_confound(short_config):
    """Temporal high-frequency power follows the face's happy probability, only through the
    smile EMG setting."""
    cfg = short_config.replace(
        face={"poker_face_prob": 0.0},
        artifacts={"smile_emg_sd": 0.0, "emg_burst_rate_per_min": 0.0},
    )

    def r_emg_happy(config):
        s = simulate_session(config, seed=2)
        eeg, face = s.chunk("EEG"), s.chunk("FaceFeatures")
        x = _highpass(eeg.data, eeg.sfreq)
        names = list(eeg.ch_names)
        temporal = [names.index("P7"), names.index("P8")]
        win = int(2 * eeg.sfreq)
        n = x.shape[1] // win
        segs = x[temporal, : n * win].reshape(2, n, win).transpose(1, 0, 2)
        f, p = signal.welch(segs, fs=eeg.sfreq, nperseg=int(eeg.sfreq), axis=-1)
        hf = np.log(p[..., (f >= 30) & (f < 55)].sum(-1).mean(-1))
        edges = np.searchsorted(face.times, eeg.times[0] + np.arange(n + 1) * 2.0)
        happy_ch = face.ch_names.index("expr_happy")
        happy = np.array(
            [
                np.nanmean(face.data[happy_ch, a:b])
                if np.isfinite(face.data[happy_ch, a:b]).any()
                else np.nan
                for a, b in zip(edges[:-1], edges[1:], strict=True)
            ]
        )
        ok = np.isfinite(happy)
        return np.corrcoef(hf[ok], happy[ok])[0, 1]

    with_emg = r_emg_happy(cfg)
    without = r_emg_happy(cfg.replace(artifacts={"smile_emg_rms_uv": 0.0}))
    assert with_emg > 0.5
    assert abs(without) < 0.35
    assert with_emg - without > 0.4


def test_railed_channel_line_noise_and_pops(short_config):
    cfg = short_config.replace(
        artifacts={
            "railed_prob": 1.0,
            "line_freq_hz": 50.0,
            "pop_rate_per_min": 4.0,
            "railed_s": [10.0, 10.0],
        }
    )
    s = simulate_session(cfg, seed=4)
    eeg = s.chunk("EEG")
    art = s.ground_truth["eeg_artifacts"]
    (rail,) = art["railed"]
    c = eeg.ch_names.index(rail["channel"])
    lo, hi = np.searchsorted(eeg.times, [rail["start"], rail["end"]])
    assert np.all(eeg.data[c, lo : hi + 1] == rail["value_uv"])
    assert abs(rail["value_uv"]) == 187500.0
    assert rail["end"] - rail["start"] == pytest.approx(10.0, abs=0.01)
    _flat, railed = flat_and_railed(
        eeg.data.min(axis=1), eeg.data.max(axis=1), flat_uv=1.0, rail_uv=187500.0
    )
    assert railed.tolist() == [i == c for i in range(eeg.info.n_chans)]
    # mains at the configured frequency
    good = [i for i in range(eeg.info.n_chans) if i != c]
    f, p = signal.welch(_highpass(eeg.data[good, :20000], eeg.sfreq), fs=eeg.sfreq, nperseg=500)
    peak = f[np.argmax(p.mean(0)[f > 30]) + np.sum(f <= 30)]
    assert peak == pytest.approx(50.0, abs=0.5)
    # pops: a jump of about their amplitude at their time, on their channel
    assert len(art["pops"]) >= 3
    for pop in art["pops"]:
        ch = eeg.ch_names.index(pop["channel"])
        i = np.searchsorted(eeg.times, pop["t"])
        if ch == c or i < 5 or i + 5 >= eeg.n_times:
            continue
        # means over whole mains periods (5 samples at 250 Hz for 50 Hz)
        jump = eeg.data[ch, i + 1 : i + 11].mean() - eeg.data[ch, i - 10 : i].mean()
        assert jump == pytest.approx(pop["amplitude_uv"], abs=0.5 * abs(pop["amplitude_uv"]))


def test_montage_and_rate_are_configurable(short_config, caplog):
    names = ["Fp1", "Fp2", "F3", "F4", "F7", "F8", "C3", "C4", "T7", "T8", "P3", "P4", "O1", "O2"]
    s = simulate_session(short_config.replace(eeg={"ch_names": names, "sfreq_hz": 500.0}), seed=1)
    eeg = s.chunk("EEG")
    assert eeg.ch_names == tuple(names) and eeg.sfreq == 500.0
    assert eeg.data.shape[0] == 14
    np.testing.assert_allclose(np.diff(eeg.times[:100]), 1 / 500.0, rtol=1e-6)
    layout = channel_layout(names)
    assert layout.faa_sign[names.index("F3")] == -1 and layout.faa_sign[names.index("F4")] == 1
    assert layout.emg[names.index("T7")] > layout.emg[names.index("C3")]
    with caplog.at_level(logging.WARNING):
        s = simulate_session(short_config.replace(eeg={"ch_names": ["EEG1", "EEG2", "Fp1"]}))
    assert "EEG1, EEG2 are not 10-20/10-10 names" in caplog.text
    assert s.chunk("EEG").data.shape[0] == 3 and np.all(np.isfinite(s.chunk("EEG").data))
