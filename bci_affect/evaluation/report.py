"""Benchmark results as text, markdown and PNG plots, and the check of the evaluation targets.

:func:`format_text` gives the plain-text tables the command prints. :func:`write_report` saves
one run's results as ``<name>.json`` (plus its plots ``<name>-*.png``) in a report folder and
rebuilds the folder's ``README.md`` from every result there, so a report can be assembled from
several runs (each table made by its own command, which the report shows beside the table).
A hand-written ``discussion.md`` in the folder is included at the end, unchanged.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bci_affect.evaluation.experiments import ROWS

logger = logging.getLogger(__name__)

__all__ = [
    "check_targets",
    "jsonable",
    "format_text",
    "load_results",
    "render_markdown",
    "write_index",
    "write_report",
]

#: Row labels (also stored in each result as ``row_labels``).
_ROW_LABELS = ROWS

_POLICY_LABELS = {
    "random": "random",
    "entropy": "student entropy",
    "disagreement": "teacher–student disagreement",
    "consistency": "consistency-guided",
}

_TABLE_TITLES = {
    "main": "Main table: models and baselines",
    "ablation": "Ablation of the loss terms",
    "active-learning": "Active learning: accuracy against the label budget",
    "label-noise": "Label noise: wrong labels in the training trials",
    "missing-face": "Missing modality: no face in a fraction of the test windows",
    "corrupted-eeg": "Corrupted EEG in a fraction of the test windows",
    "muscle": "Muscle leakage: EMG-clean windows against all windows",
    "realism": "Realism check: EEG-only accuracy on binary labels",
}


# --------------------------------------------------------------------------------------------
# Number formatting
# --------------------------------------------------------------------------------------------


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _pct(summary: dict, metric: str = "accuracy", sd: bool = True) -> str:
    m = summary.get("mean", {}).get(metric)
    s = summary.get("sd", {}).get(metric)
    if not _finite(m):
        return "–"
    if sd and _finite(s):
        return f"{100 * m:.1f} ± {100 * s:.1f}"
    return f"{100 * m:.1f}"


def _num(summary: dict, metric: str, digits: int = 3, sd: bool = True) -> str:
    m = summary.get("mean", {}).get(metric)
    s = summary.get("sd", {}).get(metric)
    if not _finite(m):
        return "–"
    if sd and _finite(s):
        return f"{m:.{digits}f} ± {s:.{digits}f}"
    return f"{m:.{digits}f}"


def _pooled(summary: dict, metric: str, pct: bool = False, digits: int = 3) -> str:
    v = summary.get("pooled", {}).get(metric)
    if not _finite(v):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.{digits}f}"


def _label(row: str, result: dict | None = None) -> str:
    labels = (result or {}).get("row_labels") or _ROW_LABELS
    return labels.get(row, row)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Plain text (the command's output)
# --------------------------------------------------------------------------------------------


def format_text(result: dict) -> str:
    """The main table (and a line per other table) as plain text."""
    lines: list[str] = []
    data = result.get("data", {})
    cfg = result.get("config", {})
    lines.append(
        f"{cfg.get('protocol')} on {data.get('n_subjects')} subjects, {data.get('n_trials')} "
        f"trials, {data.get('n_windows')} windows; classes: "
        + ", ".join(f"{k} {v}" for k, v in data.get("class_counts", {}).items())
    )
    lines.append(
        f"folds {cfg.get('n_folds')}, seeds {list(cfg.get('seeds', []))}, epochs "
        f"{cfg.get('models', {}).get('epochs')}; mean ± sd over subjects"
    )
    tables = result.get("tables", {})
    main = tables.get("main")
    if main:
        head = (
            f"{'model':<32} {'accuracy %':>13} {'macro-F1 %':>13} {'ECE':>6} {'ECE cal':>7} "
            f"{'NLL':>6} {'cover %':>7} {'set':>5} {'AUROC':>6}"
        )
        lines += ["", head, "-" * len(head)]
        for row, s in main["rows"].items():
            lines.append(
                f"{_label(row, result):<32} {_pct(s):>13} {_pct(s, 'macro_f1'):>13} "
                f"{_num(s, 'ece_raw', 3, False):>6} {_num(s, 'ece', 3, False):>7} "
                f"{_num(s, 'nll', 3, False):>6} {_pct(s, 'coverage', False):>7} "
                f"{_num(s, 'set_size', 2, False):>5} {_num(s, 'auroc_error', 3, False):>6}"
            )
    for name in ("ablation", "label-noise", "missing-face", "corrupted-eeg"):
        t = tables.get(name)
        if not t:
            continue
        lines += ["", _TABLE_TITLES[name] + " (accuracy %, fused / EEG-only student / logistic)"]
        for variant, rows in t["variants"].items():
            cells = [
                f"{key} {_pct(rows[key], sd=False)}"
                for key in ("fused", "student_head", "eeg_student", "logistic", "teacher_only")
                if key in rows
            ]
            lines.append(f"  {variant:<20} " + ", ".join(cells))
    al = tables.get("active-learning")
    if al:
        lines += ["", _TABLE_TITLES["active-learning"]]
        for arm, policies in al["arms"].items():
            row = "fused" if arm == "model" else "eeg_student"
            for policy, per_budget in policies.items():
                cells = [
                    f"{float(b) * 100:.0f}%: {_pct(per_budget[b][row], sd=False)}"
                    for b in al["budgets"]
                    if b in per_budget and row in per_budget[b]
                ]
                lines.append(f"  {arm:<9} {policy:<13} " + "  ".join(cells))
    mus = tables.get("muscle")
    if mus:
        lines += ["", f"{_TABLE_TITLES['muscle']} ({100 * mus['share_clean']:.0f} % clean)"]
        for row, e in mus["rows"].items():
            lines.append(
                f"  {_label(row, result):<32} all {_pct(e['all'], sd=False):>6}  "
                f"clean {_pct(e['clean'], sd=False):>6}"
            )
    real = tables.get("realism")
    if real:
        lines += ["", _TABLE_TITLES["realism"]]
        for scheme, t in real.items():
            cells = [f"{k} {_pct(s)}" for k, s in t["rows"].items()]
            lines.append(f"  {scheme:<9} " + ", ".join(cells))
    if result.get("skipped"):
        lines += [""] + [f"skipped {k}: {v}" for k, v in result["skipped"].items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def _paired(a: dict, b: dict) -> tuple[float, float, int]:
    """Mean and standard error of the per-subject accuracy difference a - b."""
    pa, pb = a.get("per_subject", {}), b.get("per_subject", {})
    common = sorted(set(pa) & set(pb))
    d = np.array([_get(pa[s], "accuracy") - _get(pb[s], "accuracy") for s in common])
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan"), 0
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se, int(d.size)


def _get(d: dict, key: str) -> float:
    v = d.get(key)
    return float(v) if _finite(v) else float("nan")


def _acc(s: dict) -> float:
    return _get(s.get("mean", {}), "accuracy")


def _diff_text(d: float, se: float, n: int) -> str:
    if not _finite(d):
        return "n/a"
    se_txt = f" ± {100 * se:.1f} (SE, {n} subjects)" if _finite(se) else ""
    return f"{100 * d:+.1f}{se_txt} points"


def check_targets(results: Sequence[dict]) -> list[dict[str, Any]]:
    """The evaluation targets, checked on within-subject results of recorded sessions.

    Returns
    -------
    list of dict
        ``target``, ``value`` (text), ``met`` (True, False, or None when the table was not
        run), ``detail`` (the numbers behind the verdict), ``run`` (the result's name).
    """
    tables: dict[str, tuple[dict, str, float]] = {}
    for r in results:
        if r.get("config", {}).get("protocol") != "within-subject":
            continue
        if r.get("data", {}).get("source") != "sessions":
            continue
        for name, t in r.get("tables", {}).items():
            tables.setdefault(name, (t, r.get("meta", {}).get("name", ""), r["config"]["coverage"]))
    out: list[dict[str, Any]] = []

    def add(target: str, met: bool | None, value: str, detail: str, run: str) -> None:
        out.append({"target": target, "met": met, "value": value, "detail": detail, "run": run})

    t_al = "Consistency-guided active learning reaches full-supervision accuracy with ≤ 30 % of the labels"
    t_beat = "Consistency-guided beats random and entropy at every budget ≤ 50 %"
    if "active-learning" in tables:
        al, run, _ = tables["active-learning"]
        arm = al["arms"].get("model", {})
        cons = arm.get("consistency")
        if cons and "1" in cons:
            full = cons["1"]["fused"]
            budgets = [b for b in al["budgets"] if float(b) < 1.0]
            reached = [b for b in budgets if _acc(cons[b]["fused"]) >= _acc(full)]
            first = reached[0] if reached else None
            d30 = _paired(cons["0.3"]["fused"], full) if "0.3" in cons else (math.nan,) * 3
            others = []
            for other in ("random", "entropy", "disagreement"):
                if other in arm:
                    got = [
                        b
                        for b in budgets
                        if b in arm[other] and _acc(arm[other][b]["fused"]) >= _acc(full)
                    ]
                    others.append(
                        f"{other} {float(got[0]) * 100:.0f} %" if got else f"{other} never"
                    )
            add(
                t_al,
                first is not None and float(first) <= 0.3 + 1e-9,
                f"first reached at {float(first) * 100:.0f} %" if first else "never below 100 %",
                "fused accuracy at "
                + ", ".join(f"{float(b) * 100:.0f} %: {_pct(cons[b]['fused'])}" for b in budgets)
                + f"; full supervision {_pct(full)}; at 30 % − full: {_diff_text(*d30)}"
                + (
                    f"; the other policies first reach it at: {', '.join(others)}" if others else ""
                ),
                run,
            )
            wins, parts = [], []
            for b in [b for b in budgets if float(b) <= 0.5 + 1e-9]:
                for other in ("random", "entropy"):
                    if other not in arm or b not in arm[other]:
                        continue
                    d = _paired(cons[b]["fused"], arm[other][b]["fused"])
                    wins.append(_acc(cons[b]["fused"]) > _acc(arm[other][b]["fused"]))
                    parts.append(f"{float(b) * 100:.0f} % vs {other}: {_diff_text(*d)}")
            add(
                t_beat,
                bool(wins) and all(wins),
                f"{sum(wins)} of {len(wins)} comparisons won",
                "; ".join(parts),
                run,
            )
        else:
            add(t_al, None, "not run", "the consistency policy or the full budget is missing", run)
            add(t_beat, None, "not run", "", run)
    else:
        add(t_al, None, "not run", "no within-subject active-learning table", "")
        add(t_beat, None, "not run", "no within-subject active-learning table", "")

    for row, what in (("fused", "fused output"), ("student_head", "EEG student head")):
        t_abl = f"The full loss beats every single term (L_sim, L_unc, L_kd alone): {what}"
        if "ablation" not in tables:
            add(t_abl, None, "not run", "no within-subject ablation table", "")
            continue
        ab, run, _ = tables["ablation"]
        v = ab["variants"]
        full = v.get("full (all terms)", {}).get(row)
        singles = [k for k in ("+ L_sim", "+ L_unc", "+ L_kd") if k in v and row in v[k]]
        if not (full and singles):
            add(t_abl, None, "not run", "", run)
            continue
        wins = [_acc(full) > _acc(v[k][row]) for k in singles]
        detail = f"accuracy: full {_pct(full)}; " + "; ".join(
            f"{k} {_pct(v[k][row])} (full − it: {_diff_text(*_paired(full, v[k][row]))})"
            for k in singles
        )
        if "task only" in v and row in v["task only"]:
            detail += f"; task loss only {_pct(v['task only'][row])}"
        add(t_abl, all(wins), f"{sum(wins)} of {len(wins)} beaten", detail, run)

    t_ece = "ECE ≤ 0.05 after calibration (fused model)"
    t_cov = "Conformal coverage within ± 2 % of its target (fused model)"
    if "main" in tables:
        main, run, coverage = tables["main"]
        fused = main["rows"].get("fused")
        if fused:
            ece_p = _get(fused["pooled"], "ece")
            add(
                t_ece,
                _finite(ece_p) and ece_p <= 0.05,
                f"{ece_p:.3f} over all test windows",
                f"before calibration {_get(fused['pooled'], 'ece_raw'):.3f}; per "
                f"subject after calibration {_num(fused, 'ece')} (a subject has few test "
                "windows, and the ECE of few windows is biased upward)",
                run,
            )
            cov_p = _get(fused["pooled"], "coverage")
            add(
                t_cov,
                _finite(cov_p) and abs(cov_p - coverage) <= 0.02,
                f"{100 * cov_p:.1f} % for a {100 * coverage:.0f} % target",
                f"per subject {_pct(fused, 'coverage')} %; mean set size "
                f"{_num(fused, 'set_size', 2)}",
                run,
            )
        else:
            add(t_ece, None, "not run", "the main table has no face-teacher model", run)
            add(t_cov, None, "not run", "", run)
    else:
        add(t_ece, None, "not run", "no within-subject main table", "")
        add(t_cov, None, "not run", "no within-subject main table", "")

    t_real = "Realism: EEG-only within-subject accuracy about 55–75 % (not near 100 %)"
    if "realism" in tables:
        real, run, _ = tables["realism"]
        vals, parts = [], []
        for scheme, t in real.items():
            for row in ("logistic", "eeg_student"):
                if row in t["rows"]:
                    a = _acc(t["rows"][row])
                    vals.append(a)
                    rng = t["rows"][row].get("range")
                    rng_txt = f", subjects {100 * rng[0]:.0f}–{100 * rng[1]:.0f} %" if rng else ""
                    parts.append(f"{scheme} {_label(row)} {_pct(t['rows'][row])}{rng_txt}")
            if "majority" in t["rows"]:
                parts.append(f"{scheme} majority {_pct(t['rows']['majority'])}")
        met = bool(vals) and all(0.55 <= v <= 0.75 for v in vals)
        add(
            t_real,
            met,
            ", ".join(f"{100 * v:.1f} %" for v in vals),
            "; ".join(parts),
            run,
        )
    else:
        add(t_real, None, "not run", "no realism table", "")
    return out


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    _plt().close(fig)
    return path.name


def _headroom(ax: Any, factor: float = 1.45) -> None:
    """Room above the bars for the legend."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(0, hi * factor)


def _plot_al(result: dict, path: Path) -> str | None:
    al = result["tables"].get("active-learning")
    if not al or not al["arms"]:
        return None
    plt = _plt()
    arms = list(al["arms"])
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 3.0), squeeze=False)
    main_rows = result["tables"].get("main", {}).get("rows", {})
    for ax, arm in zip(axes[0], arms, strict=True):
        row = "fused" if arm == "model" else "eeg_student"
        for policy, per_budget in al["arms"][arm].items():
            bs = [b for b in al["budgets"] if b in per_budget]
            x = np.array([100 * float(b) for b in bs])
            y = np.array([100 * _acc(per_budget[b][row]) for b in bs])
            se = np.array(
                [
                    100
                    * _get(per_budget[b][row]["sd"], "accuracy")
                    / math.sqrt(max(per_budget[b][row].get("n_subjects", 1), 1))
                    for b in bs
                ]
            )
            (line,) = ax.plot(x, y, marker="o", ms=3, label=_POLICY_LABELS.get(policy, policy))
            if np.isfinite(se).all():
                ax.fill_between(x, y - se, y + se, color=line.get_color(), alpha=0.08, lw=0)
        k = len(result["data"].get("class_counts", {})) or 2
        ax.axhline(100 / k, color="grey", ls=":", lw=1, label="chance")
        if "majority" in main_rows:
            ax.axhline(
                100 * _acc(main_rows["majority"]), color="grey", ls="--", lw=1, label="majority"
            )
        ax.set_ylim(min(ax.get_ylim()[0], 100 / k - 3), ax.get_ylim()[1])
        ax.set_xlabel("labelled training windows (%)")
        ax.set_ylabel("accuracy (%), band: ± 1 SE")
        ax.set_title(
            "face-teacher / EEG-student (fused)" if arm == "model" else "EEG-only student",
            fontsize=9,
        )
        ax.legend(fontsize=6, loc="lower right")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _plot_variants(result: dict, table: str, path: Path, rows: Sequence[str]) -> str | None:
    t = result["tables"].get(table)
    if not t:
        return None
    plt = _plt()
    variants = list(t["variants"])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.75 * len(variants) + 2.0), 3.0))
    present = [r for r in rows if any(r in t["variants"][v] for v in variants)]
    width = 0.8 / max(len(present), 1)
    x = np.arange(len(variants))
    for j, row in enumerate(present):
        m = [
            100 * _acc(t["variants"][v][row]) if row in t["variants"][v] else np.nan
            for v in variants
        ]
        s = [
            100 * _get(t["variants"][v][row]["sd"], "accuracy")
            if row in t["variants"][v]
            else np.nan
            for v in variants
        ]
        ax.bar(
            x + (j - (len(present) - 1) / 2) * width,
            m,
            width,
            yerr=s,
            capsize=2,
            label=_label(row, result),
            error_kw={"lw": 0.6},
        )
    k = len(result["data"].get("class_counts", {})) or 2
    ax.axhline(100 / k, color="grey", ls=":", lw=1, label="chance")
    _headroom(ax)
    ax.set_xticks(x)
    ax.set_xticklabels(variants, fontsize=7, rotation=20 if len(variants) > 4 else 0)
    ax.set_ylabel("accuracy (%), mean ± sd")
    ax.set_title(_TABLE_TITLES[table], fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _plot_muscle(result: dict, path: Path) -> str | None:
    t = result["tables"].get("muscle")
    if not t:
        return None
    plt = _plt()
    rows = [r for r in t["rows"] if r != "chance"]
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    x = np.arange(len(rows))
    for j, part in enumerate(("all", "clean")):
        m = [100 * _acc(t["rows"][r][part]) for r in rows]
        ax.bar(x + (j - 0.5) * 0.38, m, 0.38, label=f"{part} windows")
    k = len(result["data"].get("class_counts", {})) or 2
    ax.axhline(100 / k, color="grey", ls=":", lw=1, label="chance")
    _headroom(ax)
    ax.set_xticks(x)
    ax.set_xticklabels([_label(r, result) for r in rows], fontsize=6, rotation=25, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(_TABLE_TITLES["muscle"], fontsize=9)
    ax.legend(fontsize=6, ncol=3, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _make_plots(result: dict, out_dir: Path, name: str) -> dict[str, str]:
    plots: dict[str, str] = {}
    specs = [
        ("active-learning", lambda p: _plot_al(result, p)),
        (
            "ablation",
            lambda p: _plot_variants(
                result, "ablation", p, ("fused", "student_head", "student_via_teacher_head")
            ),
        ),
        (
            "label-noise",
            lambda p: _plot_variants(
                result, "label-noise", p, ("fused", "teacher_head", "eeg_student", "logistic")
            ),
        ),
        (
            "missing-face",
            lambda p: _plot_variants(
                result, "missing-face", p, ("fused", "teacher_only", "eeg_student")
            ),
        ),
        (
            "corrupted-eeg",
            lambda p: _plot_variants(
                result, "corrupted-eeg", p, ("fused", "student_head", "eeg_student", "logistic")
            ),
        ),
        ("muscle", lambda p: _plot_muscle(result, p)),
    ]
    for table, fn in specs:
        if table in result.get("tables", {}):
            got = fn(out_dir / f"{name}-{table}.png")
            if got:
                plots[table] = got
    return plots


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _main_md(t: dict, result: dict) -> str:
    head = [
        "classifier",
        "accuracy %",
        "macro-F1 %",
        "ECE",
        "ECE calibrated",
        "NLL calibrated",
        "coverage %",
        "set size",
        "AUROC (errors)",
        "ECE cal. / coverage % (pooled)",
    ]
    rows = []
    for row, s in t["rows"].items():
        rows.append(
            [
                _label(row, result),
                _pct(s),
                _pct(s, "macro_f1"),
                _num(s, "ece_raw", 3, False),
                _num(s, "ece"),
                _num(s, "nll", 3, False),
                _pct(s, "coverage"),
                _num(s, "set_size", 2, False),
                _num(s, "auroc_error", 3, False),
                f"{_pooled(s, 'ece')} / {_pooled(s, 'coverage', pct=True)}",
            ]
        )
    return _md_table(head, rows)


def _variants_md(t: dict, result: dict, rows: Sequence[str] | None = None) -> str:
    variants = list(t["variants"])
    present = [r for r in (rows or _ROW_LABELS) if any(r in t["variants"][v] for v in variants)]
    head = ["classifier", *variants]
    body = []
    for r in present:
        body.append(
            [_label(r, result)]
            + [_pct(t["variants"][v][r]) if r in t["variants"][v] else "–" for v in variants]
        )
    return _md_table(head, body)


def _variants_calib_md(t: dict, result: dict, row: str = "fused") -> str:
    variants = [v for v in t["variants"] if row in t["variants"][v]]
    if not variants:
        return ""
    head = ["", *variants]
    body = [
        [f"{_label(row, result)}: macro-F1 %"]
        + [_pct(t["variants"][v][row], "macro_f1") for v in variants],
        [f"{_label(row, result)}: ECE calibrated (pooled)"]
        + [_pooled(t["variants"][v][row], "ece") for v in variants],
        [f"{_label(row, result)}: coverage % (pooled)"]
        + [_pooled(t["variants"][v][row], "coverage", pct=True) for v in variants],
        [f"{_label(row, result)}: AUROC (errors)"]
        + [_num(t["variants"][v][row], "auroc_error", 3, False) for v in variants],
    ]
    return _md_table(head, body)


def _al_md(t: dict, result: dict) -> str:
    parts = []
    for arm, policies in t["arms"].items():
        row = "fused" if arm == "model" else "eeg_student"
        title = (
            "face-teacher / EEG-student model, fused output"
            if arm == "model"
            else "EEG-only student"
        )
        head = ["policy", *[f"{float(b) * 100:.0f} %" for b in t["budgets"]]]
        body = []
        for policy, per_budget in policies.items():
            body.append(
                [_POLICY_LABELS.get(policy, policy)]
                + [
                    _pct(per_budget[b][row]) if b in per_budget and row in per_budget[b] else "–"
                    for b in t["budgets"]
                ]
            )
        if arm == "model":
            for policy, per_budget in policies.items():
                body.append(
                    [f"{_POLICY_LABELS.get(policy, policy)} (student head)"]
                    + [
                        _pct(per_budget[b]["student_head"], sd=False)
                        if b in per_budget and "student_head" in per_budget[b]
                        else "–"
                        for b in t["budgets"]
                    ]
                )
        parts.append(f"*{title}* (accuracy %, mean ± sd over subjects)\n\n" + _md_table(head, body))
    return "\n\n".join(parts)


def _muscle_md(t: dict, result: dict) -> str:
    head = ["classifier", "all windows %", "EMG-clean windows %", "EMG-contaminated windows %"]
    body = [
        [_label(r, result), _pct(e["all"]), _pct(e["clean"]), _pct(e["contaminated"])]
        for r, e in t["rows"].items()
    ]
    first = next(iter(t["rows"].values()), None)
    who = ""
    if first:
        n_clean = first["clean"].get("n_subjects", 0)
        n_all = first["all"].get("n_subjects", 0)
        n_win = first["clean"].get("pooled", {}).get("n")
        who = (
            f" They come from {n_clean} of the {n_all} subjects"
            + (f" ({n_win:.0f} windows)" if _finite(n_win) else "")
            + "; the clean column averages over those subjects only."
        )
    return (
        f"{100 * t['share_clean']:.0f} % of the test windows are EMG-clean (EMG score below "
        f"{t['threshold']:g}, the training module's threshold).{who}\n\n" + _md_table(head, body)
    )


def _realism_md(t: dict, result: dict) -> str:
    parts = []
    for scheme, tt in t.items():
        head = ["classifier", "accuracy %", "macro-F1 %", "subjects' range %"]
        body = []
        for r, s in tt["rows"].items():
            rng = s.get("range")
            body.append(
                [
                    _label(r, result),
                    _pct(s),
                    _pct(s, "macro_f1"),
                    f"{100 * rng[0]:.0f}–{100 * rng[1]:.0f}" if rng and r != "chance" else "–",
                ]
            )
        parts.append(f"*{scheme}* ({' / '.join(tt['class_names'])})\n\n" + _md_table(head, body))
    return "\n\n".join(parts)


def _stride_text(stride: Any) -> str:
    if stride in (None, 1):
        return "all"
    return f"every {stride}th"


def _describe_run(result: dict) -> str:
    cfg, data, meta = result["config"], result["data"], result.get("meta", {})
    m = cfg["models"]
    counts = ", ".join(f"{k} {v}" for k, v in data.get("class_counts", {}).items())
    lines = [
        f"- data: {data.get('source')} — {data.get('n_subjects')} subjects, "
        f"{data.get('n_trials')} trials, {data.get('n_windows')} windows ({counts})",
    ]
    for key, what in (("skipped", "skipped"), ("partial", "used in part (truncated or corrupt)")):
        if data.get(key):
            lines.append(
                f"- session files {what}: "
                + ", ".join(f"`{s['file']}` ({s['reason']})" for s in data[key])
            )
    if data.get("source") == "sessions":
        lines.append(
            f"- windows: {data.get('window_s')} s, hop {data.get('hop_s')} s; student input: "
            f"differential entropy of {data.get('n_bands')} bands × {data.get('n_chans')} "
            f"channels; face frames: {_stride_text(data.get('face_stride'))} "
            f"({data.get('face_frames_per_window')} per window)"
        )
    n_folds = sum(len(v) for v in result.get("folds", {}).values())
    within = cfg["protocol"] == "within-subject"
    calib = (
        f"{100 * cfg['calib_fraction']:.0f} % of each fold's training trials (at least one per "
        "class)"
        if within
        else f"{100 * cfg['calib_fraction']:.0f} % of each fold's training subjects"
    )
    lines.append(
        f"- protocol: {cfg['protocol']}, {cfg['n_folds']} folds "
        + ("of whole trials per subject" if within else "of whole subjects")
        + f", {n_folds} fold runs over seeds {list(cfg['seeds'])}; calibration: {calib}; "
        f"conformal target {100 * cfg['coverage']:.0f} % ({m['conformal_method'].upper()})"
    )
    lines.append(
        f"- training: {m['epochs']} epochs, batch {m['batch_size']}, learning rate {m['lr']:g} "
        f"(every network, every table); ECE with {cfg['ece_bins']} bins"
    )
    secs = result.get("seconds", {})
    if secs:
        lines.append(
            "- time: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in secs.items())
            + f" (total {result.get('seconds_total', 0) / 60:.1f} min"
            + (f", {meta['machine']}" if meta.get("machine") else "")
            + ")"
        )
    if meta.get("command"):
        lines.append(f"- command: `{meta['command']}`")
    return "\n".join(lines)


_TABLE_ORDER = (
    "main",
    "realism",
    "ablation",
    "active-learning",
    "label-noise",
    "missing-face",
    "corrupted-eeg",
    "muscle",
)


def render_markdown(result: dict, plots: dict[str, str] | None = None, level: int = 2) -> str:
    """One run's tables as markdown (headings at ``level``)."""
    plots = plots or {}
    h = "#" * level
    meta = result.get("meta", {})
    cfg = result["config"]
    title = meta.get("title") or f"{cfg['protocol']}, {result['data'].get('source')}"
    parts = [f"{h} {title}", _describe_run(result)]
    tables = result.get("tables", {})
    cmd = meta.get("command")
    for name in _TABLE_ORDER:
        t = tables.get(name)
        if not t:
            continue
        sec = [f"{h}# {_TABLE_TITLES[name]}"]
        if cmd:
            sec.append(f"Made by: `{cmd}`")
        if name == "main":
            sec.append(
                "Mean ± sd over subjects (each subject's test windows pooled over its folds). "
                "ECE before and after temperature scaling fitted on the calibration trials; "
                "NLL after it; conformal sets fitted on the calibration trials; AUROC of the "
                "uncertainty (the fused model: its Dirichlet uncertainty; the others: 1 − max "
                "probability) for telling wrong decisions from right ones (0.5: none). Last "
                "column: all test windows pooled."
            )
            sec.append(_main_md(t, result))
        elif name == "ablation":
            sec.append(
                "Accuracy %, mean ± sd over subjects; the task loss (cross-entropy of both "
                "heads) is always on."
            )
            sec.append(
                _variants_md(
                    t,
                    result,
                    ("fused", "student_head", "student_via_teacher_head", "teacher_head", "chance"),
                )
            )
            sec.append(_variants_calib_md(t, result))
        elif name == "active-learning":
            sec.append(
                "At each budget the model is trained from scratch on every training window, "
                "the chosen ones labelled; the next windows are chosen with the previous "
                "budget's model (the first ones with a model trained without labels), best "
                "score first and spread in time (no two overlapping windows in one pass). "
                "Consistency-guided = mean rank of teacher–student disagreement, fused "
                "Dirichlet uncertainty and cross-modal unreliability. The EEG-only student "
                "cannot be trained without labels, so its first entropy batch is random. "
                "100 %: one model per fold, shared by the policies."
            )
            sec.append(_al_md(t, result))
        elif name in ("label-noise", "missing-face", "corrupted-eeg"):
            note = {
                "label-noise": "A fraction of the training and calibration trials gets a wrong "
                "class (every window of the trial, as a wrong self-report would); test labels "
                "are untouched.",
                "missing-face": "The face frames of a random fraction of the test windows are "
                "removed (as the camera pipeline sends them when no face is found); models "
                "and calibration are those of the main table.",
                "corrupted-eeg": "The EEG features, quality and EMG scores of a random fraction "
                "of the test windows come from the same sessions with broadband noise added "
                "to the raw EEG before the filters; models and calibration are those of the "
                "main table.",
            }[name]
            sec.append(note + " Accuracy %, mean ± sd over subjects.")
            sec.append(_variants_md(t, result))
            sec.append(_variants_calib_md(t, result))
            if name == "corrupted-eeg" and t.get("window_scores"):
                ws = t["window_scores"]
                sec.append(
                    f"Mean EEG quality {ws['quality_clean']:.2f} (clean) vs "
                    f"{ws['quality_corrupted']:.2f} (corrupted); mean EMG score "
                    f"{ws['emg_clean']:.2f} vs {ws['emg_corrupted']:.2f}."
                )
        elif name == "muscle":
            sec.append(_muscle_md(t, result))
        elif name == "realism":
            sec.append(_realism_md(t, result))
        if name in plots:
            sec.append(f"![{_TABLE_TITLES[name]}]({plots[name]})")
        parts.append("\n\n".join(s for s in sec if s))
    if result.get("skipped"):
        parts.append("Not run: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()))
    return "\n\n".join(parts)


def _targets_md(targets: list[dict]) -> str:
    body = []
    for t in targets:
        verdict = {True: "**met**", False: "**missed**", None: "not run"}[t["met"]]
        body.append([t["target"], verdict, t["value"], t["detail"]])
    return _md_table(["target", "verdict", "value", "numbers"], body)


def load_results(out_dir: str | Path) -> list[dict]:
    """Every benchmark result (``*.json`` with ``tables``) in a report folder."""
    out = []
    for p in sorted(Path(out_dir).glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and "tables" in d and "config" in d:
            d.setdefault("meta", {}).setdefault("name", p.stem)
            out.append(d)
    return out


def _run_order(r: dict) -> tuple:
    cfg, data = r.get("config", {}), r.get("data", {})
    tables = list(r.get("tables", {}))
    first = min((_TABLE_ORDER.index(t) for t in tables if t in _TABLE_ORDER), default=99)
    return (
        cfg.get("protocol") != "within-subject",
        data.get("source") != "sessions",
        first,
        r.get("meta", {}).get("name", ""),
    )


def write_index(
    out_dir: str | Path, *, title: str = "bci-affect evaluation report", replot: bool = False
) -> Path:
    """Rebuild ``README.md`` of a report folder from every result in it (``replot``: also
    redraw every result's plots)."""
    out_dir = Path(out_dir)
    results = sorted(load_results(out_dir), key=_run_order)
    if replot:
        for r in results:
            r["meta"]["plots"] = _make_plots(r, out_dir, r["meta"]["name"])
    parts = [f"# {title}"]
    intro = out_dir / "intro.md"
    if intro.is_file():
        parts.append(intro.read_text().strip())
    targets = check_targets(results)
    why = (
        "\n\nWhy each target is met or missed: see the discussion at the end."
        if (out_dir / "discussion.md").is_file()
        else ""
    )
    parts.append(
        "## Targets\n\nChecked on the within-subject results of recorded sessions; the "
        "differences carry the standard error over subjects of the paired difference.\n\n"
        + _targets_md(targets)
        + why
    )
    for r in results:
        plots = r.get("meta", {}).get("plots", {})
        parts.append(render_markdown(r, plots, level=2))
    disc = out_dir / "discussion.md"
    if disc.is_file():
        parts.append(disc.read_text().strip())
    path = out_dir / "README.md"
    tmp = path.with_name("README.md.tmp")
    tmp.write_text("\n\n".join(parts) + "\n")
    tmp.replace(path)
    return path


def write_report(result: dict, out_dir: str | Path, name: str) -> Path:
    """Save one run (``<name>.json`` and ``<name>-*.png``) and rebuild the folder's README.md.

    Returns
    -------
    Path
        The README.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _make_plots(result, out_dir, name)
    result.setdefault("meta", {})["plots"] = plots
    result["meta"]["name"] = name
    path = out_dir / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(result), indent=1, allow_nan=False))
    tmp.replace(path)
    return write_index(out_dir)


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy numbers as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    return obj


if __name__ == "__main__":  # pragma: no cover - `python -m bci_affect.evaluation.report DIR`
    import sys

    folder = sys.argv[1] if len(sys.argv) > 1 else "reports"
    print(write_index(folder, replot=True))
