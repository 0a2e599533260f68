"""Per-subject parameters, drawn from the seed: who this simulated person is."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from acquisition.simulator.config import SimulatorConfig

__all__ = ["SubjectParams", "draw_subject", "subject_id"]


def subject_id(index: int, n_subjects: int = 1) -> str:
    """``sub-01``, ``sub-02``, ... (three digits from 100 subjects on)."""
    width = max(2, len(str(max(n_subjects, index))))
    return f"sub-{index:0{width}d}"


@dataclass(frozen=True)
class SubjectParams:
    """The traits of one simulated subject (all written to the sidecar's ground truth).

    Attributes
    ----------
    subject : str
        Subject id, e.g. ``sub-01``.
    iaf_hz : float
        Individual alpha peak frequency, Hz.
    amplitude_scale : float
        Multiplier of the whole EEG background amplitude (skull, skin, electrodes).
    alpha_scale : float
        Multiplier of the alpha-peak amplitude.
    aperiodic_exponent : float
        1/f exponent of the background above its knee.
    responder : bool
        Whether this subject's EEG reflects valence and arousal at all.
    faa_effect : float
        Change of frontal ln(alpha right / alpha left) per unit of valence z (0: none).
    alpha_suppression : float
        Fall of posterior ln alpha power per unit of arousal z (0: none).
    beta_gamma_effect : float
        Rise of ln power above 13 Hz per unit of arousal z (0: none).
    blink_rate_per_min : float
        Mean blinks per minute.
    blink_amplitude_uv : float
        Blink peak at Fp1/Fp2, µV.
    poker_face : bool
        Whether the subject hardly shows expressions.
    expressivity : float
        Strength of facial expressions (1 typical; about 0.15 for a poker face).
    smile_emg_rms_uv : float
        EMG RMS at temporal sites during a full smile, µV (the confound's strength).
    """

    subject: str
    iaf_hz: float
    amplitude_scale: float
    alpha_scale: float
    aperiodic_exponent: float
    responder: bool
    faa_effect: float
    alpha_suppression: float
    beta_gamma_effect: float
    blink_rate_per_min: float
    blink_amplitude_uv: float
    poker_face: bool
    expressivity: float
    smile_emg_rms_uv: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _effect(rng: np.random.Generator, mean: float, sd: float, active: bool) -> float:
    value = abs(rng.normal(mean, sd))
    return float(value) if active else 0.0


def draw_subject(config: SimulatorConfig, rng: np.random.Generator, subject: str) -> SubjectParams:
    """Draw one subject's :class:`SubjectParams` (always the same number of draws, so every
    trait depends only on the generator's seed)."""
    eeg, art, aff, face = config.eeg, config.artifacts, config.affect, config.face
    iaf = float(np.clip(rng.normal(eeg.iaf_mean_hz, eeg.iaf_sd_hz), 7.0, 14.0))
    iaf = min(iaf, 0.4 * eeg.sfreq_hz)
    amplitude = float(np.exp(rng.normal(0.0, eeg.amplitude_sd)))
    alpha = float(np.exp(rng.normal(0.0, eeg.alpha_sd)))
    exponent = float(max(0.3, rng.normal(eeg.aperiodic_exponent, eeg.aperiodic_exponent_sd)))
    responder = bool(rng.random() < aff.responder_prob)
    faa = _effect(rng, aff.faa_effect, aff.faa_effect_sd, responder)
    supp = _effect(rng, aff.alpha_suppression, aff.alpha_suppression_sd, responder)
    beta = _effect(rng, aff.beta_gamma_effect, aff.beta_gamma_effect_sd, responder)
    blink_rate = float(art.blink_rate_per_min * np.exp(rng.normal(0.0, art.blink_rate_sd)))
    blink_amp = float(art.blink_amplitude_uv * np.exp(rng.normal(0.0, 0.25)))
    poker = bool(rng.random() < face.poker_face_prob)
    expressivity_typical = float(np.exp(rng.normal(0.0, face.expressivity_sd)))
    expressivity = face.poker_face_expressivity if poker else expressivity_typical
    smile_emg = float(art.smile_emg_rms_uv * np.exp(rng.normal(0.0, art.smile_emg_sd)))
    return SubjectParams(
        subject=subject,
        iaf_hz=round(iaf, 4),
        amplitude_scale=round(amplitude, 4),
        alpha_scale=round(alpha, 4),
        aperiodic_exponent=round(exponent, 4),
        responder=responder,
        faa_effect=round(faa, 4),
        alpha_suppression=round(supp, 4),
        beta_gamma_effect=round(beta, 4),
        blink_rate_per_min=round(blink_rate, 3),
        blink_amplitude_uv=round(blink_amp, 2),
        poker_face=poker,
        expressivity=round(float(expressivity), 4),
        smile_emg_rms_uv=round(smile_emg, 3),
    )
