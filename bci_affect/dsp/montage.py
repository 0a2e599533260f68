"""Map EEG channel labels of any montage onto a fixed set of virtual 10-20 sites.

The EEG student must not depend on which or how many electrodes a board has (OpenBCI Cyton
8 ch, Cyton+Daisy 16 ch, Ganglion 4 ch, Muse ``TP9,AF7,AF8,TP10``, BrainFlow's synthetic board,
any 10-20 / 10-10 / 10-05 subset). Features per channel and band, shape
``(..., n_chans, n_bands)``, are therefore mapped by :meth:`MontageMap.apply` onto the 19 sites
of the 10-20 system (:data:`VIRTUAL_SITES`), shape ``(..., n_sites, n_bands)``.

Labels
    :func:`canonical_label` turns a stream label into a name of MNE's ``standard_1005``
    template. Accepted, case-insensitively: the bare name (``Fp1``, ``FP1``, ``fp1``,
    ``Fp1 ``); an ``EEG`` prefix followed by a space, ``_``, ``-``, ``:`` or ``.``
    (``EEG Fp1``, ``eeg_fp1``); a reference suffix after a separator, one of ``REF``,
    ``REFERENCE``, ``A1``, ``A2``, ``M1``, ``M2``, ``A1A2``, ``M1M2``, ``LE``, ``RE``, ``AR``,
    ``AVG``, ``AVERAGE``, ``CAR`` (``Fp1-REF``, ``FP1-A1``, ``EEG FP1-LE``); trailing dots
    (PhysioNet's ``Fc5.``). The old names ``T3``, ``T4``, ``T5``, ``T6`` become ``T7``, ``T8``,
    ``P7``, ``P8`` (:data:`ALIASES`). A bipolar derivation (``Fp1-F7``, ``Fpz-Cz``) is not one
    site and is not accepted, nor are board placeholders (``EXG Channel 0``, ``EEG1``) or
    non-EEG channels (``Accel``, ``AUX1``). Ear and mastoid sites (``A1``, ``A2``, ``M1``,
    ``M2``, :data:`REFERENCE_SITES`) are recognised but left out of the map: they carry the
    reference, not cortical activity.

Positions
    MNE's ``standard_1005`` template, loaded on first use (never at import time) and cached. A
    sphere is fitted to its 343 positions by least squares (radius ~9.9 cm, centre ~1.6 cm
    behind the template's origin; residual 5.5 mm), the positions are centred on it, made
    exactly mirror-symmetric about the mid-sagittal plane (each position averaged with the
    mirror image of its homologue, e.g. ``F3`` with ``F4``; the template is off by up to ~1
    mm) and projected onto the unit sphere: x right, y front, z up. Symmetry matters here:
    without it a midline virtual site of a symmetric montage leans to one hemisphere.

Interpolation: inverse-distance weighting (Shepard) on the great-circle distance, power 4
    The weight of used electrode ``j`` for virtual site ``i`` is ``d_ij ** -4`` normalised
    over the used electrodes (``d_ij`` clipped below at 1e-3 rad, ~0.1 mm). Why this kernel:

    - A site that coincides with an electrode takes that electrode's value (weight
      ``1 - O(1e-10)``) whatever the montage's density; a Gaussian kernel needs a width
      that is a compromise between this and coverage.
    - Every site is defined for any montage, even 4 channels: far from all electrodes the
      weights depend on distance *ratios*, so the nearest electrodes dominate smoothly. A
      fixed-width Gaussian turns into a nearest-neighbour switch there, flipped by
      sub-millimetre differences (a midline site of a symmetric montage jumps to one side).
    - Power 4 rather than Shepard's usual 2 keeps hemispheric asymmetry: with a feature of
      +1 on left, -1 on right electrodes, the mean left-minus-right contrast of the eight
      homologous virtual pairs is 1.87 (of 2) for the Cyton, 1.79 for Muse, 2.0 for
      Cyton+Daisy (power 2: 1.59, 1.35, 2.0); higher powers approach a Voronoi
      (nearest-electrode) map with jumps at cell borders.
    - Every weight depends on one site-electrode pair only, so leaving a channel out and
      renormalising gives exactly the map of the montage without that channel. This is how
      :meth:`MontageMap.apply` treats a channel that is NaN in one window, so a bad channel
      costs nothing more than its absence would.
    - MNE's spherical-spline interpolation matrix was rejected: for 4 to 8 electrodes it
      extrapolates with negative and > 1 weights (Cyton: -0.98 to 1.38), so a virtual site
      can leave the range of the measured values.

Averaging differential entropy (a log power) over electrodes is a geometric mean of powers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bci_affect.core.errors import ConfigError, ShapeError

#: The 19 sites of the 10-20 system, the rows of every :class:`MontageMap`.
VIRTUAL_SITES: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz",
    "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2",
)  # fmt: skip

#: Old 10-20 names -> the 10-10 names (same positions in ``standard_1005``).
ALIASES: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

#: Ear-lobe and mastoid sites: they have a position but carry the reference, so no
#: :class:`MontageMap` uses them.
REFERENCE_SITES: frozenset[str] = frozenset({"A1", "A2", "M1", "M2"})

#: Reason strings of :attr:`MontageMap.left_out`.
REASON_UNKNOWN = "no scalp position; name it with --montage"
REASON_REFERENCE = "reference/ear site"

_POWER = 4.0  # inverse-distance power
_MIN_DIST_RAD = 1e-3  # distances below this count as coincident
_EXAMPLE_MONTAGE = "Fp1,Fp2,C3,C4"

_PREFIX = re.compile(r"^eeg[\s_:.\-]+", re.IGNORECASE)
_REF_SUFFIX = re.compile(
    r"[\s_:/\-]+(?:ref|reference|a1a2|m1m2|a1|a2|m1|m2|le|re|ar|avg|average|car)$",
    re.IGNORECASE,
)
_SIDE = re.compile(r"^([A-Za-z]+?)(\d+|z)(h?)$")


@functools.cache
def _template() -> tuple[dict[str, str], dict[str, NDArray[np.float64]]]:
    """MNE's ``standard_1005`` names and positions, loaded once.

    Returns
    -------
    by_lower : dict of str to str
        Lower-case name -> the template's spelling (no two names collide in lower case).
    unit : dict of str to ndarray, shape (3,)
        Name -> unit vector from the fitted sphere's centre, mirror-symmetrised
        (x right, y front, z up).
    """
    import mne  # noqa: PLC0415 (heavy; only needed on first use)

    ch_pos = mne.channels.make_standard_montage("standard_1005").get_positions()["ch_pos"]
    names = list(ch_pos)
    pos = np.array([ch_pos[n] for n in names], dtype=np.float64)  # (n, 3) metres
    # algebraic sphere fit: |p|^2 = 2 c.p + (r^2 - |c|^2)
    design = np.column_stack([2.0 * pos, np.ones(len(pos))])
    coef, *_ = np.linalg.lstsq(design, (pos**2).sum(axis=1), rcond=None)
    centred = pos - coef[:3]
    index = {n: i for i, n in enumerate(names)}
    flip = np.array([-1.0, 1.0, 1.0])
    sym = centred.copy()
    for i, name in enumerate(names):
        j = index.get(_mirror(name))
        if j is not None:
            sym[i] = 0.5 * (centred[i] + flip * centred[j])
    sym /= np.linalg.norm(sym, axis=1, keepdims=True)
    by_lower = {n.lower(): n for n in names}
    assert len(by_lower) == len(names), "standard_1005 names collide in lower case"
    return by_lower, {n: sym[i] for i, n in enumerate(names)}


def _mirror(name: str) -> str:
    """The homologous site on the other hemisphere (``F3`` -> ``F4``, ``Cz`` -> ``Cz``)."""
    m = _SIDE.match(name)
    if m is None:
        return name
    stem, num, half = m.groups()
    if num == "z":
        return name
    n = int(num)
    return f"{stem}{n + 1 if n % 2 else n - 1}{half}"


def canonical_label(label: str) -> str | None:
    """The ``standard_1005`` name of a stream's channel label.

    Parameters
    ----------
    label : str
        A channel label as a stream or file gives it (``"Fp1"``, ``"EEG FP1-REF"``, ``"T3"``).
        The accepted decorations are listed in the module docstring.

    Returns
    -------
    name : str or None
        The template's spelling after :data:`ALIASES` (``"T3"`` -> ``"T7"``), or None when the
        label names no position (``"EXG Channel 0"``, ``"Accel"``, ``"Fp1-F7"``). Reference
        sites (:data:`REFERENCE_SITES`) are returned by name; :func:`montage_map` leaves them
        out.
    """
    s = str(label).strip()
    s = _PREFIX.sub("", s)
    s = _REF_SUFFIX.sub("", s)
    s = s.rstrip(". ")
    if not s:
        return None
    by_lower, _ = _template()
    name = by_lower.get(s.lower())
    if name is None:
        return None
    return ALIASES.get(name, name)


def scalp_positions(
    ch_names: Sequence[str],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Unit-sphere positions of channel labels.

    Parameters
    ----------
    ch_names : sequence of str, length n_chans
        Channel labels, read with :func:`canonical_label`.

    Returns
    -------
    pos : ndarray, shape (n_chans, 3)
        Unit vectors from the centre of the sphere fitted to MNE's ``standard_1005`` template,
        mirror-symmetrised (x right, y front, z up; dimensionless). NaN rows for labels with no
        position. Reference sites (``A1``, ``M2``, ...) have their positions.
    known : ndarray of bool, shape (n_chans,)
        True where the label has a position.
    """
    names = [canonical_label(c) for c in ch_names]
    _, unit = _template()
    pos = np.full((len(names), 3), np.nan)
    for i, name in enumerate(names):
        if name is not None:
            pos[i] = unit[name]
    return pos, np.array([n is not None for n in names], dtype=bool)


