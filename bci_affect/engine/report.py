"""Summary of a run's predictions, and a report (PNG or self-contained HTML).

Both read prediction records as dictionaries (:meth:`Prediction.to_dict`, or the lines of a
predictions JSON-lines file), so a report can be drawn during a run, after it, or from a file
written days before.

The report shows, per session: the fused class probabilities over time (stacked) with the
decision, the uncertainty (fused, face teacher, EEG student) and the teacher-student
disagreement, which modality was available and used in every window (with the EEG quality
flags), and a histogram of the latency per window.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bci_affect.core.errors import ConfigError
from bci_affect.engine.prediction import LATENCY_STAGES, Prediction

logger = logging.getLogger(__name__)

__all__ = [
    "REPORT_FORMATS",
    "report_path",
    "save_report",
    "PredictionLog",
    "format_summary",
    "summarize",
    "trials_from_markers",
    "write_report",
]

#: File extensions :func:`write_report` writes.
REPORT_FORMATS = (".png", ".html")


class PredictionLog:
    """A sink that keeps the last ``max_records`` predictions as records (for the report).

    The JSON-lines file keeps everything; this bounded copy keeps memory flat in sessions of
    any length (200,000 windows are about 28 hours at a 0.5 s hop).
    """

    def __init__(self, max_records: int = 200_000) -> None:
        if max_records < 1:
            raise ConfigError(f"max_records must be >= 1, got {max_records}")
        self.records: deque[dict] = deque(maxlen=max_records)
        self.n_seen = 0

    def __call__(self, prediction: Prediction) -> None:
        self.add_record(prediction.to_dict())

    def add_record(self, record: dict) -> None:
        """Keep one record (:meth:`Prediction.to_dict`)."""
        self.records.append(record)
        self.n_seen += 1

    def __len__(self) -> int:
        return len(self.records)


def trials_from_markers(markers: Iterable[tuple[float, str]]) -> list[tuple[float, float, str]]:
    """Trial spans ``(start, end, label)`` from session markers (JSON strings with their LSL
    times): ``trial_start`` / ``trial_end`` with the trial number, and the trial's ``rating``
    (``valence``, ``arousal``) as the label, e.g. ``"trial 3: V7 A3"``. Other strings are
    ignored; a trial without an end ends at its last marker."""
    import json  # noqa: PLC0415

    starts: dict[object, float] = {}
    ends: dict[object, float] = {}
    labels: dict[object, str] = {}
    for t, text in markers:
        try:
            body = json.loads(text)
        except (TypeError, ValueError):
            continue
        if not isinstance(body, dict):
            continue
        trial, event = body.get("trial"), body.get("event")
        if event == "trial_start":
            starts[trial] = float(t)
        elif event == "trial_end":
            ends[trial] = float(t)
        elif event == "rating":
            v, a = body.get("valence"), body.get("arousal")
            labels[trial] = " ".join(
                f"{k}{x:g}" for k, x in (("V", v), ("A", a)) if isinstance(x, int | float)
            )
            ends.setdefault(trial, float(t))
    spans = []
    for trial, start in starts.items():
        end = ends.get(trial, start)
        label = f"trial {trial}" + (f": {labels[trial]}" if labels.get(trial) else "")
        spans.append((start, max(end, start), label))
    return sorted(spans)


def _by_session(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(str(r.get("session", "")), []).append(r)
    for recs in out.values():
        recs.sort(key=lambda r: r["t_window_end"])
    return out


def _arr(values: Iterable[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _pct(x: np.ndarray, q: float) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else None


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-session summary of prediction records.

    Returns
    -------
    dict
        ``{"sessions": {name: {...}}, "n_predictions": N}``; each session holds
        ``n_predictions``, ``span_s`` (first to last window end), ``classes``,
        ``predicted_counts``, ``mean_probs``, ``uncertainty`` / ``uncertainty_teacher`` /
        ``uncertainty_student`` / ``disagreement`` (mean and p50, p90), the fraction of windows
        with ``face_available``, ``eeg_available``, ``face_used``, ``eeg_used``, ``blink``,
        ``muscle``, ``mean_set_size`` (``None`` without conformal sets), ``n_skipped``,
        ``latency_ms`` (p50, p99, max per stage), ``lag_ms`` (p50, p99; live only) and
        ``models``.
    """
    sessions = {}
    total = 0
    for name, recs in _by_session(records).items():
        total += len(recs)
        classes = list(recs[0]["classes"])
        probs = np.array([[r["probs"].get(c) or np.nan for c in classes] for r in recs], float)
        pred = [r.get("predicted") for r in recs]
        t = _arr(r["t_window_end"] for r in recs)

        def stat(key: str, recs=recs) -> dict[str, float | None]:
            x = _arr(r.get(key) for r in recs)
            return {"mean": _mean(x), "p50": _pct(x, 50), "p90": _pct(x, 90)}

        def frac(group: str, key: str, recs=recs) -> float | None:
            x = _arr(r.get(group, {}).get(key) for r in recs)
            return _mean(x)

        sets = [r.get("conformal_set") for r in recs]
        sizes = np.array([len(s) for s in sets if s is not None], float)
        latency = {}
        for stage in LATENCY_STAGES:
            x = _arr(r.get("latency_ms", {}).get(stage) for r in recs)
            latency[stage] = {
                "p50": _pct(x, 50),
                "p99": _pct(x, 99),
                "max": float(np.nanmax(x)) if np.isfinite(x).any() else None,
            }
        lag = _arr(r.get("lag_ms") for r in recs)
        sessions[name] = {
            "n_predictions": len(recs),
            "t_first": float(t[0]),
            "t_last": float(t[-1]),
            "span_s": float(t[-1] - t[0]),
            "classes": classes,
            "predicted_counts": {c: pred.count(c) for c in classes},
            "mean_probs": dict(
                zip(classes, (_mean(probs[:, k]) for k in range(len(classes))), strict=True)
            ),
            "uncertainty": stat("uncertainty"),
            "uncertainty_teacher": stat("uncertainty_teacher"),
            "uncertainty_student": stat("uncertainty_student"),
            "disagreement": stat("disagreement"),
            "face_available": frac("modalities", "face_available"),
            "eeg_available": frac("modalities", "eeg_available"),
            "face_used": frac("modalities", "face_used"),
            "eeg_used": frac("modalities", "eeg_used"),
            "blink": frac("quality", "blink"),
            "muscle": frac("quality", "muscle"),
            "mean_set_size": float(sizes.mean()) if sizes.size else None,
            "n_skipped": int(sum(int(r.get("n_skipped") or 0) for r in recs)),
            "latency_ms": latency,
            "lag_ms": {"p50": _pct(lag, 50), "p99": _pct(lag, 99)},
            "models": sorted({str(r.get("model", "")) for r in recs}),
        }
    return {"n_predictions": total, "sessions": sessions}


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a few lines of text for the terminal."""
    lines = []
    for name, s in summary["sessions"].items():
        n = s["n_predictions"]
        lines.append(
            f"session {name!r}: {n} predictions over {s['span_s']:.1f} s; model: "
            + ", ".join(s["models"])
        )
        counts = ", ".join(
            f"{c} {k} ({100 * k / n:.0f} %)" for c, k in s["predicted_counts"].items()
        )
        lines.append(f"  predicted: {counts}")
        u, ut, us, d = (
            s["uncertainty"],
            s["uncertainty_teacher"],
            s["uncertainty_student"],
            s["disagreement"],
        )
        lines.append(
            f"  uncertainty mean {_fmt(u['mean'])} (face {_fmt(ut['mean'])}, EEG "
            f"{_fmt(us['mean'])}); teacher-student disagreement mean {_fmt(d['mean'])} nats"
        )

        def pc(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.0f} %"

        lines.append(
            f"  face available {pc(s['face_available'])}, used {pc(s['face_used'])}; EEG "
            f"available {pc(s['eeg_available'])}, used {pc(s['eeg_used'])}; blink "
            f"{pc(s['blink'])}, muscle {pc(s['muscle'])} of windows"
        )
        if s["mean_set_size"] is not None:
            lines.append(f"  conformal sets: mean size {s['mean_set_size']:.2f}")
        lat = s["latency_ms"]
        stages = ", ".join(
            f"{st} {_fmt(lat[st]['p50'], '.2f')}/{_fmt(lat[st]['p99'], '.2f')}"
            for st in LATENCY_STAGES
        )
        lines.append(f"  latency ms p50/p99: {stages}")
        if s["lag_ms"]["p50"] is not None and s["lag_ms"]["p50"] >= 0:  # < 0: a sped-up replay
            lines.append(
                f"  lag behind the window end (LSL clock) ms p50/p99: "
                f"{_fmt(s['lag_ms']['p50'], '.1f')}/{_fmt(s['lag_ms']['p99'], '.1f')}"
            )
        lines.append(f"  windows skipped (model behind): {s['n_skipped']}")
    if not lines:
        lines.append("no predictions")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# figures


def _session_axes(
    fig,
    gs,
    col: int,
    recs: Sequence[Mapping[str, Any]],
    name: str,
    trials: Sequence[tuple[float, float, str]] = (),
) -> None:
    from matplotlib.colors import ListedColormap  # noqa: PLC0415

    classes = list(recs[0]["classes"])
    t = _arr(r["t_window_end"] for r in recs)
    x = t - t[0]
    probs = np.array([[r["probs"].get(c) or 0.0 for c in classes] for r in recs], float)

    ax = fig.add_subplot(gs[0, col])
    ax.stackplot(x, probs.T, labels=classes, alpha=0.85, step="post")
    ax.set_ylim(0, 1)
    ax.set_xlim(x[0], max(x[-1], x[0] + 1e-6))
    ax.set_ylabel("fused probability")
    ax.set_title(f"{name}: predictions ({len(recs)} windows)")
    ax.legend(loc="upper left", ncol=len(classes), fontsize=7, frameon=False)
    for start, end, label in trials:
        if end < t[0] - 1 or start > t[-1] + 1:
            continue
        ax.axvspan(start - t[0], end - t[0], ymin=0.0, ymax=0.04, color="k", alpha=0.6)
        ax.text(start - t[0], 0.05, label, fontsize=7, va="bottom", color="k")

    ax = fig.add_subplot(gs[1, col], sharex=ax)
    for key, label, style in (
        ("uncertainty", "fused", "-"),
        ("uncertainty_teacher", "face", "--"),
        ("uncertainty_student", "EEG", ":"),
    ):
        ax.plot(x, _arr(r.get(key) for r in recs), style, label=f"uncertainty ({label})", lw=1.2)
    ax.plot(
        x,
        _arr(r.get("disagreement") for r in recs),
        "-",
        color="k",
        alpha=0.6,
        lw=1,
        label="disagreement (nats)",
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("uncertainty")
    ax.legend(loc="upper left", ncol=2, fontsize=7, frameon=False)

    ax = fig.add_subplot(gs[2, col], sharex=ax)
    rows = [
        ("face available", [r.get("modalities", {}).get("face_available") for r in recs]),
        ("face used", [r.get("modalities", {}).get("face_used") for r in recs]),
        ("EEG available", [r.get("modalities", {}).get("eeg_available") for r in recs]),
        ("EEG used", [r.get("modalities", {}).get("eeg_used") for r in recs]),
        ("blink", [r.get("quality", {}).get("blink") for r in recs]),
        ("muscle", [r.get("quality", {}).get("muscle") for r in recs]),
    ]
    grid = np.array([_arr(v) for _, v in rows])
    hop = float(np.median(np.diff(x))) if x.size > 1 else 1.0
    ax.imshow(
        np.nan_to_num(grid, nan=0.5),
        aspect="auto",
        interpolation="nearest",
        cmap=ListedColormap(["#eeeeee", "#bbbbbb", "#2a7ab9"]),
        vmin=0,
        vmax=1,
        extent=(x[0] - hop / 2, x[-1] + hop / 2, len(rows) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(rows)), [r for r, _ in rows], fontsize=7)
    q = _arr(r.get("quality", {}).get("eeg_quality") for r in recs)
    ax2 = ax.twinx()
    ax2.plot(x, q, color="#d95f02", lw=1)
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("EEG quality", color="#d95f02", fontsize=8)
    ax.set_xlabel("seconds since the first window end")

    ax = fig.add_subplot(gs[3, col])
    total = _arr(r.get("latency_ms", {}).get("total") for r in recs)
    model = _arr(r.get("latency_ms", {}).get("model") for r in recs)
    fin = total[np.isfinite(total)]
    if fin.size:
        hi = max(float(np.percentile(fin, 99.5)) * 1.2, 1e-3)
        bins = np.linspace(0, hi, 40)
        ax.hist(np.clip(fin, 0, hi), bins=bins, alpha=0.7, label="total")
        ax.hist(np.clip(model[np.isfinite(model)], 0, hi), bins=bins, alpha=0.6, label="model")
        for p, ls in ((50, "--"), (99, ":")):
            v = float(np.percentile(fin, p))
            ax.axvline(v, color="k", ls=ls, lw=1, label=f"p{p} total {v:.2f} ms")
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel("latency per window (ms): chunk arrival to prediction")
    ax.set_ylabel("windows")


def _figure(records: Sequence[Mapping[str, Any]], trials=(), max_sessions: int = 4):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sessions = _by_session(records)
    names = list(sessions)[:max_sessions]
    if len(sessions) > max_sessions:
        logger.warning("the report draws the first %d of %d sessions", max_sessions, len(sessions))
    fig = plt.figure(figsize=(7.5 * len(names), 11), layout="constrained")
    gs = fig.add_gridspec(4, len(names), height_ratios=[1.2, 1.0, 0.9, 0.9])
    for col, name in enumerate(names):
        _session_axes(fig, gs, col, sessions[name], name, trials)
    return fig


def write_report(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "bci-affect predictions",
    summary: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    trials: Sequence[tuple[float, float, str]] = (),
) -> Path:
    """Draw the report of ``records`` to ``path`` (``.png`` or ``.html``).

    Parameters
    ----------
    records : iterable of dict
        Prediction records (:meth:`Prediction.to_dict` or lines of a predictions file).
    path : path-like
        ``.png``: the figure; ``.html``: one self-contained page with the figure and the
        summary tables.
    title : str
    summary : dict, optional
        :func:`summarize` of the records (computed when not given).
    notes : sequence of str
        Extra lines for the HTML page (e.g. the command and the recording).
    trials : sequence of (start, end, label)
        Trial spans to mark on the time axis (:func:`trials_from_markers`), LSL clock.

    Raises
    ------
    ConfigError
        Unknown extension, no records, or the file cannot be written.
    """
    path = report_path(path)
    records = list(records)
    if not records:
        raise ConfigError(f"no predictions to draw into {path}: no window was scored")
    summary = summary or summarize(records)
    fig = _figure(records, trials)
    fig.suptitle(title)
    return save_report(fig, path, lambda png: _html(title, summary, png, notes), dpi=110)


def report_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, refused unless it ends in one of :data:`REPORT_FORMATS`."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in REPORT_FORMATS:
        raise ConfigError(
            f"report {path}: unknown format {ext or '(none)'!r}; use one of "
            f"{', '.join(REPORT_FORMATS)}"
        )
    return path


def save_report(fig, path: Path, page, *, dpi: int = 100) -> Path:
    """Write a matplotlib figure as ``path``: a ``.png``, or an ``.html`` page made by
    ``page(png_bytes) -> str`` (the figure embedded). The figure is closed.

    Raises
    ------
    ConfigError
        The file cannot be written.
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            fig.savefig(path, dpi=dpi)
        else:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi)
            path.write_text(page(buf.getvalue()), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path


def html_head(title: str) -> str:
    """The opening of a self-contained report page: head, style and the ``<h1>`` title."""
    esc = html.escape(title)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,"
        "th:first-child{text-align:left}img{max-width:100%}pre{background:#f6f6f6;"
        f"padding:1em}}</style></head><body><h1>{esc}</h1>"
    )


