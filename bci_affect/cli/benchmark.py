"""``bci-affect benchmark --dataset DIR | --features CSV``: the evaluation harness.

Scores the face-teacher / EEG-student model and its baselines on trial-level folds
(``--protocol within-subject`` or ``cross-subject``), every accuracy beside chance, the majority
class, logistic regression on band features, the EEG-only student and the face-only teacher,
and makes the evaluation tables (``--tables``): main, ablation, active-learning, label-noise,
missing-face, corrupted-eeg, muscle, realism. Scores are mean ± sd over subjects.

``--dataset DIR`` reads a folder of XDF sessions (as ``bci-affect train`` does); the windows are
cut once and kept in a cache (``--cache``). ``--features FILE.csv`` reads a plain table
(subject, trial, label, then numeric features) and runs the EEG-only models and the
active-learning policies that need no face on it. ``--report DIR`` writes the results as JSON,
PNG plots and a markdown report (``DIR/README.md``, rebuilt from every result in DIR).
``--export-features FILE.csv`` writes the band features of the sessions as such a table.

A session file that cannot be read or is not a labelled session is skipped with a one-line
warning naming it (as ``bci-affect train`` does) and the run goes on with the others; the
results list the skipped files (``data.skipped``) and those cut off part way, used as far as
they go (``data.partial``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

TABLE_NAMES = (
    "main",
    "ablation",
    "active-learning",
    "label-noise",
    "missing-face",
    "corrupted-eeg",
    "muscle",
    "realism",
)

#: Options written back into the report's command line when they differ from the defaults.
_OPTIONS = (
    ("dataset", "--dataset", None),
    ("features", "--features", None),
    ("protocol", "--protocol", "within-subject"),
    ("labels", "--labels", "quadrant"),
    ("tables", "--tables", None),
    ("subjects", "--subjects", None),
    ("folds", "--folds", 4),
    ("seeds", "--seeds", [0]),
    ("epochs", "--epochs", 40),
    ("batch_size", "--batch-size", 128),
    ("lr", "--lr", 3e-3),
    ("calib_fraction", "--calib-fraction", 0.25),
    ("coverage", "--coverage", 0.9),
    ("window", "--window", 4.0),
    ("hop", "--hop", 0.5),
    ("line_freq", "--line-freq", 50.0),
    ("skip_start", "--skip-start", 0.0),
    ("face_stride", "--face-stride", 1),
    ("eeg_features", "--eeg-features", "sites"),
    ("noise_uv", "--corrupt-noise-uv", 50.0),
    ("threads", "--threads", None),
    ("report", "--report", None),
    ("name", "--name", None),
    ("title", "--title", None),
    ("export_features", "--export-features", None),
)


def _fractions(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) / (100.0 if float(x) > 1 else 1.0) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions or percentages, got {text!r}"
        ) from None
    return vals


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "benchmark",
        help="evaluate models and baselines on trial-level folds; write the evaluation report",
        description=(
            "Evaluate the face-teacher / EEG-student model and its baselines (chance, majority "
            "class, logistic regression on band features, EEG-only student, face-only teacher) "
            "on trial-level folds: accuracy, macro-F1, ECE, NLL, conformal coverage and set "
            "size, AUROC of the uncertainty for errors; mean ± sd over subjects. Also the "
            "ablation, active-learning, label-noise, missing-face, corrupted-EEG, "
            "muscle-leakage and realism tables."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--dataset",
        metavar="DIR",
        help="folder of labelled .xdf sessions; OpenBCI/BrainFlow text files are not sessions "
        "(they hold no trial or rating markers), so --board and the other import options of "
        "convert/inspect/replay do not apply",
    )
    src.add_argument(
        "--features",
        metavar="FILE.csv",
        help="feature table: columns subject, trial, label, then numeric features",
    )
    p.add_argument(
        "--protocol",
        choices=["within-subject", "cross-subject"],
        default="within-subject",
        help="train and test on each subject's own trials, or on held-out subjects "
        "(default: within-subject)",
    )
    p.add_argument(
        "--labels",
        choices=["quadrant", "valence", "arousal"],
        default="quadrant",
        help="classes from the 1-9 ratings (sessions only; default: quadrant)",
    )
    p.add_argument(
        "--tables",
        default=",".join(TABLE_NAMES),
        help=f"comma-separated tables to make (default: all): {', '.join(TABLE_NAMES)}",
    )
    p.add_argument(
        "--subjects", type=int, default=None, metavar="N", help="use the first N subjects only"
    )
    g = p.add_argument_group("folds and training")
    g.add_argument("--folds", type=int, default=4, help="folds (default: 4)")
    g.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one run per seed (default: 0)"
    )
    g.add_argument("--epochs", type=int, default=40, help="epochs of every network (default: 40)")
    g.add_argument("--batch-size", type=int, default=128, help="windows per step (default: 128)")
    g.add_argument("--lr", type=float, default=3e-3, help="learning rate (default: 3e-3)")
    g.add_argument(
        "--calib-fraction",
        type=float,
        default=0.25,
        help="fraction of each fold's training trials held out for temperature scaling and "
        "the conformal sets (default: 0.25, at least one trial per class)",
    )
    g.add_argument(
        "--coverage", type=float, default=0.9, help="conformal coverage target (default: 0.9)"
    )
    g.add_argument(
        "--budgets",
        type=_fractions,
        default=(0.1, 0.3, 0.5, 0.7, 1.0),
        help="active-learning label budgets (default: 10,30,50,70,100)",
    )
    g.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    g.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    g = p.add_argument_group("windows (sessions only)")
    g.add_argument("--window", type=float, default=4.0, help="window length, s (default: 4)")
    g.add_argument("--hop", type=float, default=0.5, help="window hop, s (default: 0.5)")
    g.add_argument(
        "--line-freq",
        type=float,
        choices=[50.0, 60.0],
        default=50.0,
        help="mains frequency for the notch and line-noise score (default: 50)",
    )
    g.add_argument(
        "--skip-start",
        type=float,
        default=0.0,
        help="leave out windows starting less than this after trial start, s (default: 0)",
    )
    g.add_argument(
        "--face-stride",
        type=int,
        default=1,
        help="keep every N-th face frame of a window (default: 1, all; 4 is 4x faster)",
    )
    g.add_argument(
        "--eeg-features",
        choices=["sites", "channels"],
        default="sites",
        help="EEG features of every arm: differential entropy on the virtual 10-20 montage, "
        "normalised per session (default, what the model reads), or per channel",
    )
    g.add_argument(
        "--corrupt-noise-uv",
        dest="noise_uv",
        type=float,
        default=50.0,
        help="RMS of the noise added to the raw EEG for the corrupted-eeg table, µV "
        "(default: 50; 0: no corrupted copy)",
    )
    g.add_argument(
        "--cache",
        metavar="DIR",
        help="keep the cut windows here (default: DIR/tmp/cache beside --report; none without)",
    )
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    g = p.add_argument_group("output")
    g.add_argument(
        "--report",
        metavar="DIR",
        help="write DIR/NAME.json, DIR/NAME-*.png and rebuild DIR/README.md",
    )
    g.add_argument("--name", help="name of this run in the report (default: from the options)")
    g.add_argument("--title", help="heading of this run in the report")
    g.add_argument(
        "--export-features",
        metavar="FILE.csv",
        help="also write the band features of the sessions as a feature table",
    )
    g.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it (options that differ from their defaults)."""
    parts = ["bci-affect", "benchmark"]
    for attr, flag, default in _OPTIONS:
        v = getattr(args, attr, None)
        if v is None or v == default:
            continue
        if attr == "tables" and v == ",".join(TABLE_NAMES):
            continue
        if isinstance(v, list | tuple):
            parts += [flag, *(str(x) for x in v)]
        else:
            parts += [flag, f"{v:g}" if isinstance(v, float) else str(v)]
    if tuple(args.budgets) != (0.1, 0.3, 0.5, 0.7, 1.0):
        parts += ["--budgets", ",".join(f"{100 * b:g}" for b in args.budgets)]
    if args.device:
        parts += ["--device", args.device]
    return shlex.join(parts)


