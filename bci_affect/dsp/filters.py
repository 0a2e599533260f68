"""Causal filter design (MNE) and stream-free filtering helpers.

Every filter here is an IIR filter designed by :func:`mne.filter.create_filter` with
``phase='forward'`` (causal, so it can run live) and returned as second-order sections (SOS).
The chain used for EEG is a Butterworth band-pass (or high-pass) followed by band-stop filters
at the power-line frequency and its harmonics; all sections are stacked into one SOS array so a
single :func:`scipy.signal.sosfilt` call runs the whole chain.

The filter state starts at the *steady state* for the first sample (as if the signal had been
constant at that value forever). OpenBCI boards report DC offsets of tens of millivolts; with
this initial state a high-pass output starts near zero instead of ringing for seconds.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from bci_affect.core.errors import ConfigError

logger = logging.getLogger(__name__)


def design_sos(
    sfreq: float,
    l_freq_hz: float | None,
    h_freq_hz: float | None,
    *,
    order: int = 4,
) -> NDArray[np.float64]:
    """A causal Butterworth filter designed by MNE, as second-order sections.

    Parameters
    ----------
    sfreq : float
        Sample rate in Hz.
    l_freq_hz, h_freq_hz : float or None
        MNE's convention: ``l < h`` band-pass, only ``l`` high-pass, only ``h`` low-pass,
        ``l > h`` band-stop between ``h`` and ``l``.
    order : int
        Butterworth order of each edge (a band-pass has ``2 * order`` poles).

    Returns
    -------
    sos : ndarray, shape (n_sections, 6)
    """
    import mne  # noqa: PLC0415  (MNE is heavy; load it when a filter is first designed)

    if sfreq <= 0:
        raise ConfigError(f"filter design needs a regular stream, got sfreq={sfreq} Hz")
    nyq = sfreq / 2.0
    for name, f in (("l_freq_hz", l_freq_hz), ("h_freq_hz", h_freq_hz)):
        if f is not None and not 0 < f < nyq:
            raise ConfigError(
                f"{name}={f} Hz is outside (0, {nyq:g}) Hz, the valid range at {sfreq:g} Hz"
            )
    params = mne.filter.create_filter(
        None,
        float(sfreq),
        l_freq_hz,
        h_freq_hz,
        method="iir",
        iir_params={"order": int(order), "ftype": "butter", "output": "sos"},
        phase="forward",
        verbose=False,
    )
    return np.asarray(params["sos"], dtype=np.float64)


def notch_freqs(
    sfreq: float, line_hz: float, *, width_hz: float = 2.0, max_hz: float | None = None
) -> list[float]:
    """Power-line frequency and harmonics that a notch chain must remove.

    Harmonics are kept while ``f + width_hz / 2`` stays below the Nyquist frequency and, when
    given, ``f <= max_hz``.
    """
    nyq = sfreq / 2.0
    freqs, f = [], float(line_hz)
    while f + width_hz / 2 < nyq and (max_hz is None or f <= max_hz):
        freqs.append(f)
        f += line_hz
    return freqs


def design_chain(
    sfreq: float,
    *,
    l_freq_hz: float | None,
    h_freq_hz: float | None,
    notch_hz: float | None,
    order: int = 4,
    notch_width_hz: float = 2.0,
    notch_order: int = 2,
) -> NDArray[np.float64]:
    """The EEG filter chain (band-pass or high-pass, then notches) as one SOS array.

    Parameters
    ----------
    sfreq : float
        Sample rate in Hz.
    l_freq_hz, h_freq_hz : float or None
        Band edges in Hz (``None`` leaves that side open).
    notch_hz : float or None
        Power-line frequency (50 or 60 Hz), removed even above the low-pass edge (a
        Butterworth edge attenuates a line just above it by a few dB only). Harmonics up to
        twice the low-pass edge (beyond, the low-pass attenuates by more than 24 dB) and below
        Nyquist are removed too. ``None``: no notch.
    order : int
        Butterworth order of the band edges.
    notch_width_hz : float
        Width of each band-stop in Hz.
    notch_order : int
        Butterworth order of each band-stop edge.

    Returns
    -------
    sos : ndarray, shape (n_sections, 6)
        Empty (shape ``(0, 6)``) when nothing is to be filtered.
    """
    parts = []
    if l_freq_hz is not None or h_freq_hz is not None:
        parts.append(design_sos(sfreq, l_freq_hz, h_freq_hz, order=order))
    if notch_hz is not None:
        max_hz = None if h_freq_hz is None else max(notch_hz, 2.0 * h_freq_hz)
        for f in notch_freqs(sfreq, notch_hz, width_hz=notch_width_hz, max_hz=max_hz):
            parts.append(
                design_sos(sfreq, f + notch_width_hz / 2, f - notch_width_hz / 2, order=notch_order)
            )
    if not parts:
        return np.zeros((0, 6))
    return np.vstack(parts)


def steady_state_zi(sos: NDArray[np.float64], x0: NDArray) -> NDArray[np.float64]:
    """Filter state for a signal that has been constant at ``x0`` forever.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    x0 : ndarray, shape (n_chans,)
        The first sample of each channel.

    Returns
    -------
    zi : ndarray, shape (n_sections, n_chans, 2)
    """
    zi = signal.sosfilt_zi(sos)  # (n_sections, 2) for a unit step
    return zi[:, None, :] * np.asarray(x0, dtype=np.float64)[None, :, None]


def filter_causal(
    sos: NDArray[np.float64], data: NDArray, zi: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Run the causal filter over ``data`` (time on the last axis).

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    data : ndarray, shape (n_chans, n_times)
    zi : ndarray, shape (n_sections, n_chans, 2), optional
        State carried from the previous call; ``None`` starts at the steady state of the first
        sample.

    Returns
    -------
    out : ndarray of float64, shape (n_chans, n_times)
    zf : ndarray, shape (n_sections, n_chans, 2)
        The state to pass to the next call.
    """
    data = np.asarray(data, dtype=np.float64)
    if sos.shape[0] == 0:
        return data.copy(), np.zeros((0, data.shape[0], 2))
    if zi is None:
        zi = steady_state_zi(sos, data[:, 0])
    return signal.sosfilt(sos, data, axis=-1, zi=zi)


