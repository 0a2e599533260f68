"""The simulated EEG: background activity with affect effects, then artifacts.

Signal model of channel ``c`` at time ``t`` (µV), built in this order:

1. **Background**, Gaussian noise shaped in the frequency domain (one FFT per component):

   - aperiodic 1/f activity ``A / (1 + (f / knee) ** exponent)``, split by smooth masks at
     8 and 13 Hz into a low part, an alpha-band part and a high (beta/gamma) part, spatially
     correlated (mixed by the Cholesky factor of the montage's correlation matrix,
     :mod:`acquisition.simulator.montage`);
   - an alpha peak (Gaussian at the subject's alpha frequency), correlated, strongest at the
     back of the head;
   - a beta peak (Gaussian around 20 Hz), correlated;
   - a flat floor, correlated the same way (the common reference);

   each shaped by the amplifier's roll-off ``1 / (1 + (f / lowpass_hz) ** 4)`` and scaled by
   the subject's ``amplitude_scale``.

2. **State-dependent gains** (natural-log power, half of it on the amplitude), smooth in time
   (``affect.ramp_s``), so that the effects are changes of the neural band power itself
   (only the floor and the artifacts dilute them): on the alpha band (its aperiodic part and
   the alpha peak) ``drift(t) + trial noise - faa/2 * v_z`` at left frontal
   sites, ``+ faa/2 * v_z`` at right frontal sites, ``- alpha_suppression * a_z * posterior``;
   on the high part and the beta peak ``drift_hi(t) + trial noise + beta_gamma_effect * a_z``;
   on the low part its own trial noise. ``v_z``/``a_z`` are the felt valence/arousal in z
   units; the drifts are Ornstein-Uhlenbeck processes unrelated to the state.

3. **Artifacts**: EMG (high-passed noise, independent per channel, weighted toward temporal
   sites and the forehead) whose envelope is spontaneous bursts plus ``smile_emg_rms_uv`` x
   the face's happy intensity (plus 30 % of surprise/anger/disgust); blinks on the frontal
   channels; mains interference with a second harmonic and a slow amplitude wobble; a DC
   offset with a random-walk drift; electrode pops; optionally one railed channel; finally
   every value is clipped to the amplifier's range ``±rail_uv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft
from scipy import signal

from acquisition.simulator.config import SimulatorConfig
from acquisition.simulator.latent import EXPRESSIONS, Blinks, ExpressionTrack, blink_shape
from acquisition.simulator.montage import ChannelLayout
from acquisition.simulator.protocol import Schedule, trial_window
from acquisition.simulator.subject import SubjectParams

__all__ = ["EegResult", "background_psd", "sample_times", "simulate_eeg"]

#: Where the aperiodic background is split into its low, alpha-band and high parts, Hz.
ALPHA_BAND_HZ = (8.0, 13.0)

_EMG_EXPR_WEIGHTS = np.array(
    [
        0.3 if e in ("surprise", "angry", "disgust") else 1.0 if e == "happy" else 0.0
        for e in EXPRESSIONS
    ]
)


@dataclass
class EegResult:
    """What :func:`simulate_eeg` produced.

    Attributes
    ----------
    data : ndarray of float32, shape (n_chans, n_times)
        µV, as a board would stream it (DC offsets included).
    times : ndarray of float64, shape (n_times,)
        LSL seconds.
    artifacts : dict
        Ground truth of the artifacts (JSON-ready): blink times, pops, railed spans, EMG
        bursts, line-noise RMS per channel.
    """

    data: NDArray[np.float32]
    times: NDArray[np.float64]
    artifacts: dict = field(default_factory=dict)


def sample_times(start: float, stop: float, sfreq: float) -> NDArray[np.float64]:
    """Regular sample times ``start + i / sfreq`` up to ``stop`` (inclusive when on the grid)."""
    n = int(np.floor((stop - start) * sfreq + 1e-9)) + 1
    return start + np.arange(n, dtype=np.float64) / sfreq


def _rolloff(f: NDArray, lowpass_hz: float) -> NDArray[np.float64]:
    return 1.0 / (1.0 + (f / lowpass_hz) ** 4)


def background_psd(
    f: NDArray, config: SimulatorConfig, subject: SubjectParams | None = None
) -> dict[str, NDArray[np.float64]]:
    """The one-sided PSDs (µV²/Hz) of the background components at frequencies ``f`` (Hz),
    before spatial weighting and state gains: ``aperiodic``, ``alpha`` (at an occipital
    site), ``beta`` and ``floor``. Without ``subject``: the population means."""
    eeg = config.eeg
    f = np.asarray(f, dtype=np.float64)
    amp2 = subject.amplitude_scale**2 if subject else 1.0
    exponent = subject.aperiodic_exponent if subject else eeg.aperiodic_exponent
    iaf = subject.iaf_hz if subject else eeg.iaf_mean_hz
    alpha2 = subject.alpha_scale**2 if subject else 1.0
    h = _rolloff(f, eeg.lowpass_hz) * amp2
    return {
        "aperiodic": h * eeg.aperiodic_uv2_per_hz / (1.0 + (f / eeg.aperiodic_knee_hz) ** exponent),
        "alpha": h
        * alpha2
        * eeg.alpha_uv2_per_hz
        * np.exp(-0.5 * ((f - iaf) / eeg.alpha_width_hz) ** 2),
        "beta": h
        * eeg.beta_uv2_per_hz
        * np.exp(-0.5 * ((f - eeg.beta_peak_hz) / eeg.beta_width_hz) ** 2),
        "floor": h * eeg.floor_uv2_per_hz,
    }


class _Shaper:
    """Turns white noise into noise with a given one-sided PSD, for one signal length."""

    def __init__(self, n: int, sfreq: float, rng: np.random.Generator) -> None:
        self.n = n
        self.n_fft = sfft.next_fast_len(n, real=True)
        self.sfreq = sfreq
        self.freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sfreq)
        self.rng = rng

    def white(self, n_chans: int) -> NDArray[np.complex128]:
        """Spectra of fresh unit white noise, shape (n_chans, n_freqs)."""
        x = self.rng.standard_normal((n_chans, self.n_fft))
        return sfft.rfft(x, axis=-1)

    def shape(self, spectra: NDArray[np.complex128], psd: NDArray) -> NDArray[np.float64]:
        """Time series whose one-sided PSD is ``psd`` (µV²/Hz), shape (n_chans, n)."""
        gain = np.sqrt(np.asarray(psd) * self.sfreq / 2.0)
        return sfft.irfft(spectra * gain, n=self.n_fft, axis=-1)[:, : self.n]


def _ou(
    n_steps: int, dt: float, tau: float, sd: float, rng: np.random.Generator, n: int = 1
) -> NDArray[np.float64]:
    """Ornstein-Uhlenbeck paths (stationary start), shape (n, n_steps)."""
    a = np.exp(-dt / tau)
    e = rng.standard_normal((n, n_steps)) * sd * np.sqrt(1.0 - a * a)
    e[:, 0] = rng.standard_normal(n) * sd
    return signal.lfilter([1.0], [1.0, -a], e, axis=-1)


def _slow(
    times: NDArray, tau: float, sd: float, rng: np.random.Generator, n: int = 1
) -> NDArray[np.float64]:
    """A slow OU process evaluated at ``times``: drawn on a grid of ``tau / 10`` (clipped to
    0.05-1 s) and interpolated linearly; shape (n, n_times)."""
    dt = float(np.clip(tau / 10.0, 0.05, 1.0))
    grid = np.arange(times[0], times[-1] + 2 * dt, dt)
    paths = _ou(grid.size, dt, tau, sd, rng, n)
    return np.stack([np.interp(times, grid, p) for p in paths])


def _add_trial_terms(
    out: NDArray, times: NDArray, schedule: Schedule, ramp_s: float, values: NDArray
) -> None:
    """``out[c, t] += sum_i window_i(t) * values[i, c]`` (trial i's smooth window)."""
    for i, tr in enumerate(schedule.trials):
        lo = np.searchsorted(times, tr.start)
        hi = np.searchsorted(times, tr.end + ramp_s, side="right")
        out[:, lo:hi] += values[i][:, None] * trial_window(times[lo:hi], tr, ramp_s)[None, :]


def simulate_eeg(
    config: SimulatorConfig,
    subject: SubjectParams,
    schedule: Schedule,
    layout: ChannelLayout,
    expressions: ExpressionTrack,
    blinks: Blinks,
    rng: np.random.Generator,
) -> EegResult:
    """Simulate the EEG of one session. See the module docstring for the model."""
    eeg, art, aff = config.eeg, config.artifacts, config.affect
    fs = eeg.sfreq_hz
    times = sample_times(schedule.start, schedule.stop, fs)
    n, n_ch = times.size, layout.n_chans
    rel = times - times[0]
    shaper = _Shaper(n, fs, rng)
    psd = background_psd(shaper.freqs, config, subject)
    mix = layout.mixing(eeg.spatial_length, eeg.common_correlation)

    # -- background components
    lo_mask = 1.0 - 1.0 / (1.0 + np.exp(-(shaper.freqs - ALPHA_BAND_HZ[0]) / 1.0))
    hi_mask = 1.0 / (1.0 + np.exp(-(shaper.freqs - ALPHA_BAND_HZ[1]) / 1.5))
    mid_mask = 1.0 - lo_mask - hi_mask
    w_ap = shaper.white(n_ch)
    ap_lo = mix @ shaper.shape(w_ap, psd["aperiodic"] * lo_mask**2)
    ap_mid = mix @ shaper.shape(w_ap, psd["aperiodic"] * mid_mask**2)
    ap_hi = mix @ shaper.shape(w_ap, psd["aperiodic"] * hi_mask**2)
    alpha = (mix @ shaper.shape(shaper.white(n_ch), psd["alpha"])) * layout.alpha[:, None]
    beta = mix @ shaper.shape(shaper.white(n_ch), psd["beta"])
    floor = mix @ shaper.shape(shaper.white(n_ch), psd["floor"])

    # -- state-dependent log-power gains
    n_tr = len(schedule.trials)
    v_z = np.array([(tr.felt_valence - 5.0) / 4.0 for tr in schedule.trials])
    a_z = np.array([(tr.felt_arousal - 5.0) / 4.0 for tr in schedule.trials])
    sd = eeg.trial_power_sd

    def trial_noise() -> NDArray:
        shared = rng.normal(0.0, sd, size=(n_tr, 1))
        return shared + rng.normal(0.0, 0.5 * sd, size=(n_tr, n_ch))

    g_alpha = np.repeat(_slow(times, eeg.drift_timescale_s, eeg.drift_sd, rng), n_ch, axis=0)
    g_hi = np.repeat(_slow(times, eeg.drift_timescale_s, 0.5 * eeg.drift_sd, rng), n_ch, axis=0)
    g_lo = np.zeros((n_ch, n))
    alpha_terms = (
        trial_noise()
        + 0.5 * subject.faa_effect * v_z[:, None] * layout.faa_sign[None, :]
        - subject.alpha_suppression * a_z[:, None] * layout.posterior[None, :]
    )
    hi_terms = trial_noise() + subject.beta_gamma_effect * a_z[:, None]
    _add_trial_terms(g_alpha, times, schedule, aff.ramp_s, alpha_terms)
    _add_trial_terms(g_hi, times, schedule, aff.ramp_s, hi_terms)
    _add_trial_terms(g_lo, times, schedule, aff.ramp_s, trial_noise())
    x = (
        ap_lo * np.exp(0.5 * g_lo)
        + (ap_mid + alpha) * np.exp(0.5 * g_alpha)
        + (ap_hi + beta) * np.exp(0.5 * g_hi)
        + floor
    )
    del ap_lo, ap_mid, ap_hi, alpha, beta, floor, g_alpha, g_hi, g_lo

    # -- EMG: spontaneous bursts + the smile confound
    emg_psd = (shaper.freqs / 25.0) ** 4 / (1.0 + (shaper.freqs / 25.0) ** 4)
    emg_psd = emg_psd * _rolloff(shaper.freqs, eeg.lowpass_hz)
    emg_psd = emg_psd / (emg_psd.sum() * (shaper.freqs[1] - shaper.freqs[0]))  # unit variance
    emg_noise = shaper.shape(shaper.white(n_ch), emg_psd)
    smile = _EMG_EXPR_WEIGHTS @ expressions.intensity(times)
    envelope = np.repeat((subject.smile_emg_rms_uv * smile)[None, :], n_ch, axis=0)
    n_bursts = rng.poisson(art.emg_burst_rate_per_min / 60.0 * schedule.duration_s)
    bursts = []
    for _ in range(n_bursts):
        t0 = rng.uniform(schedule.start, schedule.stop)
        d = rng.uniform(*art.emg_burst_s)
        rms = art.emg_burst_rms_uv * np.exp(rng.normal(0.0, 0.4))
        side = np.clip(1.0 + rng.normal(0.0, 0.3) * np.sign(layout.positions[:, 0]), 0.2, 1.8)
        lo, hi = np.searchsorted(times, [t0, t0 + d])
        u = (times[lo:hi] - t0) / d
        shape = np.minimum(1.0, np.minimum(u, 1.0 - u) / 0.15)
        envelope[:, lo:hi] += rms * side[:, None] * shape[None, :]
        bursts.append({"start": round(t0, 3), "end": round(t0 + d, 3), "rms_uv": round(rms, 2)})
    x += emg_noise * envelope * layout.emg[:, None]
    del emg_noise, envelope

    # -- blinks
    wave = np.zeros(n)
    for t0, d, s in zip(blinks.onset, blinks.duration, blinks.size, strict=True):
        lo, hi = np.searchsorted(times, [t0, t0 + d])
        wave[lo:hi] += s * blink_shape((times[lo:hi] - t0) / d)
    x += subject.blink_amplitude_uv * layout.blink[:, None] * wave[None, :]

    # -- mains interference
    line_rms = art.line_noise_rms_uv * np.exp(rng.normal(0.0, art.line_noise_spread, n_ch))
    phase = rng.uniform(0, 2 * np.pi, size=(2, n_ch))
    wobble = 1.0 + _slow(times, 20.0, 0.1, rng)[0]
    omega = 2 * np.pi * art.line_freq_hz * rel
    line = np.sin(omega[None, :] + phase[0][:, None])
    if 2 * art.line_freq_hz < fs / 2 and art.line_harmonic_ratio > 0:
        line += art.line_harmonic_ratio * np.sin(2 * omega[None, :] + phase[1][:, None])
    x += np.sqrt(2.0) * line_rms[:, None] * wobble[None, :] * line
    del line

    # -- DC offset and drift
    offsets = rng.uniform(-eeg.dc_offset_max_uv, eeg.dc_offset_max_uv, n_ch)
    step = 1.0
    grid = np.arange(times[0], times[-1] + 2 * step, step)
    walk = np.cumsum(
        rng.normal(0.0, eeg.dc_drift_uv_per_sqrt_s * np.sqrt(step), (n_ch, grid.size)), axis=1
    )
    for c in range(n_ch):
        x[c] += offsets[c] + np.interp(times, grid, walk[c])

    # -- electrode pops
    pops = []
    for _ in range(rng.poisson(art.pop_rate_per_min / 60.0 * schedule.duration_s)):
        t0 = rng.uniform(schedule.start, schedule.stop)
        c = int(rng.integers(n_ch))
        amp = art.pop_amplitude_uv * np.exp(rng.normal(0.0, 0.5)) * rng.choice([-1.0, 1.0])
        lo = np.searchsorted(times, t0)
        hi = np.searchsorted(times, t0 + 8 * art.pop_tau_s)
        x[c, lo:hi] += amp * np.exp(-(times[lo:hi] - t0) / art.pop_tau_s)
        pops.append(
            {"t": round(t0, 3), "channel": layout.ch_names[c], "amplitude_uv": round(amp, 1)}
        )

    # -- a railed channel
    railed = []
    if rng.random() < art.railed_prob:
        c = int(rng.integers(n_ch))
        d = rng.uniform(*art.railed_s)
        t0 = rng.uniform(schedule.start, max(schedule.start, schedule.stop - d))
        sign = rng.choice([-1.0, 1.0])
        lo, hi = np.searchsorted(times, [t0, t0 + d])
        x[c, lo:hi] = sign * art.rail_uv
        railed.append(
            {
                "channel": layout.ch_names[c],
                "start": round(float(times[lo]) if lo < n else t0, 6),
                "end": round(float(times[hi - 1]) if hi > lo else t0, 6),
                "value_uv": sign * art.rail_uv,
            }
        )
    np.clip(x, -art.rail_uv, art.rail_uv, out=x)

    artifacts = {
        "blinks": [round(float(t), 3) for t in blinks.onset],
        "emg_bursts": bursts,
        "pops": pops,
        "railed": railed,
        "line_noise_rms_uv": {
            name: round(float(r), 2) for name, r in zip(layout.ch_names, line_rms, strict=True)
        },
        "dc_offset_uv": {
            name: round(float(o), 1) for name, o in zip(layout.ch_names, offsets, strict=True)
        },
    }
    return EegResult(data=x.astype(np.float32), times=times, artifacts=artifacts)
