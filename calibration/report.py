"""What a calibration session achieved: a summary (dict and text) and a report (PNG or HTML).

Everything is read from the label store (:class:`calibration.store.LabelStore`), so a report
can be drawn during a session, after it or after a crash:

- labels collected (answered, skipped, expired, open; the session's ``budget`` when its
  configuration has one) and the mean response time;
- accuracy on each new answer *before* the update that used it: the prediction stored with
  the query (argmax of the fused, teacher and student probabilities) against the class of the
  answer under the session's label scheme, per answer and as running accuracy, beside chance
  (``1/K``) and the majority-class-so-far baseline (predict the most frequent class among the
  earlier answers of the session; undefined for the first answer);
- uncertainty over time, from the session's prediction records when given, with the queried
  spans marked;
- the subject's label-efficiency curve: for each model version, the number of labels it was
  trained with against its accuracy on the answers it predicted before they were used.
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.store import LabelledQuery, LabelStore

__all__ = [
    "HEADS",
    "answer_label",
    "format_session_summary",
    "majority_so_far",
    "predicted_class",
    "session_summary",
    "write_session_report",
]

#: The models whose stored predictions are scored, and the keys each may be stored under in a
#: query's ``prediction`` (``Prediction.to_dict`` naming first).
HEADS: dict[str, tuple[str, ...]] = {
    "fused": ("probs", "fused"),
    "teacher": ("probs_teacher", "teacher"),
    "student": ("probs_student", "student"),
}

_STATUS_COLOURS = {
    "answered": "tab:green",
    "skipped": "0.6",
    "expired": "tab:orange",
    "open": "tab:blue",
}


# --------------------------------------------------------------------------------------------
# Maths
# --------------------------------------------------------------------------------------------


def predicted_class(
    prediction: Mapping[str, Any], head: str, class_names: Sequence[str]
) -> int | None:
    """The argmax class index of one model's probabilities in a stored query prediction.

    Parameters
    ----------
    prediction : dict
        A query's ``prediction``: per model (see :data:`HEADS`) a list of ``K`` probabilities
        in class-index order, or a ``{class_name: p}`` dict, or ``None``.
    head : {"fused", "teacher", "student"}
    class_names : sequence of str, length K

    Returns
    -------
    int or None
        ``None`` when the model's probabilities are missing, of the wrong length or not
        finite. Ties go to the lowest index.
    """
    probs = None
    for key in HEADS[head]:
        if prediction.get(key) is not None:
            probs = prediction[key]
            break
    if probs is None:
        return None
    if isinstance(probs, Mapping):
        probs = [probs.get(c) for c in class_names]
    try:
        p = np.array([np.nan if v is None else float(v) for v in probs], dtype=float)
    except (TypeError, ValueError):
        return None
    if p.shape != (len(class_names),) or not np.all(np.isfinite(p)):
        return None
    return int(np.argmax(p))


def answer_label(valence: int, arousal: int, scheme: str) -> int:
    """The class index of a SAM rating pair (1-9) under a label scheme (``quadrant``,
    ``valence``, ``arousal``; see :func:`bci_affect.models.teacher.rating_to_label`)."""
    from bci_affect.models.teacher import rating_to_label  # noqa: PLC0415 (imports torch)

    return rating_to_label(valence, arousal, scheme=scheme)


def majority_so_far(labels: Sequence[int], n_classes: int) -> list[int | None]:
    """For each position ``i``, the most frequent class among ``labels[:i]`` (ties: lowest
    index); ``None`` at position 0."""
    counts = np.zeros(n_classes, dtype=int)
    out: list[int | None] = []
    for y in labels:
        out.append(int(np.argmax(counts)) if counts.sum() else None)
        counts[y] += 1
    return out


def _running_accuracy(correct: Sequence[bool | None]) -> list[float | None]:
    """Accuracy over the scored entries of ``correct[: i + 1]`` for each ``i`` (``None``
    entries are not scored)."""
    out: list[float | None] = []
    n = k = 0
    for c in correct:
        if c is not None:
            n += 1
            k += int(c)
        out.append(k / n if n else None)
    return out


def _score(correct: Sequence[bool | None]) -> dict[str, Any]:
    scored = [c for c in correct if c is not None]
    n, k = len(scored), int(sum(scored))
    return {"n": n, "correct": k, "accuracy": k / n if n else None}


def _uncertainty_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    u = np.array([_num(r.get("uncertainty")) for r in records], dtype=float)
    t = np.array([_num(r.get("t_window_end")) for r in records], dtype=float)
    ok = np.isfinite(u)
    by_model: dict[str, dict[str, Any]] = {}
    for name in sorted({str(r.get("model", "")) for r in records}):
        sel = ok & np.array([str(r.get("model", "")) == name for r in records], dtype=bool)
        by_model[name] = {
            "n": int(sel.sum()),
            "mean": float(u[sel].mean()) if sel.any() else None,
        }
    return {
        "n_predictions": len(records),
        "n": int(ok.sum()),
        "mean": float(u[ok].mean()) if ok.any() else None,
        "t_first": float(np.nanmin(t)) if np.isfinite(t).any() else None,
        "t_last": float(np.nanmax(t)) if np.isfinite(t).any() else None,
        "by_model": by_model,
    }


def _num(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _scored_answers(labelled: Sequence[LabelledQuery]) -> list[dict[str, Any]]:
    """Per answer: its class and each model's predicted class and correctness."""
    out = []
    for lq in labelled:
        q, a = lq.query, lq.answer
        label = answer_label(a.valence, a.arousal, lq.label_scheme)
        pred = {h: predicted_class(q.prediction, h, lq.class_names) for h in HEADS}
        out.append(
            {
                "query": q.id,
                "session": q.session,
                "number": q.number,
                "t_start": q.t_start,
                "t_end": q.t_end,
                "valence": a.valence,
                "arousal": a.arousal,
                "label": label,
                "label_name": lq.class_names[label],
                "model_version": q.model_version,
                "response_s": a.response_s,
                "predicted": pred,
                "correct": {h: None if p is None else p == label for h, p in pred.items()},
            }
        )
    return out