def _sosfilt_kernel():
    """scipy's in-place SOS kernel, when it behaves exactly like :func:`scipy.signal.sosfilt`.

    :func:`scipy.signal.sosfilt` spends most of a short chunk's time checking and re-laying out
    its arguments; the streaming filter keeps its state in the kernel's own layout and calls the
    kernel directly. The kernel is private to scipy, so it is used only after a check against
    the public function on a small input (otherwise the public function is used).
    """
    try:
        from scipy.signal._sosfilt import _sosfilt  # noqa: PLC0415

        rng = np.random.default_rng(0)
        sos = signal.butter(2, [0.1, 0.3], "bandpass", output="sos")
        x = rng.standard_normal((2, 16))
        zi = rng.standard_normal((sos.shape[0], 2, 2))
        want, want_zf = signal.sosfilt(sos, x, axis=-1, zi=zi)
        got = x.copy()
        got_zf = np.ascontiguousarray(zi.transpose(1, 0, 2))
        _sosfilt(sos, got, got_zf)
        if np.array_equal(got, want) and np.array_equal(got_zf.transpose(1, 0, 2), want_zf):
            return _sosfilt
    except Exception:  # noqa: BLE001  (any failure: use the public function)
        pass
    logger.debug("scipy's SOS kernel is not usable directly; using scipy.signal.sosfilt")
    return None


_KERNEL = _sosfilt_kernel()


class CausalFilter:
    """A causal SOS filter that carries its state from one call to the next.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)

    Notes
    -----
    Calls with consecutive pieces of a signal give exactly (bit for bit) the output of
    :func:`filter_causal` on the whole signal.
    """

    def __init__(self, sos: NDArray[np.float64]) -> None:
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        self._zi: NDArray[np.float64] | None = None  # (n_chans, n_sections, 2)

    def restart(self, x0: NDArray) -> None:
        """Start from the steady state of samples ``x0``, shape (n_chans,)."""
        zi = steady_state_zi(self.sos, x0)  # (n_sections, n_chans, 2)
        self._zi = np.ascontiguousarray(zi.transpose(1, 0, 2))

    def __call__(self, data: NDArray) -> NDArray[np.float64]:
        """Filter ``data`` (n_chans, n_times); starts at the steady state of its first sample."""
        out = np.array(data, dtype=np.float64, order="C")  # a copy, filtered in place
        if self.sos.shape[0] == 0 or out.shape[-1] == 0:
            return out
        if self._zi is None:
            self.restart(out[:, 0])
        if _KERNEL is not None:
            _KERNEL(self.sos, out, self._zi)
            return out
        out, zf = signal.sosfilt(self.sos, out, axis=-1, zi=self._zi.transpose(1, 0, 2))
        self._zi = np.ascontiguousarray(zf.transpose(1, 0, 2))
        return out


def reference_weights(
    n_chans: int, reference: str | int | None, good: NDArray[np.bool_] | None = None
) -> NDArray[np.float64] | None:
    """Weights ``w`` such that the reference signal is ``w @ data``.

    Parameters
    ----------
    n_chans : int
    reference : ``"average"``, int or None
        ``"average"``: mean of the good channels; an int: that channel; ``None``: keep the
        recording's reference (returns ``None``).
    good : ndarray of bool, shape (n_chans,), optional
        Channels allowed in the average (default: all).

    Returns
    -------
    w : ndarray, shape (n_chans,), or None
        All zeros when no good channel is left (the average is then undefined; the caller
        treats every channel as bad).
    """
    if reference is None:
        return None
    w = np.zeros(n_chans)
    if reference == "average":
        g = np.ones(n_chans, bool) if good is None else np.asarray(good, bool)
        if g.any():
            w[g] = 1.0 / g.sum()
        return w
    w[int(reference)] = 1.0
    return w


def rereference(data: NDArray, weights: NDArray[np.float64] | None) -> NDArray:
    """Subtract the reference ``weights @ data`` from every channel.

    Parameters
    ----------
    data : ndarray, shape (..., n_chans, n_times)
        Time-domain windows, or spectra ``(..., n_chans, n_freqs)``: the reference is linear, so
        it commutes with filtering and with the Fourier transform.
    weights : ndarray, shape (n_chans,) or (..., n_chans), or None
        From :func:`reference_weights`; leading axes broadcast against ``data``'s. ``None``
        returns ``data`` unchanged.
    """
    if weights is None:
        return data
    weights = np.asarray(weights, dtype=np.float64)
    # An explicit sum in channel order: the result must not depend on how many samples come
    # at once (a matrix product may change its summation order with the array's shape).
    ref = np.zeros(
        np.broadcast_shapes(weights.shape[:-1], data.shape[:-2]) + data.shape[-1:],
        dtype=np.result_type(data, weights),
    )
    for c in range(weights.shape[-1]):
        w = weights[..., c]
        if np.any(w):
            ref = ref + w[..., None] * data[..., c, :]
    return data - ref[..., None, :]
