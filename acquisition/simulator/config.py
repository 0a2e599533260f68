"""Settings of the affective-session simulator: one frozen dataclass per section.

:class:`SimulatorConfig` groups six sections, each a frozen dataclass whose fields carry their
unit and meaning in ``dataclasses.field(metadata=...)`` (``unit``, ``doc``), so the
documentation, ``bci-affect simulate --print-config`` and the checks below all read the same
text:

``session``   timeline: trials, rests, the fixed start time (deterministic files)
``eeg``       montage, rate, background spectrum (1/f + alpha peak), channel covariance
``artifacts`` line noise, blinks, muscle bursts, the smile-EMG confound, pops, railed channel
``affect``    the weak, subject-specific EEG correlates of valence and arousal
``face``      the FaceFeatures stream: frame rate, expressions, poker faces, occlusions
``labels``    self-reports: rater noise and wrong labels

A TOML file holds any subset of the sections and keys (``[eeg]`` then ``iaf_mean_hz = 10.5``);
anything not given keeps its default. Unknown sections and keys, values of the wrong type and
values out of range raise :class:`~bci_affect.core.errors.ConfigError` naming the key
(``eeg.iaf_mean_hz``) and what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
import tomllib
import typing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bci_affect.core.errors import ConfigError

__all__ = [
    "AffectConfig",
    "ArtifactConfig",
    "EegConfig",
    "FaceConfig",
    "LabelConfig",
    "SECTIONS",
    "SessionConfig",
    "SimulatorConfig",
    "config_to_toml",
    "describe_fields",
    "load_config",
]

#: The OpenBCI Cyton default montage (8 channels).
CYTON_MONTAGE = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")


def _f(default: Any, unit: str, doc: str) -> Any:
    """A dataclass field with its unit and documentation in the metadata."""
    return field(default=default, metadata={"unit": unit, "doc": doc})


class _Section:
    """Shared checks of the section dataclasses (``_name`` is the TOML section name)."""

    _name: typing.ClassVar[str] = ""

    def _key(self, name: str) -> str:
        return f"{self._name}.{name}"

    def _positive(self, *names: str, allow_zero: bool = False) -> None:
        for name in names:
            v = getattr(self, name)
            ok = v >= 0 if allow_zero else v > 0
            if not (math.isfinite(v) and ok):
                want = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{self._key(name)} must be {want}, got {v!r}")

    def _fraction(self, *names: str) -> None:
        for name in names:
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ConfigError(f"{self._key(name)} must be in [0, 1], got {v!r}")

    def _range(self, name: str, lo_min: float = 0.0, *, positive: bool = False) -> None:
        lo, hi = getattr(self, name)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo_min <= lo <= hi):
            raise ConfigError(
                f"{self._key(name)} must be [low, high] with {lo_min:g} <= low <= high, "
                f"got [{lo!r}, {hi!r}]"
            )
        if positive and not lo > 0:
            raise ConfigError(f"{self._key(name)} must be > 0, got [{lo!r}, {hi!r}]")


@dataclass(frozen=True)
class SessionConfig(_Section):
    """The timeline of one session (section ``[session]``)."""

    _name: typing.ClassVar[str] = "session"

    name: str = _f("ses-01", "", "session name: the file is <out>/<subject>/<name>.xdf")
    n_trials: int = _f(
        16,
        "trials",
        "trials per session; the four valence/arousal quadrants get n_trials/4 each (the "
        "remainder goes to quadrants drawn at random), in shuffled order",
    )
    trial_s: tuple[float, float] = _f(
        (20.0, 30.0),
        "s",
        "duration of a trial (stimulus, then the rating screen), uniform in [low, high]",
    )
    rating_s: float = _f(
        3.0,
        "s",
        "the last rating_s of each trial are the rating screen; the rating marker comes at a "
        "uniformly random moment inside it",
    )
    rest_s: tuple[float, float] = _f(
        (8.0, 12.0), "s", "rest between trials (neutral state), uniform in [low, high]"
    )
    lead_in_s: float = _f(10.0, "s", "rest before the first trial (resting baseline)")
    tail_s: float = _f(5.0, "s", "recording after the last trial")
    start_time_s: float = _f(
        10000.0,
        "s (LSL clock)",
        "timestamp of the first sample of every stream; fixed so that files are reproducible",
    )
    start_utc: str = _f(
        "2024-01-01T09:00:00Z",
        "ISO 8601",
        "wall-clock start written to the XDF file header and the sidecar (fixed, reproducible)",
    )

    def __post_init__(self) -> None:
        if not str(self.name).strip() or any(c in str(self.name) for c in "/\\"):
            raise ConfigError(
                f"session.name must be a non-empty file name without '/', got {self.name!r}"
            )
        if self.n_trials < 1:
            raise ConfigError(f"session.n_trials must be >= 1, got {self.n_trials}")
        self._range("trial_s", positive=True)
        self._range("rest_s")
        self._positive("rating_s", "lead_in_s", "tail_s", allow_zero=True)
        if self.rating_s >= self.trial_s[0]:
            raise ConfigError(
                f"session.rating_s ({self.rating_s:g} s) must be shorter than the shortest "
                f"trial (session.trial_s low = {self.trial_s[0]:g} s)"
            )
        if not (math.isfinite(self.start_time_s) and self.start_time_s >= 0):
            raise ConfigError(f"session.start_time_s must be >= 0 s, got {self.start_time_s!r}")
        try:
            datetime.fromisoformat(str(self.start_utc).replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"session.start_utc must be an ISO 8601 time such as 2024-01-01T09:00:00Z, "
                f"got {self.start_utc!r}"
            ) from None


@dataclass(frozen=True)
class EegConfig(_Section):
    """The EEG stream and its background activity (section ``[eeg]``).

    The background power spectral density of a channel (µV²/Hz, one-sided) is
    ``(aperiodic_uv2_per_hz / (1 + (f / aperiodic_knee_hz) ** exponent) + floor_uv2_per_hz)
    * 1 / (1 + (f / lowpass_hz) ** 4)``, plus Gaussian peaks for alpha and beta. The defaults
    are fitted to the eyes-open part of the real OpenBCI Cyton recording (see
    ``docs/simulator.md``).
    """

    _name: typing.ClassVar[str] = "eeg"

    name: str = _f("EEG", "", "name of the EEG stream (type EEG, microvolts, float32)")
    ch_names: tuple[str, ...] = _f(
        CYTON_MONTAGE,
        "",
        "channel labels; 10-20/10-10 names place the channels on the head (covariance, blink "
        "spread, frontal asymmetry, posterior alpha, temporal EMG); other names are spread on "
        "a ring and get no region-specific effects",
    )
    sfreq_hz: float = _f(250.0, "Hz", "sample rate")
    aperiodic_uv2_per_hz: float = _f(20.0, "µV²/Hz", "height of the 1/f background below its knee")
    aperiodic_knee_hz: float = _f(2.0, "Hz", "knee frequency of the 1/f background")
    aperiodic_exponent: float = _f(1.2, "", "mean 1/f exponent above the knee")
    aperiodic_exponent_sd: float = _f(0.15, "", "subject-to-subject SD of the 1/f exponent")
    floor_uv2_per_hz: float = _f(
        1.5,
        "µV²/Hz",
        "flat background (sensor, skin and distant muscle noise), correlated like the rest",
    )
    lowpass_hz: float = _f(
        70.0, "Hz", "corner of the amplifier's anti-alias roll-off (4th order, in power)"
    )
    amplitude_sd: float = _f(
        0.2, "ln units", "subject-to-subject SD of the log amplitude of the whole background"
    )
    spatial_length: float = _f(
        1.0,
        "head radii",
        "length scale of the correlation between electrodes: corr = common + (1 - common) * "
        "exp(-distance / spatial_length)",
    )
    common_correlation: float = _f(
        0.4, "", "correlation shared by every channel pair (the common reference)"
    )
    iaf_mean_hz: float = _f(10.0, "Hz", "mean individual alpha peak frequency over subjects")
    iaf_sd_hz: float = _f(0.8, "Hz", "subject-to-subject SD of the alpha peak frequency")
    alpha_uv2_per_hz: float = _f(
        4.0,
        "µV²/Hz",
        "height of the alpha peak over the background at occipital sites, eyes open (it "
        "falls off toward the front of the head)",
    )
    alpha_width_hz: float = _f(1.0, "Hz", "SD of the Gaussian alpha peak")
    alpha_sd: float = _f(0.3, "ln units", "subject-to-subject SD of the log alpha amplitude")
    beta_peak_hz: float = _f(20.0, "Hz", "centre of the beta peak")
    beta_uv2_per_hz: float = _f(1.5, "µV²/Hz", "height of the beta peak")
    beta_width_hz: float = _f(2.5, "Hz", "SD of the Gaussian beta peak")
    drift_sd: float = _f(
        0.25,
        "ln power",
        "SD of the slow, state-unrelated drift of alpha power (an independent drift of half "
        "this SD moves beta/gamma): the non-stationarity that makes within-subject decoding "
        "hard",
    )
    drift_timescale_s: float = _f(60.0, "s", "time constant of that drift")
    trial_power_sd: float = _f(
        0.2, "ln power", "SD of per-trial, per-band power changes unrelated to affect"
    )
    dc_offset_max_uv: float = _f(
        50000.0, "µV", "per-channel DC offset, uniform in [-max, max] (high-pass before use)"
    )
    dc_drift_uv_per_sqrt_s: float = _f(
        5.0, "µV/√s", "slow electrode drift (a random walk) added to the DC offset"
    )

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise ConfigError("eeg.name must not be empty")
        names = [str(c).strip() for c in self.ch_names]
        if not names or any(not c for c in names):
            raise ConfigError(f"eeg.ch_names must be non-empty labels, got {list(self.ch_names)}")
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ConfigError(f"eeg.ch_names must be unique; repeated: {', '.join(dup)}")
        object.__setattr__(self, "ch_names", tuple(names))
        self._positive(
            "sfreq_hz",
            "aperiodic_knee_hz",
            "aperiodic_exponent",
            "lowpass_hz",
            "spatial_length",
            "iaf_mean_hz",
            "alpha_width_hz",
            "beta_peak_hz",
            "beta_width_hz",
            "drift_timescale_s",
        )
        self._positive(
            "aperiodic_uv2_per_hz",
            "aperiodic_exponent_sd",
            "floor_uv2_per_hz",
            "amplitude_sd",
            "iaf_sd_hz",
            "alpha_uv2_per_hz",
            "alpha_sd",
            "beta_uv2_per_hz",
            "drift_sd",
            "trial_power_sd",
            "dc_offset_max_uv",
            "dc_drift_uv_per_sqrt_s",
            allow_zero=True,
        )
        if self.sfreq_hz < 64:
            raise ConfigError(f"eeg.sfreq_hz must be >= 64 Hz, got {self.sfreq_hz:g}")
        if not 0.0 <= self.common_correlation < 1.0:
            raise ConfigError(
                f"eeg.common_correlation must be in [0, 1), got {self.common_correlation!r}"
            )
        nyq = self.sfreq_hz / 2
        if not self.iaf_mean_hz < nyq or not self.beta_peak_hz < nyq:
            raise ConfigError(
                f"eeg.iaf_mean_hz and eeg.beta_peak_hz must be below Nyquist ({nyq:g} Hz)"
            )


@dataclass(frozen=True)
class ArtifactConfig(_Section):
    """Non-neural signals in the EEG (section ``[artifacts]``)."""

    _name: typing.ClassVar[str] = "artifacts"

    line_freq_hz: float = _f(60.0, "Hz", "mains frequency (the real recording: 60 Hz)")
    line_noise_rms_uv: float = _f(
        100.0, "µV", "median RMS of mains interference over channels (the real file: 90-290)"
    )
    line_noise_spread: float = _f(0.5, "ln units", "channel-to-channel SD of its log RMS")
    line_harmonic_ratio: float = _f(
        0.06, "", "amplitude of the second harmonic relative to the fundamental"
    )
    blink_rate_per_min: float = _f(15.0, "1/min", "mean blink rate over subjects")
    blink_rate_sd: float = _f(0.4, "ln units", "subject-to-subject SD of the log blink rate")
    blink_amplitude_uv: float = _f(
        150.0, "µV", "mean blink peak at Fp1/Fp2 (spreads weaker to the back of the head)"
    )
    blink_duration_s: float = _f(0.35, "s", "mean blink duration")
    emg_burst_rate_per_min: float = _f(
        2.0, "1/min", "spontaneous muscle bursts (jaw clench, swallowing), any time"
    )
    emg_burst_rms_uv: float = _f(15.0, "µV", "median RMS of a burst at temporal sites")
    emg_burst_s: tuple[float, float] = _f(
        (0.2, 1.5), "s", "duration of a burst, uniform in [low, high]"
    )
    smile_emg_rms_uv: float = _f(
        12.0,
        "µV",
        "EMG RMS at temporal sites during a full smile, mean over subjects: the deliberate "
        "confound that ties high-frequency EEG power to the face's happy expression",
    )
    smile_emg_sd: float = _f(0.5, "ln units", "subject-to-subject SD of its log strength")
    pop_rate_per_min: float = _f(
        0.3, "1/min", "electrode pops (step then exponential decay), over all channels"
    )
    pop_amplitude_uv: float = _f(300.0, "µV", "median pop amplitude")
    pop_tau_s: float = _f(1.0, "s", "decay time constant of a pop")
    railed_prob: float = _f(
        0.15, "", "probability that one channel of a session rails (sits at rail_uv) for a span"
    )
    railed_s: tuple[float, float] = _f(
        (5.0, 60.0), "s", "duration of a railed span, uniform in [low, high]"
    )
    rail_uv: float = _f(187500.0, "µV", "amplifier limit (OpenBCI Cyton: ±187,500 µV)")

    def __post_init__(self) -> None:
        self._positive("line_freq_hz", "blink_duration_s", "pop_tau_s", "rail_uv")
        self._positive(
            "line_noise_rms_uv",
            "line_noise_spread",
            "line_harmonic_ratio",
            "blink_rate_per_min",
            "blink_rate_sd",
            "blink_amplitude_uv",
            "emg_burst_rate_per_min",
            "emg_burst_rms_uv",
            "smile_emg_rms_uv",
            "smile_emg_sd",
            "pop_rate_per_min",
            "pop_amplitude_uv",
            allow_zero=True,
        )
        self._range("emg_burst_s", positive=True)
        self._range("railed_s", positive=True)
        self._fraction("railed_prob")


@dataclass(frozen=True)
class AffectConfig(_Section):
    """The affect states and their EEG correlates (section ``[affect]``).

    Valence and arousal live on the 1-9 self-assessment scale; the simulator works with
    ``z = (x - 5) / 4`` in [-1, 1]. Effects are changes of natural-log band power per unit of
    ``z``, drawn per subject from ``|N(mean, sd)|``; a non-responder has all of them at 0.
    """

    _name: typing.ClassVar[str] = "affect"

    low_range: tuple[float, float] = _f(
        (2.0, 4.0), "rating points", "target of a 'low' trial (valence or arousal), uniform"
    )
    high_range: tuple[float, float] = _f(
        (6.0, 8.0), "rating points", "target of a 'high' trial, uniform"
    )
    induction_sd: float = _f(
        0.8,
        "rating points",
        "SD of the felt state around the stimulus target (stimuli do not always work)",
    )
    responder_prob: float = _f(
        0.7, "", "fraction of subjects whose EEG shows the effects (the others: none)"
    )
    faa_effect: float = _f(
        1.2,
        "ln power / z",
        "frontal alpha asymmetry: ln(alpha right) - ln(alpha left) at homologous frontal "
        "sites rises by this per unit of valence z (more left-frontal activity when positive)",
    )
    faa_effect_sd: float = _f(0.25, "ln power / z", "its subject-to-subject SD")
    alpha_suppression: float = _f(
        0.9,
        "ln power / z",
        "posterior (parietal, occipital) alpha power falls by this per unit of arousal z",
    )
    alpha_suppression_sd: float = _f(0.25, "ln power / z", "its subject-to-subject SD")
    beta_gamma_effect: float = _f(
        0.6, "ln power / z", "power above 13 Hz rises by this per unit of arousal z, all sites"
    )
    beta_gamma_effect_sd: float = _f(0.15, "ln power / z", "its subject-to-subject SD")
    ramp_s: float = _f(2.0, "s", "time the brain state takes to move to a new trial's state")

    def __post_init__(self) -> None:
        self._range("low_range", 1.0)
        self._range("high_range", 1.0)
        for name in ("low_range", "high_range"):
            if getattr(self, name)[1] > 9.0:
                raise ConfigError(f"affect.{name} must lie within the 1-9 scale")
        if not self.low_range[1] <= self.high_range[0]:
            raise ConfigError(
                f"affect.low_range {list(self.low_range)} must lie below affect.high_range "
                f"{list(self.high_range)}"
            )
        self._positive(
            "induction_sd",
            "faa_effect",
            "faa_effect_sd",
            "alpha_suppression",
            "alpha_suppression_sd",
            "beta_gamma_effect",
            "beta_gamma_effect_sd",
            "ramp_s",
            allow_zero=True,
        )
        self._fraction("responder_prob")


@dataclass(frozen=True)
class FaceConfig(_Section):
    """The FaceFeatures stream (section ``[face]``).

    Same name, type and channels as the live camera pipeline
    (:func:`acquisition.face_features.face_features_info`); the embedding channels are a
    stand-in for the expression network's embedding (see ``docs/simulator.md``).
    """

    _name: typing.ClassVar[str] = "face"

    name: str = _f("FaceFeatures", "", "name of the FaceFeatures stream")
    fps: float = _f(30.0, "frames/s", "camera frame rate (the stream itself is irregular)")
    jitter_s: float = _f(0.003, "s", "SD of the frame timestamps around the nominal grid")
    drop_prob: float = _f(
        0.002, "", "probability that a frame is dropped (reported on FaceFeatures-events)"
    )
    poker_face_prob: float = _f(0.25, "", "fraction of poker-faced subjects")
    poker_face_expressivity: float = _f(
        0.15, "", "expression strength of a poker-faced subject (1 = typical)"
    )
    expressivity_sd: float = _f(0.3, "ln units", "SD of the log expressivity of other subjects")
    expression_rate_per_min: float = _f(
        8.0,
        "1/min",
        "expression episodes per minute in a trial at full emotional intensity (fewer in "
        "milder trials)",
    )
    expression_s: tuple[float, float] = _f(
        (1.5, 6.0), "s", "duration of an expression episode, uniform in [low, high]"
    )
    spontaneous_rate_per_min: float = _f(
        0.6, "1/min", "brief, weak expressions unrelated to the stimulus (also at rest)"
    )
    logit_noise_sd: float = _f(
        0.5, "logits", "frame-to-frame noise of the expression classifier's logits"
    )
    occlusion_rate_per_min: float = _f(0.5, "1/min", "hand-over-face episodes")
    occlusion_s: tuple[float, float] = _f((1.0, 4.0), "s", "duration of an occlusion")
    face_lost_rate_per_min: float = _f(
        0.3, "1/min", "spans without a face (subject turned away, left the frame)"
    )
    face_lost_s: tuple[float, float] = _f((0.5, 5.0), "s", "duration of a face-lost span")
    head_motion_deg: float = _f(4.0, "degrees", "SD of the slow head rotation around its mean")
    geometry_noise_sd: float = _f(
        0.008, "eye_span", "frame-to-frame noise of the geometry channels"
    )
    embedding_noise_sd: float = _f(
        0.05, "arbitrary", "per-dimension noise of the embedding (low-rank part and white part)"
    )

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise ConfigError("face.name must not be empty")
        self._positive("fps")
        if self.fps > 240:
            raise ConfigError(f"face.fps must be <= 240 frames/s, got {self.fps:g}")
        self._positive(
            "jitter_s",
            "poker_face_expressivity",
            "expressivity_sd",
            "expression_rate_per_min",
            "spontaneous_rate_per_min",
            "logit_noise_sd",
            "occlusion_rate_per_min",
            "face_lost_rate_per_min",
            "head_motion_deg",
            "geometry_noise_sd",
            "embedding_noise_sd",
            allow_zero=True,
        )
        if self.jitter_s >= 0.25 / self.fps:
            raise ConfigError(
                f"face.jitter_s must be below a quarter frame ({0.25 / self.fps:.4f} s at "
                f"{self.fps:g} fps), got {self.jitter_s!r}"
            )
        self._fraction("drop_prob", "poker_face_prob")
        if self.drop_prob > 0.5:
            raise ConfigError(f"face.drop_prob must be <= 0.5, got {self.drop_prob!r}")
        for name in ("expression_s", "occlusion_s", "face_lost_s"):
            self._range(name, positive=True)


@dataclass(frozen=True)
class LabelConfig(_Section):
    """Self-reports (section ``[labels]``)."""

    _name: typing.ClassVar[str] = "labels"

    rater_noise_sd: float = _f(
        0.8, "rating points", "SD of the rating around the felt state, before rounding to 1-9"
    )
    wrong_label_rate: float = _f(
        0.05,
        "",
        "probability that a rating (valence and arousal separately) is mirrored on the scale "
        "(r -> 10 - r): a careless or inverted answer",
    )

    def __post_init__(self) -> None:
        self._positive("rater_noise_sd", allow_zero=True)
        self._fraction("wrong_label_rate")


#: Section name -> its dataclass, in TOML order.
SECTIONS: dict[str, type] = {
    "session": SessionConfig,
    "eeg": EegConfig,
    "artifacts": ArtifactConfig,
    "affect": AffectConfig,
    "face": FaceConfig,
    "labels": LabelConfig,
}


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator needs besides the seed. See the module docstring.

    Build with defaults (``SimulatorConfig()``), from a TOML file (:func:`load_config`),
    from a nested mapping (:meth:`from_dict`), or derive with :meth:`replace`.
    """

    session: SessionConfig = field(default_factory=SessionConfig)
    eeg: EegConfig = field(default_factory=EegConfig)
    artifacts: ArtifactConfig = field(default_factory=ArtifactConfig)
    affect: AffectConfig = field(default_factory=AffectConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"SimulatorConfig.{name} must be a {cls.__name__}")
        nyq = self.eeg.sfreq_hz / 2
        if self.artifacts.line_freq_hz >= nyq:
            raise ConfigError(
                f"artifacts.line_freq_hz ({self.artifacts.line_freq_hz:g} Hz) must be below "
                f"Nyquist of eeg.sfreq_hz ({nyq:g} Hz)"
            )
        if self.eeg.name == self.face.name:
            raise ConfigError(f"eeg.name and face.name must differ (both {self.eeg.name!r})")
        if "Markers" in (self.eeg.name, self.face.name):
            raise ConfigError("'Markers' is the session-marker stream; rename eeg.name/face.name")

    # -- conversions ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (tuples as lists): JSON/TOML-ready, read back by
        :meth:`from_dict`."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = {
                f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v
                for f in dataclasses.fields(section)
            }
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> SimulatorConfig:
        """Build from a nested mapping ``{section: {key: value}}`` (missing keys: defaults).

        Raises
        ------
        ConfigError
            Unknown section or key, a value of the wrong type or out of range; the message
            names ``section.key``.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table of sections, got {type(data).__name__}")
        unknown = [k for k in data if k not in SECTIONS]
        if unknown:
            raise ConfigError(
                f"{source}: unknown section [{unknown[0]}]; valid sections: "
                f"{', '.join(f'[{s}]' for s in SECTIONS)}"
            )
        kwargs = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(
                    f"{source}: [{name}] must be a table of keys, got {type(values).__name__} "
                    f"(write it as a [{name}] section)"
                )
            kwargs[name] = _build_section(section_cls, name, values, source)
        return cls(**kwargs)

    def replace(self, **sections: dict[str, Any]) -> SimulatorConfig:
        """A copy with some keys changed: ``cfg.replace(eeg={"sfreq_hz": 500})``."""
        merged = self.to_dict()
        for name, values in sections.items():
            if name not in SECTIONS:
                raise ConfigError(
                    f"unknown section {name!r}; valid sections: {', '.join(SECTIONS)}"
                )
            merged[name].update(values)
        return SimulatorConfig.from_dict(merged)


# --------------------------------------------------------------------------------------------
# building sections from untyped values (TOML, JSON, dicts)


def _type_name(tp: Any) -> str:
    return {float: "a number", int: "an integer", str: "a string", bool: "true/false"}.get(
        tp, str(tp)
    )


def _coerce(key: str, tp: Any, value: Any, unit: str) -> Any:
    """``value`` as the field type ``tp``, or a ConfigError naming ``key``."""
    unit_txt = f" ({unit})" if unit else ""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list{unit_txt}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", args[0], v, "") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"{key} must be a list of {len(args)} values [low, high]{unit_txt}, got {value!r}"
            )
        return tuple(
            _coerce(f"{key}[{i}]", a, v, "")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if isinstance(value, bool) and tp is not bool:
        raise ConfigError(f"{key} must be {_type_name(tp)}{unit_txt}, got {value!r}")
    if tp is float:
        if not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number{unit_txt}, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number{unit_txt}, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer{unit_txt}, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported field type {tp!r}")  # pragma: no cover


def _build_section(cls: type, name: str, values: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key {name}.{key}; valid keys of [{name}]: {', '.join(fields)}"
            )
    kwargs = {
        key: _coerce(f"{name}.{key}", hints[key], value, fields[key].metadata.get("unit", ""))
        for key, value in values.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | os.PathLike | None) -> SimulatorConfig:
    """Read a TOML config file; ``None`` gives the defaults.

    Raises
    ------
    ConfigError
        The file is missing or not valid TOML, or a key is unknown, mistyped or out of range
        (the message names ``section.key``).
    """
    if path is None:
        return SimulatorConfig()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    return SimulatorConfig.from_dict(data, source=str(p))


# --------------------------------------------------------------------------------------------
# documentation


def describe_fields() -> list[tuple[str, str, Any, str, str]]:
    """Every parameter as ``(section, key, default, unit, doc)``, in TOML order."""
    rows = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((name, f.name, f.default, f.metadata["unit"], f.metadata["doc"]))
    return rows


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def config_to_toml(config: SimulatorConfig | None = None, *, comments: bool = True) -> str:
    """The config as TOML that :func:`load_config` reads back, each key commented with its
    unit and meaning."""
    config = config or SimulatorConfig()
    docs = {(s, k): (u, d) for s, k, _, u, d in describe_fields()}
    lines = []
    for name, values in config.to_dict().items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for key, value in values.items():
            if comments:
                unit, doc = docs[(name, key)]
                text = doc + (f" [{unit}]" if unit else "")
                lines += textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# ")
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