def _efficiency(store: LabelStore, subject: str) -> list[dict[str, Any]]:
    answers = _scored_answers(store.answered(subject=subject))
    versions = {m.version: m.n_labels for m in store.model_versions(subject)}
    for a in answers:
        versions.setdefault(a["model_version"], None)
    out = []
    for v in sorted(versions):
        mine = [a["correct"]["fused"] for a in answers if a["model_version"] == v]
        s = _score(mine)
        out.append(
            {
                "version": v,
                "n_labels": versions[v],
                "n_answers": len(mine),
                "n_scored": s["n"],
                "n_correct": s["correct"],
                "accuracy": s["accuracy"],
            }
        )
    return out


def session_summary(
    store: LabelStore,
    session_id: int,
    *,
    predictions: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Summary of one calibration session (JSON-able).

    Parameters
    ----------
    store : LabelStore
    session_id : int
    predictions : iterable of dict, optional
        The session's prediction records (``Prediction.to_dict``, or the lines of its
        predictions file) for the uncertainty summary.

    Returns
    -------
    dict
        ``session``, ``name``, ``subject``, ``status``, ``label_scheme``, ``class_names``,
        ``n_classes``, ``started_wall``, ``ended_wall``, ``duration_s`` (``None`` while
        running), ``budget`` (from the session config, or ``None``), ``counts`` (queries by
        status and ``total``), ``mean_response_s`` (over answered and skipped queries that
        were shown), ``label_counts`` (answers per class), ``answers`` (per answer: ratings,
        ``label``, ``predicted`` and ``correct`` per model), ``accuracy`` (per model: ``n``
        scored, ``correct``, ``accuracy``), ``running_accuracy`` (per model, one value per
        answer), ``chance`` (``1/K``), ``majority_baseline`` (``n``, ``correct``,
        ``accuracy`` over answers 2, 3, ...), ``running_majority``, ``queries`` (every query's
        span, status, score), ``efficiency`` (per model version of the subject: ``n_labels``,
        ``n_answers``, ``n_scored``, ``n_correct``, ``accuracy``) and ``uncertainty``
        (``None`` without predictions; else ``n``, ``mean``, ``t_first``, ``t_last``,
        ``by_model``).
    """
    s = store.session(session_id)
    k = len(s.class_names)
    counts = store.counts(session_id)
    budget = s.config.get("budget")
    replies = [a.response_s for a in store.answers(session_id) if a.response_s is not None]
    answers = _scored_answers(store.answered(session_id))
    labels = [a["label"] for a in answers]
    maj = majority_so_far(labels, k)
    maj_correct = [None if m is None else m == y for m, y in zip(maj, labels, strict=True)]
    for a, m in zip(answers, maj, strict=True):
        a["majority_so_far"] = m
    correct = {h: [a["correct"][h] for a in answers] for h in HEADS}
    queries = [
        {
            "number": q.number,
            "t_start": q.t_start,
            "t_end": q.t_end,
            "status": q.status,
            "score": q.score,
            "method": q.method,
            "model_version": q.model_version,
        }
        for q in store.queries(session_id)
    ]
    records = None if predictions is None else list(predictions)
    return {
        "session": s.id,
        "name": s.name,
        "subject": s.subject,
        "status": s.status,
        "label_scheme": s.label_scheme,
        "class_names": list(s.class_names),
        "n_classes": k,
        "started_wall": s.started_wall,
        "ended_wall": s.ended_wall,
        "duration_s": None if s.ended_wall is None else s.ended_wall - s.started_wall,
        "budget": None
        if isinstance(budget, bool) or not isinstance(budget, int | float)
        else int(budget),
        "counts": counts,
        "mean_response_s": float(np.mean(replies)) if replies else None,
        "label_counts": {c: labels.count(i) for i, c in enumerate(s.class_names)},
        "answers": answers,
        "accuracy": {h: _score(correct[h]) for h in HEADS},
        "running_accuracy": {h: _running_accuracy(correct[h]) for h in HEADS},
        "chance": 1.0 / k,
        "majority_baseline": _score(maj_correct),
        "running_majority": _running_accuracy(maj_correct),
        "queries": queries,
        "efficiency": _efficiency(store, s.subject),
        "uncertainty": None if records is None else _uncertainty_summary(records),
    }


def _pc(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f} %)" if n else "-"


def format_session_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a few lines of text for the terminal."""
    c = summary["counts"]
    budget = "" if summary["budget"] is None else f" of a budget of {summary['budget']}"
    resp = summary["mean_response_s"]
    lines = [
        f"session {summary['session']} {summary['name']!r} of {summary['subject']} "
        f"({summary['status']}, {summary['label_scheme']}): {c['answered']} answered, "
        f"{c['skipped']} skipped, {c['expired']} expired, {c['open']} open{budget}; "
        + ("no response time yet" if resp is None else f"mean response {resp:.1f} s")
    ]
    acc = summary["accuracy"]
    maj = summary["majority_baseline"]
    n = len(summary["answers"])
    if n:
        heads = ", ".join(f"{h} {_pc(acc[h]['correct'], acc[h]['n'])}" for h in HEADS)
        lines.append(
            f"accuracy before the update on {n} answers: {heads}; chance "
            f"{100 * summary['chance']:.0f} %, majority so far {_pc(maj['correct'], maj['n'])}"
        )
    else:
        lines.append("no answers yet: no accuracy")
    eff = [e for e in summary["efficiency"] if e["n_scored"]]
    if eff:
        lines.append(
            "label efficiency (version: labels -> accuracy before use): "
            + "; ".join(
                f"v{e['version']}: {'?' if e['n_labels'] is None else e['n_labels']} -> "
                f"{_pc(e['n_correct'], e['n_scored'])}"
                for e in eff
            )
        )
    u = summary["uncertainty"]
    if u is not None and u["mean"] is not None:
        lines.append(f"uncertainty: mean {u['mean']:.3f} over {u['n']} windows")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figure and files