def _html(title: str, summary: Mapping[str, Any], png: bytes, notes: Sequence[str]) -> str:
    esc = html.escape
    parts = [html_head(title)]
    for line in notes:
        parts.append(f"<p>{esc(line)}</p>")
    for name, s in summary["sessions"].items():
        n = s["n_predictions"]
        parts.append(f"<h2>session {esc(name)}</h2>")
        parts.append(
            f"<p>{n} predictions over {s['span_s']:.1f} s; model: {esc(', '.join(s['models']))}; "
            f"windows skipped: {s['n_skipped']}</p>"
        )
        parts.append("<table><tr><th>class</th><th>predicted</th><th>mean probability</th></tr>")
        for c in s["classes"]:
            k = s["predicted_counts"][c]
            parts.append(
                f"<tr><td>{esc(c)}</td><td>{k} ({100 * k / n:.0f} %)</td>"
                f"<td>{_fmt(s['mean_probs'][c])}</td></tr>"
            )
        parts.append(
            "</table><table><tr><th>measure</th><th>mean</th><th>p50</th><th>p90</th></tr>"
        )
        for key in ("uncertainty", "uncertainty_teacher", "uncertainty_student", "disagreement"):
            v = s[key]
            parts.append(
                f"<tr><td>{key}</td><td>{_fmt(v['mean'])}</td><td>{_fmt(v['p50'])}</td>"
                f"<td>{_fmt(v['p90'])}</td></tr>"
            )
        parts.append("</table><table><tr><th>fraction of windows</th><th></th></tr>")
        for key in ("face_available", "face_used", "eeg_available", "eeg_used", "blink", "muscle"):
            v = s[key]
            parts.append(
                f"<tr><td>{key}</td><td>{_fmt(None if v is None else 100 * v, '.1f')} %</td></tr>"
            )
        parts.append(
            "</table><table><tr><th>latency (ms)</th><th>p50</th><th>p99</th><th>max</th></tr>"
        )
        for st, v in s["latency_ms"].items():
            parts.append(
                f"<tr><td>{st}</td><td>{_fmt(v['p50'], '.2f')}</td><td>{_fmt(v['p99'], '.2f')}</td>"
                f"<td>{_fmt(v['max'], '.2f')}</td></tr>"
            )
        parts.append("</table>")
    b64 = base64.b64encode(png).decode("ascii")
    alt = "predictions, uncertainty, modalities, latency"
    parts.append(f"<img alt='{alt}' src='data:image/png;base64,{b64}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