def _load_sessions(args: argparse.Namespace, cache_dir: Path | None) -> Any:
    from dataclasses import replace  # noqa: PLC0415

    from bci_affect.cli.train import find_sessions, load_sessions, problems_lines  # noqa: PLC0415
    from bci_affect.evaluation.data import (  # noqa: PLC0415
        CorruptionConfig,
        build_eval_set,
        cache_key,
        load_eval_set,
        save_eval_set,
    )
    from bci_affect.processors import SignalsConfig  # noqa: PLC0415
    from bci_affect.training.dataset import DatasetConfig  # noqa: PLC0415
    from bci_affect.training.inputs import signals_config_to_dict  # noqa: PLC0415

    signals = SignalsConfig.make(line_hz=args.line_freq, window_s=args.window, hop_s=args.hop)
    signals = replace(signals, features=replace(signals.features, tensor=False))
    config = DatasetConfig(signals=signals, label_scheme=args.labels, skip_start_s=args.skip_start)
    corruption = CorruptionConfig(noise_uv=args.noise_uv)
    found = find_sessions(Path(args.dataset))
    _say(f"dataset {args.dataset}: {len(found)} session file(s)")
    path = None
    if cache_dir is not None:
        settings = {
            "signals": signals_config_to_dict(signals),
            "labels": args.labels,
            "face_stride": args.face_stride,
            "noise_uv": args.noise_uv,
            "eeg_features": args.eeg_features,
            "sessions": [s for s, _, _ in found],
        }
        if args.skip_start:
            settings["skip_start_s"] = args.skip_start
        key = cache_key([f for _, _, f in found], settings)
        path = cache_dir / f"windows-{key}.npz"
        if path.is_file():
            t0 = time.perf_counter()
            es = load_eval_set(path)
            _say(f"windows from the cache {path} ({time.perf_counter() - t0:.1f} s)")
            info = es.info or {}
            for line in problems_lines(
                info.get("skipped", []), info.get("partial", []), len(found)
            ):
                _say(f"when the windows were cut: {line}")
            return es

    skipped: list[dict] = []
    partial: list[dict] = []
    sessions = load_sessions(
        found, command="benchmark", config=config, skipped=skipped, partial=partial
    )
    t0 = time.perf_counter()
    es = build_eval_set(
        sessions,
        config,
        subjects={s: subj for s, subj, _ in found if subj is not None},
        face_stride=args.face_stride,
        corruption=corruption if args.noise_uv > 0 else None,
        sites=args.eeg_features == "sites",
    )
    _say(f"windows cut in {time.perf_counter() - t0:.1f} s")
    info = {**(es.info or {}), "n_files": len(found), "skipped": skipped, "partial": partial}
    es = replace(es, info=info)
    for line in problems_lines(skipped, partial, len(found)):
        _say(line)
    if path is not None:
        save_eval_set(es, path)
        _say(f"cached in {path}")
    return es