# --------------------------------------------------------------------------------------------


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _strip_axes(ax, summary: Mapping[str, Any]) -> None:
    from matplotlib.colors import ListedColormap  # noqa: PLC0415

    answers = summary["answers"]
    ax.set_title("each answer, predicted before the update that used it")
    if not answers:
        _empty(ax, "no answers yet")
        return
    rows = [*HEADS, "majority so far"]
    grid = np.full((len(rows), len(answers)), np.nan)
    for j, a in enumerate(answers):
        for i, h in enumerate(HEADS):
            if a["correct"][h] is not None:
                grid[i, j] = float(a["correct"][h])
        m = a["majority_so_far"]
        if m is not None:
            grid[len(HEADS), j] = float(m == a["label"])
    cmap = ListedColormap(["tab:red", "tab:green"]).with_extremes(bad="0.9")
    ax.imshow(
        np.ma.masked_invalid(grid),
        aspect="auto",
        cmap=cmap,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    if len(answers) <= 60:  # cell borders
        ax.set_xticks(np.arange(len(answers) + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="w", lw=1.5)
        ax.tick_params(which="minor", length=0)
    ax.set_yticks(range(len(rows)), rows)
    step = max(1, len(answers) // 20)
    ticks = list(range(0, len(answers), step))
    ax.set_xticks(ticks, [f"{answers[j]['number']}\n{answers[j]['label_name']}" for j in ticks])
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("query number and answered class (green: right, red: wrong, grey: no input)")


def _running_axes(ax, summary: Mapping[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    answers = summary["answers"]
    ax.set_title("running accuracy on new answers")
    if not answers:
        _empty(ax, "no answers yet")
        return
    x = np.arange(1, len(answers) + 1)
    for h, colour in zip(HEADS, ("k", "tab:purple", "tab:cyan"), strict=True):
        y = [np.nan if v is None else v for v in summary["running_accuracy"][h]]
        ax.plot(x, y, marker="o", ms=3, color=colour, label=h)
    y = [np.nan if v is None else v for v in summary["running_majority"]]
    ax.plot(x, y, ls="--", color="tab:brown", label="majority so far")
    ax.axhline(summary["chance"], color="0.5", ls=":", label=f"chance {summary['chance']:.2f}")
    ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("answers")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, frameon=False, loc="lower right")


def _uncertainty_axes(ax, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]]):
    ax.set_title("uncertainty over time, queried spans shaded")
    queries = summary["queries"]
    t = np.array([_num(r.get("t_window_end")) for r in records], dtype=float)
    u = np.array([_num(r.get("uncertainty")) for r in records], dtype=float)
    starts = [q["t_start"] for q in queries] + [float(v) for v in t[np.isfinite(t)][:1]]
    if not starts:
        _empty(ax, "no predictions given and no queries yet")
        return
    t0 = min(starts)
    if records:
        order = np.argsort(t)
        ax.plot(t[order] - t0, u[order], color="k", lw=0.8, label="fused uncertainty")
        dis = np.array([_num(r.get("disagreement")) for r in records], dtype=float)
        if np.isfinite(dis).any():
            ax.plot(
                t[order] - t0,
                dis[order],
                color="tab:red",
                lw=0.6,
                alpha=0.6,
                label="teacher-student disagreement",
            )
    else:
        ax.text(0.5, 0.9, "no predictions given", ha="center", transform=ax.transAxes, color="0.4")
    seen = set()
    for q in queries:
        st = q["status"]
        ax.axvspan(
            q["t_start"] - t0,
            q["t_end"] - t0,
            color=_STATUS_COLOURS.get(st, "0.5"),
            alpha=0.3,
            lw=0,
            label=None if st in seen else f"query {st}",
        )
        seen.add(st)
    ax.set_xlabel("seconds from the session's first window (LSL clock)")
    ax.set_ylabel("uncertainty")
    ax.legend(fontsize=7, frameon=False, loc="upper right")


def _efficiency_axes(ax, summary: Mapping[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    ax.set_title(f"label efficiency of subject {summary['subject']}")
    eff = [e for e in summary["efficiency"] if e["n_scored"] and e["n_labels"] is not None]
    if not eff:
        _empty(ax, "no scored answers yet")
        return
    x = [e["n_labels"] for e in eff]
    y = [e["accuracy"] for e in eff]
    ax.plot(x, y, marker="o", color="k")
    for e in eff:
        ax.annotate(
            f"v{e['version']}: {e['n_correct']}/{e['n_scored']}",
            (e["n_labels"], e["accuracy"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=7,
        )
    ax.axhline(summary["chance"], color="0.5", ls=":", label="chance")
    ax.set_ylim(-0.03, 1.1)
    ax.margins(x=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labels the model version was trained with")
    ax.set_ylabel("accuracy on answers before their use")
    ax.legend(fontsize=7, frameon=False)


def _figure(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]]):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), layout="constrained")
    _strip_axes(axes[0, 0], summary)
    _running_axes(axes[0, 1], summary)
    _uncertainty_axes(axes[1, 0], summary, records)
    _efficiency_axes(axes[1, 1], summary)
    fig.suptitle(
        f"calibration session {summary['session']} {summary['name']!r}, "
        f"subject {summary['subject']} ({summary['label_scheme']})"
    )
    return fig


def write_session_report(
    store: LabelStore,
    session_id: int,
    path: str | os.PathLike,
    *,
    predictions: Iterable[Mapping[str, Any]] | None = None,
) -> Path:
    """Draw the report of a calibration session to ``path``.

    Parameters
    ----------
    store : LabelStore
    session_id : int
    path : path-like
        ``.png``: the figure; ``.html``: one self-contained page with the summary tables and
        the figure embedded as a base64 PNG.
    predictions : iterable of dict, optional
        The session's prediction records, for the uncertainty panel.

    Raises
    ------
    ConfigError
        Unknown extension or session, or the file cannot be written.
    """
    from bci_affect.engine.report import report_path, save_report  # noqa: PLC0415

    path = report_path(path)
    records = [] if predictions is None else list(predictions)
    summary = session_summary(
        store, session_id, predictions=None if predictions is None else records
    )
    fig = _figure(summary, records)
    return save_report(fig, path, lambda png: _html(summary, png), dpi=100)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(summary: Mapping[str, Any], png: bytes) -> str:
    from bci_affect.engine.report import html_head  # noqa: PLC0415

    esc = html.escape
    title = f"calibration session {summary['session']} {summary['name']} ({summary['subject']})"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary["started_wall"]))
    names = summary["class_names"]
    parts = [
        html_head(title),
        f"<p>started {esc(started)}; status {esc(summary['status'])}; label scheme "
        f"{esc(summary['label_scheme'])} ({esc(', '.join(names))})</p>",
        f"<pre>{esc(format_session_summary(summary))}</pre>",
    ]
    c = summary["counts"]
    parts.append("<h2>labels</h2>")
    parts.append(
        _table(
            ["answered", "skipped", "expired", "open", "budget", "mean response (s)"],
            [
                [
                    c["answered"],
                    c["skipped"],
                    c["expired"],
                    c["open"],
                    summary["budget"],
                    summary["mean_response_s"],
                ]
            ],
        )
    )
    parts.append("<h2>accuracy before the update that used each answer</h2>")
    acc = summary["accuracy"]
    maj = summary["majority_baseline"]
    rows = [[h, acc[h]["n"], acc[h]["correct"], acc[h]["accuracy"]] for h in HEADS]
    rows.append(["majority so far", maj["n"], maj["correct"], maj["accuracy"]])
    rows.append(["chance", None, None, summary["chance"]])
    parts.append(_table(["model", "scored", "right", "accuracy"], rows))
    if summary["answers"]:

        def name(i: int | None) -> str | None:
            return None if i is None else names[i]

        parts.append(
            _table(
                ["query", "valence", "arousal", "class", *HEADS, "model version"],
                [
                    [
                        a["number"],
                        a["valence"],
                        a["arousal"],
                        a["label_name"],
                        *(name(a["predicted"][h]) for h in HEADS),
                        a["model_version"],
                    ]
                    for a in summary["answers"]
                ],
            )
        )
    parts.append("<h2>label efficiency of the subject</h2>")
    parts.append(
        _table(
            ["version", "labels", "answers", "scored", "right", "accuracy"],
            [
                [
                    e["version"],
                    e["n_labels"],
                    e["n_answers"],
                    e["n_scored"],
                    e["n_correct"],
                    e["accuracy"],
                ]
                for e in summary["efficiency"]
            ],
        )
    )
    b64 = base64.b64encode(png).decode("ascii")
    alt = "per-answer accuracy, running accuracy, uncertainty, label efficiency"
    parts.append(f"<img alt='{alt}' src='data:image/png;base64,{b64}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
