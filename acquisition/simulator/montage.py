"""Where the simulated electrodes sit, and what that implies for each channel.

Positions are unit vectors on a spherical head (x to the subject's right, y to the nose, z up),
taken from MNE's ``standard_1005`` template for the 10-20 and 10-10 names (plus the old
T3/T4/T5/T6 and the ear/mastoid references), centred on the head. Channel names not in the
table are spread on a ring around the vertex and get no region-specific effects.

From the positions come:

- the spatial correlation of the background, ``common + (1 - common) * exp(-d / length)``
  (``d``: chord distance in head radii), as a Cholesky factor that mixes independent sources;
- per-channel weights of each signal: alpha (strongest at the back), blinks (strongest at
  Fp1/Fp2, fading over a few centimetres), muscle (temporal sites and the forehead), and the
  frontal left/right sign of the alpha asymmetry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

__all__ = ["POSITIONS", "ChannelLayout", "channel_layout"]

#: Unit-sphere positions (x right, y front, z up) of 10-20/10-10 electrode names.
POSITIONS: dict[str, tuple[float, float, float]] = {
    "Fp1": (-0.289, 0.956, -0.054), "Fpz": (-0.002, 1.000, -0.002), "Fp2": (0.285, 0.957, -0.054),
    "AF7": (-0.551, 0.830, -0.091), "AF3": (-0.340, 0.913, 0.227), "AFz": (-0.001, 0.932, 0.361),
    "AF4": (0.349, 0.908, 0.231), "AF8": (0.548, 0.831, -0.092), "F9": (-0.689, 0.549, -0.474),
    "F7": (-0.774, 0.624, -0.109), "F5": (-0.705, 0.680, 0.200), "F3": (-0.532, 0.711, 0.460),
    "F1": (-0.282, 0.725, 0.628), "Fz": (0.000, 0.732, 0.682), "F2": (0.296, 0.729, 0.617),
    "F4": (0.538, 0.718, 0.442), "F6": (0.712, 0.677, 0.188), "F8": (0.773, 0.625, -0.112),
    "F10": (0.693, 0.545, -0.472), "FT9": (-0.829, 0.285, -0.481), "FT7": (-0.937, 0.330, -0.112),
    "FC5": (-0.879, 0.375, 0.294), "FC3": (-0.664, 0.408, 0.626), "FC1": (-0.353, 0.416, 0.838),
    "FCz": (0.001, 0.421, 0.907), "FC2": (0.358, 0.424, 0.832), "FC4": (0.670, 0.412, 0.617),
    "FC6": (0.879, 0.381, 0.287), "FT8": (0.933, 0.341, -0.113), "FT10": (0.827, 0.284, -0.484),
    "T9": (-0.879, -0.014, -0.477), "T7": (-0.996, -0.019, -0.093), "C5": (-0.935, 0.008, 0.355),
    "C3": (-0.706, 0.030, 0.708), "C1": (-0.371, 0.045, 0.928), "Cz": (0.001, 0.052, 0.999),
    "C2": (0.384, 0.049, 0.922), "C4": (0.716, 0.038, 0.697), "C6": (0.938, 0.019, 0.346),
    "T8": (0.996, -0.007, -0.094), "T10": (0.876, -0.020, -0.481), "TP9": (-0.844, -0.315, -0.434),
    "TP7": (-0.936, -0.347, -0.061), "CP5": (-0.868, -0.349, 0.352), "CP3": (-0.650, -0.332, 0.683),
    "CP1": (-0.342, -0.314, 0.886), "CPz": (0.001, -0.310, 0.951), "CP2": (0.363, -0.311, 0.878),
    "CP4": (0.665, -0.323, 0.673), "CP6": (0.877, -0.335, 0.345), "TP8": (0.938, -0.342, -0.062),
    "TP10": (0.842, -0.320, -0.435), "P9": (-0.717, -0.580, -0.387), "P7": (-0.776, -0.630, -0.011),
    "P5": (-0.701, -0.642, 0.310), "P3": (-0.526, -0.635, 0.566), "P1": (-0.274, -0.627, 0.729),
    "Pz": (0.000, -0.621, 0.783), "P2": (0.295, -0.617, 0.730), "P4": (0.539, -0.624, 0.565),
    "P6": (0.704, -0.640, 0.308), "P8": (0.779, -0.627, -0.011), "P10": (0.715, -0.583, -0.386),
    "PO9": (-0.522, -0.790, -0.321), "PO7": (-0.552, -0.833, 0.043), "PO3": (-0.362, -0.851, 0.380),
    "POz": (-0.001, -0.860, 0.510), "PO4": (0.361, -0.854, 0.374), "PO8": (0.554, -0.832, 0.042),
    "PO10": (0.518, -0.792, -0.323), "O1": (-0.288, -0.952, 0.100), "Oz": (-0.002, -0.987, 0.159),
    "O2": (0.288, -0.952, 0.100), "Iz": (-0.003, -0.979, -0.203), "T3": (-0.996, -0.019, -0.093),
    "T4": (0.996, -0.007, -0.094), "T5": (-0.776, -0.630, -0.011), "T6": (0.779, -0.627, -0.011),
    "A1": (-0.789, -0.097, -0.607), "A2": (0.785, -0.097, -0.611), "M1": (-0.763, -0.270, -0.588),
    "M2": (0.759, -0.272, -0.591),
}  # fmt: skip

_LOOKUP = {k.lower(): k for k in POSITIONS}
_FRONTAL = re.compile(r"^(fp|af|f)(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ChannelLayout:
    """Per-channel geometry and signal weights of a montage.

    Attributes
    ----------
    ch_names : tuple of str
    positions : ndarray, shape (n_chans, 3)
        Unit vectors (x right, y front, z up).
    known : ndarray of bool, shape (n_chans,)
        Whether the name is a 10-20/10-10 position.
    alpha : ndarray, shape (n_chans,)
        Relative alpha amplitude (1 at occipital sites, about 0.35 at the forehead).
    blink : ndarray, shape (n_chans,)
        Blink amplitude relative to Fp1/Fp2.
    emg : ndarray, shape (n_chans,)
        Muscle (EMG) amplitude relative to temporal sites.
    faa_sign : ndarray, shape (n_chans,)
        -1 for left frontal sites, +1 for right frontal, 0 elsewhere (frontal alpha asymmetry).
    posterior : ndarray, shape (n_chans,)
        Weight of posterior alpha suppression (1 at occipital/parietal sites, 0 at the front).
    """

    ch_names: tuple[str, ...]
    positions: NDArray[np.float64]
    known: NDArray[np.bool_]
    alpha: NDArray[np.float64]
    blink: NDArray[np.float64]
    emg: NDArray[np.float64]
    faa_sign: NDArray[np.float64]
    posterior: NDArray[np.float64]

    @property
    def n_chans(self) -> int:
        return len(self.ch_names)

    def correlation(self, length: float, common: float) -> NDArray[np.float64]:
        """Spatial correlation matrix, shape (n_chans, n_chans), unit diagonal."""
        d = np.linalg.norm(self.positions[:, None, :] - self.positions[None, :, :], axis=-1)
        return common + (1.0 - common) * np.exp(-d / length)

    def mixing(self, length: float, common: float) -> NDArray[np.float64]:
        """Lower-triangular ``L`` with ``L @ L.T`` = :meth:`correlation` (made positive
        definite when two channels share a position)."""
        c = self.correlation(length, common)
        c = c + 1e-6 * np.eye(len(c))
        return np.linalg.cholesky(c / (1.0 + 1e-6))


def channel_layout(ch_names: Sequence[str]) -> ChannelLayout:
    """The :class:`ChannelLayout` of ``ch_names``; unknown names go on a ring at mid height."""
    names = tuple(ch_names)
    pos = np.zeros((len(names), 3))
    known = np.zeros(len(names), dtype=bool)
    unknown = []
    for i, name in enumerate(names):
        key = _LOOKUP.get(name.strip().lower())
        if key is not None:
            pos[i] = POSITIONS[key]
            known[i] = True
        else:
            unknown.append(i)
    if unknown:
        logger.warning(
            "channels %s are not 10-20/10-10 names: placed on a ring, without region-specific "
            "effects (blinks, alpha asymmetry, posterior alpha, temporal EMG)",
            ", ".join(names[i] for i in unknown),
        )
        angles = 2 * np.pi * np.arange(len(unknown)) / max(len(unknown), 1)
        ring = np.stack([np.cos(angles), np.sin(angles), np.ones_like(angles)], axis=1)
        pos[unknown] = ring / np.linalg.norm(ring, axis=1, keepdims=True)
    x, y, z = pos.T
    # alpha: occipital 1.0, parietal ~0.9, central ~0.6, frontal ~0.35
    alpha = np.where(known, 0.35 + 0.65 * np.clip((0.3 - y) / 1.25, 0.0, 1.0), 0.6)
    # blinks: the eyes sit just below Fp1/Fp2; amplitude falls with distance from them
    eyes = np.array([[-0.3, 0.95, -0.3], [0.3, 0.95, -0.3]])
    d_eye = np.min(np.linalg.norm(pos[:, None, :] - eyes[None], axis=-1), axis=1)
    blink = np.where(known, np.exp(-np.clip(d_eye - 0.25, 0.0, None) / 0.7), 0.0)
    blink = blink / blink.max() if blink.max() > 0 else blink
    # muscle: temporalis (lateral, low), frontalis (forehead), neck (low occipital)
    lateral = np.clip((np.abs(x) - 0.55) / 0.4, 0.0, 1.0) * np.clip((0.5 - z) / 0.5, 0.0, 1.0)
    forehead = 0.5 * np.clip((y - 0.8) / 0.2, 0.0, 1.0)
    neck = 0.3 * np.clip((-y - 0.8) / 0.2, 0.0, 1.0) * np.clip((0.3 - z) / 0.5, 0.0, 1.0)
    emg = np.where(known, 0.1 + np.maximum.reduce([lateral, forehead, neck]), 0.3)
    faa_sign = np.zeros(len(names))
    for i, name in enumerate(names):
        m = _FRONTAL.match(name.strip())
        if m and known[i]:
            faa_sign[i] = -1.0 if int(m.group(2)) % 2 == 1 else 1.0
    posterior = np.where(known, np.clip((-y - 0.2) / 0.6, 0.0, 1.0), 0.0)
    return ChannelLayout(
        ch_names=names,
        positions=pos,
        known=known,
        alpha=alpha,
        blink=blink,
        emg=emg,
        faa_sign=faa_sign,
        posterior=posterior,
    )