def _great_circle(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Angles in radians between unit vectors ``a`` (n, 3) and ``b`` (m, 3), shape (n, m)."""
    cross = np.linalg.norm(np.cross(a[:, None, :], b[None, :, :]), axis=-1)
    return np.arctan2(cross, a @ b.T)


@dataclass(frozen=True, eq=False)
class MontageMap:
    """A fixed linear map from a stream's EEG channels to the virtual sites.

    Build it with :func:`montage_map`.

    Attributes
    ----------
    ch_names : tuple of str, length n_chans
        The stream's labels, in stream order.
    sites : tuple of str, length n_sites
        The virtual sites (:data:`VIRTUAL_SITES`).
    weights : ndarray, shape (n_sites, n_chans)
        Non-negative float64, read-only. Each row sums to 1 over the used channels; the
        columns of channels left out are 0.
    used : tuple of str
        Stream labels that contribute (the columns with a non-zero weight), in stream order.
    left_out : dict of str to str
        Stream label -> why it does not contribute (:data:`REASON_UNKNOWN`,
        :data:`REASON_REFERENCE` or ``"duplicate of X"``).
    """

    ch_names: tuple[str, ...]
    sites: tuple[str, ...]
    weights: NDArray[np.float64]
    used: tuple[str, ...]
    left_out: dict[str, str]
    _cols: NDArray[np.intp] = field(init=False, repr=False)
    _w_used: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = np.array(self.weights, dtype=np.float64)
        shape = (len(self.sites), len(self.ch_names))
        if w.shape != shape:
            raise ShapeError(
                f"weights has shape {w.shape}, need (n_sites, n_chans) = {shape} "
                f"for {len(self.sites)} sites and {len(self.ch_names)} channels"
            )
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise ConfigError("montage weights must be finite and non-negative")
        cols = np.flatnonzero(w.any(axis=0))
        if len(cols) != len(self.used):
            raise ConfigError(
                f"montage weights use {len(cols)} channels but used lists {len(self.used)}"
            )
        w.flags.writeable = False
        w_used = np.ascontiguousarray(w[:, cols].T)  # (n_used, n_sites)
        w_used.flags.writeable = False
        object.__setattr__(self, "ch_names", tuple(self.ch_names))
        object.__setattr__(self, "sites", tuple(self.sites))
        object.__setattr__(self, "used", tuple(self.used))
        object.__setattr__(self, "left_out", dict(self.left_out))
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "_cols", cols)
        object.__setattr__(self, "_w_used", w_used)

    @property
    def n_chans(self) -> int:
        """Number of stream channels (columns of :attr:`weights`)."""
        return len(self.ch_names)

    @property
    def n_sites(self) -> int:
        """Number of virtual sites (rows of :attr:`weights`)."""
        return len(self.sites)

    def apply(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """Map per-channel features onto the virtual sites.

        Each output is a weighted mean of the used channels. A non-finite value (NaN, or -inf
        from the log of a flat channel) leaves that channel out of that window and band only,
        with the site's weights renormalised over the finite channels: the result equals the
        map of the montage without that channel. A site whose weight lies entirely on
        non-finite channels is NaN. Channels left out of the map are ignored, whatever
        their values.

        Parameters
        ----------
        x : ndarray, shape (..., n_chans, n_bands)
            Features (e.g. differential entropy in nats), channels in :attr:`ch_names` order;
            any leading axes (windows, batches).

        Returns
        -------
        y : ndarray, shape (..., n_sites, n_bands)
            Computed in float64; returned in ``x``'s dtype when it is a float type, else
            float64.

        Raises
        ------
        ShapeError
            ``x`` has fewer than 2 axes or its channel axis (-2) is not n_chans long.
        """
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[-2] != self.n_chans:
            raise ShapeError(
                f"features have shape {x.shape}; need (..., n_chans={self.n_chans}, n_bands) "
                f"for channels {', '.join(self.ch_names)}"
            )
        out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
        lead, n_bands = x.shape[:-2], x.shape[-1]
        # (..., n_chans, n_bands) -> (rows, n_used), one row per window and band
        picked = x if len(self._cols) == self.n_chans else x[..., self._cols, :]
        flat = np.moveaxis(picked, -2, -1).reshape(-1, len(self._cols))
        flat = flat.astype(np.float64, copy=False)
        finite = np.isfinite(flat)
        bad = ~finite.all(axis=1)  # (rows,)
        if not bad.any():
            y = flat @ self._w_used  # (rows, n_sites)
        else:
            # rows with a non-finite channel are renormalised; the others are computed as if
            # there were none, so a bad channel changes nothing outside its window and band
            y = np.where(finite, flat, 0.0) @ self._w_used
            den = finite[bad].astype(np.float64) @ self._w_used
            with np.errstate(divide="ignore", invalid="ignore"):
                y[bad] = np.where(den > 0, y[bad] / den, np.nan)
        y = y.reshape(*lead, n_bands, self.n_sites)
        return np.moveaxis(y, -1, -2).astype(out_dtype, copy=False)

    def describe(self) -> str:
        """One line for logs: which channels are used and which are left out, and why.

        Returns
        -------
        line : str
            E.g. ``"EEG montage: 8 of 10 channels used (Fp1, Fp2, ...); left out:
            EXG Channel 8 (no scalp position; name it with --montage), A1 (reference/ear
            site)"``. Labels that differ from their template name show it (``T3 as T7``).
        """
        shown = []
        for label in self.used:
            name = canonical_label(label)
            shown.append(label if name == label.strip() else f"{label} as {name}")
        line = (
            f"EEG montage: {len(self.used)} of {self.n_chans} channels used "
            f"({', '.join(shown) or 'none'})"
        )
        if self.left_out:
            line += "; left out: " + ", ".join(f"{k} ({v})" for k, v in self.left_out.items())
        return line


def montage_map(ch_names: Sequence[str], *, min_known: int = 2) -> MontageMap:
    """The map of a stream's channels onto :data:`VIRTUAL_SITES`.

    Parameters
    ----------
    ch_names : sequence of str, length n_chans
        The stream's EEG labels in stream order (see :func:`canonical_label`).
    min_known : int
        Fewest channels with a scalp position (references and duplicates not counted)
        accepted; at least 1.

    Returns
    -------
    MontageMap
        Weights by inverse-distance weighting (power 4) on great-circle distances; see the
        module docstring. Labels that name the same site (``T3`` and ``T7``): the first is
        used, the others are left out as duplicates.

    Raises
    ------
    ConfigError
        Fewer than ``min_known`` usable channels (the message names the labels that did not
        map and the ``--montage`` option), no channels, or ``min_known < 1``.
    """
    labels = tuple(str(c) for c in ch_names)
    if isinstance(min_known, bool) or not isinstance(min_known, int) or min_known < 1:
        raise ConfigError(f"min_known must be an integer >= 1, got {min_known!r}")
    if not labels:
        raise ConfigError("no EEG channels to map onto the virtual montage")
    _, unit = _template()

    used_idx: list[int] = []
    used_names: list[str] = []
    first: dict[str, str] = {}
    left_out: dict[str, str] = {}
    unknown: list[str] = []
    for i, label in enumerate(labels):
        name = canonical_label(label)
        if name is None:
            left_out[label] = REASON_UNKNOWN
            unknown.append(label)
        elif name in REFERENCE_SITES:
            left_out[label] = REASON_REFERENCE
        elif name in first:
            left_out[label] = f"duplicate of {first[name]}"
        else:
            first[name] = label
            used_idx.append(i)
            used_names.append(name)

    if len(used_idx) < min_known:
        n_used = len(used_idx)
        parts = [
            f"only {n_used} of {len(labels)} EEG channels {'has' if n_used == 1 else 'have'} "
            "a scalp position"
            + (f" ({', '.join(labels[i] for i in used_idx)})" if used_idx else "")
            + f", need at least {min_known}"
        ]
        if unknown:
            one = len(unknown) == 1
            parts.append(
                f"EEG channel{'' if one else 's'} {', '.join(unknown)} "
                f"{'has' if one else 'have'} no scalp position (10-05 names such as Fp1, C3, "
                f"O2 are needed); name {'it' if one else 'them'} with --montage, one label per "
                f"channel in stream order (e.g. --montage {_EXAMPLE_MONTAGE})"
            )
        others = [f"{k} ({v})" for k, v in left_out.items() if v != REASON_UNKNOWN]
        if others:
            parts.append("left out: " + ", ".join(others))
        raise ConfigError("; ".join(parts))

    site_pos = np.array([unit[s] for s in VIRTUAL_SITES])  # (n_sites, 3)
    elec_pos = np.array([unit[n] for n in used_names])  # (n_used, 3)
    dist = np.maximum(_great_circle(site_pos, elec_pos), _MIN_DIST_RAD)  # (n_sites, n_used)
    w_used = (dist.min(axis=1, keepdims=True) / dist) ** _POWER  # nearest = 1, no overflow
    w_used /= w_used.sum(axis=1, keepdims=True)
    weights = np.zeros((len(VIRTUAL_SITES), len(labels)))
    weights[:, used_idx] = w_used
    return MontageMap(
        ch_names=labels,
        sites=VIRTUAL_SITES,
        weights=weights,
        used=tuple(labels[i] for i in used_idx),
        left_out=left_out,
    )