def _default_name(args: argparse.Namespace, tables: tuple[str, ...]) -> str:
    src = "features" if args.features else "sessions"
    what = "all" if set(tables) == set(TABLE_NAMES) else "-".join(tables)
    return f"{args.protocol}-{src}-{what}"


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from bci_affect import __version__  # noqa: PLC0415
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415
    from bci_affect.evaluation.arms import ModelSettings  # noqa: PLC0415
    from bci_affect.evaluation.experiments import BenchmarkConfig, run_benchmark  # noqa: PLC0415
    from bci_affect.evaluation.features_csv import (  # noqa: PLC0415
        load_features_csv,
        write_features_csv,
    )
    from bci_affect.evaluation.report import format_text, write_report  # noqa: PLC0415

    t_start = time.perf_counter()
    tables = tuple(t.strip() for t in args.tables.split(",") if t.strip())
    unknown = [t for t in tables if t not in TABLE_NAMES]
    if unknown or not tables:
        raise ConfigError(
            f"--tables: unknown table(s) {', '.join(unknown) or '(none)'}; valid: "
            f"{', '.join(TABLE_NAMES)}"
        )
    if args.subjects is not None and args.subjects < 1:
        raise ConfigError(f"--subjects must be >= 1, got {args.subjects}")
    if args.face_stride < 1:
        raise ConfigError(f"--face-stride must be >= 1, got {args.face_stride}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.features and args.export_features:
        raise ConfigError("--export-features needs --dataset (recorded sessions)")
    models = ModelSettings(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device
    )
    config = BenchmarkConfig(
        protocol=args.protocol,
        n_folds=args.folds,
        seeds=tuple(args.seeds),
        calib_fraction=args.calib_fraction,
        coverage=args.coverage,
        tables=tables,
        budgets=tuple(args.budgets),
        models=models,
    )
    cache_dir = None
    if not args.no_cache and not args.features:
        if args.cache:
            cache_dir = Path(args.cache)
        elif args.report:
            cache_dir = Path(args.report) / "tmp" / "cache"
    if args.features:
        es = load_features_csv(args.features)
        _say(f"feature table {args.features}: {len(es)} rows, {len(es.feature_names)} features")
    else:
        es = _load_sessions(args, cache_dir)
        if args.export_features:
            path = write_features_csv(es, args.export_features)
            _say(f"wrote the band features to {path}")
    if args.subjects is not None:
        keep = list(es.subjects)[: args.subjects]
        if len(keep) < args.subjects:
            _say(f"only {len(keep)} subjects in the data; using all of them")
        es = es.subset(np.isin(es.subject, keep))
    s = es.summary()
    _say(
        f"{s['n_windows']} windows, {s['n_trials']} trials, {s['n_subjects']} subjects; "
        + ", ".join(f"{k} {v}" for k, v in s["class_counts"].items())
    )
    result = run_benchmark(es, config, progress=_say)
    result["meta"] = {
        "command": command_line(args),
        "title": args.title,
        "versions": {
            "bci_affect": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "threads": torch.get_num_threads(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.report:
        name = args.name or _default_name(args, tables)
        readme = write_report(result, args.report, name)
        _say(f"wrote {Path(args.report) / (name + '.json')} and {readme}")
    if args.json:
        from bci_affect.evaluation.report import jsonable  # noqa: PLC0415

        print(json.dumps(jsonable(result), allow_nan=False))
    else:
        print(format_text(result))
        from bci_affect.cli.train import problems_lines  # noqa: PLC0415

        data = result.get("data", {})
        skipped, partial = data.get("skipped", []), data.get("partial", [])
        for line in problems_lines(skipped, partial, data.get("n_files", 0)):
            print(line)
        print(f"done in {time.perf_counter() - t_start:.1f} s")
    return 0
