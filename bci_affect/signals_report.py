"""Per-window signal quality and band power as JSON records, and a plot of both.

Used by ``bci-affect inspect FILE --windows [--json]`` and ``--plot out.png``.

Each record (one JSON object per window) holds:

==================  ==========================================================================
``t_end``           end of the window, seconds on the LSL clock
``t_rel``           end of the window, seconds since the first EEG sample
``window_s``        window length, seconds
``complete``        no gap in the EEG (otherwise quality is 0 and features are null)
``eeg_coverage``    fraction of the window's EEG samples present
``gaps``            ``[[start, end], ...]`` pauses in the EEG inside the window (LSL clock)
``quality``         window quality in [0, 1]: fraction of good channels, divided by the blink
                    and muscle scores where they exceed 1 (0 for incomplete windows)
``blink_score``     smoothed frontal peak-to-peak amplitude / blink threshold (null without a
                    frontal channel); ``blink``: score >= 1
``muscle_score``    largest per-channel 30-100 Hz RMS / muscle threshold; ``muscle``: >= 1
``bad_channels``    channels left out of the features (flat or railed)
``faa``             frontal alpha asymmetry, ln(alpha right) - ln(alpha left) (null without a
                    frontal pair)
``channels``        one object per channel: ``name``; flags ``flat``, ``railed``,
                    ``line_noise``, ``muscle``, ``bad``; ``line_ratio`` (line power / 1-45 Hz
                    power, raw signal); ``emg_rms_uv`` (30-100 Hz RMS, µV); ``band_power_uv2``,
                    ``relative_power`` and ``de`` (differential entropy, nats): one value per
                    band (delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz) of the
                    filtered, re-referenced window
``face_*``          with a FaceFeatures stream: ``face_frames``, ``face_coverage``, ``face_gap``
==================  ==========================================================================

Numbers are rounded to 6 significant digits; NaN becomes ``null``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from bci_affect.core.chunk import Chunk
from bci_affect.core.errors import ConfigError
from bci_affect.processors.preprocess import Preprocess
from bci_affect.processors.signals import SignalsConfig, WindowResult, iter_recording

logger = logging.getLogger(__name__)


def _num(x: float) -> float | None:
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def result_record(result: WindowResult, t0: float) -> dict:
    """The JSON-ready record of one scored window (see the module docstring).

    Parameters
    ----------
    result : WindowResult
    t0 : float
        Timestamp of the first EEG sample (for ``t_rel``).
    """
    w, q, f = result.window, result.quality, result.features
    channels = []
    for i, name in enumerate(w.ch_names):
        channels.append(
            {
                "name": name,
                "flat": bool(q.flat[i]),
                "railed": bool(q.railed[i]),
                "line_noise": bool(q.line_noise[i]),
                "muscle": bool(q.muscle_ch[i]),
                "bad": bool(q.bad[i]),
                "line_ratio": _num(q.line_ratio[i]),
                "emg_rms_uv": _num(q.emg_rms_uv[i]),
                "band_power_uv2": {b: _num(f.power[i, j]) for j, b in enumerate(f.bands)},
                "relative_power": {b: _num(f.relative[i, j]) for j, b in enumerate(f.bands)},
                "de": {b: _num(f.de[i, j]) for j, b in enumerate(f.bands)},
            }
        )
    rec = {
        "t_end": round(w.t_end, 6),
        "t_rel": round(w.t_end - t0, 6),
        "window_s": w.window_s,
        "complete": w.complete,
        "eeg_coverage": _num(w.eeg_coverage),
        "gaps": [[round(a, 6), round(b, 6)] for a, b in w.eeg_gaps],
        "quality": _num(q.quality),
        "blink_score": _num(q.blink_score),
        "blink": bool(q.blink),
        "muscle_score": _num(q.muscle_score),
        "muscle": bool(q.muscle),
        "bad_channels": [n for n, b in zip(w.ch_names, q.bad, strict=True) if b],
        "faa": _num(f.faa),
        "channels": channels,
    }
    if w.face is not None:
        rec["face_frames"] = int(w.face.shape[0])
        rec["face_coverage"] = _num(w.face_coverage)
        rec["face_gap"] = bool(w.face_gap)
    return rec


def window_records(
    eeg: Chunk, config: SignalsConfig | None = None, *, face: Chunk | None = None
) -> Iterator[dict]:
    """Per-window quality and band-power records of a recorded EEG stream.

    Parameters
    ----------
    eeg : Chunk
        The whole raw EEG stream (µV), e.g. from ``read_all(source)[name]``.
    config : SignalsConfig
        Default: :class:`SignalsConfig` defaults (50 Hz line, 4 s windows, 0.5 s hop).
    face : Chunk, optional
        The FaceFeatures stream, to add face coverage to each record.

    Yields
    ------
    dict
        One JSON-ready record per window, in time order (see the module docstring).
    """
    if eeg.info.is_string or eeg.sfreq <= 0:
        raise ConfigError(
            f"stream {eeg.name!r} (type {eeg.info.type!r}) is not a regular numeric stream; "
            "per-window quality needs an EEG stream"
        )
    if eeg.n_times == 0:
        return
    t0 = float(eeg.times[0])
    for result in iter_recording(eeg, face, config):
        yield result_record(result, t0)


def format_windows(records: Sequence[dict]) -> str:
    """A table of per-window records for people: one line per window.

    Columns: window end (s since the first sample), quality, blink and muscle scores (``*``
    when flagged), bad channels, and the relative band power averaged over good channels.
    """
    bands = list(records[0]["channels"][0]["relative_power"]) if records else []
    header = ["t_end s", "quality", "blink", "muscle", *bands, "bad channels"]
    rows = [header]

    def score(value: float | None, flagged: bool) -> str:
        return "-" if value is None else f"{value:.2f}{'*' if flagged else ''}"

    for r in records:
        rel = []
        for band in bands:
            v = [c["relative_power"][band] for c in r["channels"] if not c["bad"]]
            v = [a for a in v if a is not None]
            rel.append(f"{np.mean(v):.2f}" if v else "-")
        bad = ",".join(r["bad_channels"]) or "-"
        if not r["complete"]:
            bad = f"gap ({r['eeg_coverage']:.0%} present)"
        rows.append(
            [
                f"{r['t_rel']:.2f}",
                "-" if r["quality"] is None else f"{r['quality']:.2f}",
                score(r["blink_score"], r["blink"]),
                score(r["muscle_score"], r["muscle"]),
                *rel,
                bad,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def plot_signals(
    eeg: Chunk,
    records: Sequence[dict],
    out_png: str | Path,
    *,
    config: SignalsConfig | None = None,
    max_points: int = 20_000,
) -> Path:
    """Plot filtered signals with quality shading, the scores, and band power over time.

    Parameters
    ----------
    eeg : Chunk
        The raw EEG stream the records were computed from.
    records : sequence of dict
        From :func:`window_records`.
    out_png : str or Path
        Output image (PNG).
    config : SignalsConfig
        The configuration the records were computed with (for the filters).
    max_points : int
        Samples drawn per channel at most (the trace is decimated for drawing only).

    Returns
    -------
    Path
        ``out_png``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    out_png = Path(out_png)
    if not out_png.parent.is_dir():
        raise ConfigError(f"cannot write {out_png}: folder {out_png.parent} does not exist")
    config = config or SignalsConfig()
    records = list(records)
    if eeg.n_times == 0:
        raise ConfigError(f"stream {eeg.name!r} has no samples to plot")
    t0 = float(eeg.times[0])
    filtered = Preprocess(config.preprocess)(eeg)
    step = max(1, eeg.n_times // max_points)
    t = eeg.times[::step] - t0
    x = filtered.data[:, ::step]

    fig = Figure(figsize=(12, 9), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_sig, ax_q, ax_bp = fig.subplots(3, 1, sharex=True, height_ratios=[3, 1, 1.5])

    # Spacing from the typical channel, so one railed channel does not flatten the others.
    spread = float(np.nanmedian(np.nanpercentile(np.abs(x), 99, axis=-1))) if x.size else 1.0
    spread = spread if np.isfinite(spread) and spread > 0 else 1.0
    spacing = 2.5 * spread
    for i in range(len(eeg.ch_names)):
        ax_sig.plot(t, np.clip(x[i], -1.2 * spread, 1.2 * spread) - i * spacing, lw=0.4, color="k")
    ax_sig.set_yticks([-i * spacing for i in range(len(eeg.ch_names))], eeg.ch_names)
    ax_sig.set_title(
        f"{eeg.name}: filtered EEG (clipped at ±{1.2 * spread:.0f} µV), shaded by window "
        "quality (red = poor)"
    )

    t_rel = np.array([r["t_rel"] for r in records], dtype=float)
    hop = float(np.median(np.diff(t_rel))) if len(t_rel) > 1 else config.window.hop_s
    q = np.array([np.nan if r["quality"] is None else r["quality"] for r in records])
    for tr, qq in zip(t_rel, q, strict=True):
        bad = 1.0 if not np.isfinite(qq) else 1.0 - qq
        if bad > 0.05:
            ax_sig.axvspan(tr - hop, tr, color="tab:red", alpha=0.35 * bad, lw=0)

    def series(key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else r[key] for r in records], dtype=float)

    ax_q.plot(t_rel, q, label="quality", color="k")
    ax_q.plot(t_rel, series("blink_score"), label="blink score", color="tab:blue")
    ax_q.plot(t_rel, series("muscle_score"), label="muscle score", color="tab:orange")
    ax_q.axhline(1.0, color="grey", lw=0.5, ls="--")
    ax_q.set_ylabel("score")
    ax_q.legend(loc="upper right", fontsize="small", ncol=3)

    bands = list(records[0]["channels"][0]["relative_power"]) if records else []
    for band in bands:
        vals = []
        for r in records:
            v = [c["relative_power"][band] for c in r["channels"] if not c["bad"]]
            v = [a for a in v if a is not None]
            vals.append(np.mean(v) if v else np.nan)
        ax_bp.plot(t_rel, vals, label=band)
    ax_bp.set_ylabel("relative power\n(mean of good channels)")
    ax_bp.set_xlabel(f"seconds since the first sample (window end; {hop:g} s hop)")
    if bands:
        ax_bp.legend(loc="upper right", fontsize="small", ncol=len(bands))
    fig.savefig(out_png, dpi=100)
    logger.info("wrote %s", out_png)
    return out_png
