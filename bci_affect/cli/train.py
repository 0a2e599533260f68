"""``bci-affect train --dataset DIR --out MODEL``: train or personalise a model on recordings.

The dataset is a folder of XDF sessions (searched recursively; ``sub-01/ses-01.xdf`` gives
session ``sub-01/ses-01`` of subject ``sub-01``) with an EEG stream, a FaceFeatures stream
and a ``Markers`` stream of JSON trial markers and ratings. Windows wholly inside rated
trials are labelled from the 1–9 ratings (``--labels``), split by trial into training and
validation (no trial on both sides), and the model is trained on the training side. The
command prints a table of accuracy and macro-F1 on each side for the fused model, the face
teacher alone, the EEG student alone, the majority class, a logistic regression on band
features and chance, each also on the EMG-clean windows, and writes the model folder
atomically (``config.json`` + ``weights.safetensors``).

``--init MODEL`` (or ``--init default``, the bundled model) fine-tunes an existing model on
the dataset instead (a calibration session: teacher frozen, a few epochs) and prints the
validation scores before and after. ``--json`` prints the report as one JSON object on
stdout; progress goes to stderr.

A session file that cannot be read (truncated before its streams, not XDF, empty) or that is
not a labelled session (no EEG stream, no trial markers) is skipped with a one-line warning
naming it; the run goes on with the others, and the skipped files are listed in the output and
in the model's metadata (``dataset.skipped``). When no file can be used, the command stops.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Session file suffixes searched in a dataset folder.
SESSION_SUFFIXES = (".xdf", ".xdfz")

EPILOG = """\
examples:
  bci-affect simulate --subjects 8 --out data/sim && \\
  bci-affect train --dataset data/sim --out models/sim --line-freq 60
  bci-affect train --dataset recordings/S01 --init default --out models/S01   (personalise)
  bci-affect train --dataset data/sim --out models/valence --labels valence --split subject

a session is an .xdf file with an EEG stream, a FaceFeatures stream and a Markers stream of
JSON strings: {"event": "trial_start", "trial": 3}, {"event": "rating", "trial": 3,
"valence": 7, "arousal": 3} (1-9 scales), {"event": "trial_end", "trial": 3}. Windows lie
wholly inside rated trials; validation holds out whole trials (or sessions, subjects).
The model folder holds config.json (channels, rate, window, filters, classes, metrics,
versions) and weights.safetensors.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or personalise a model on a folder of labelled XDF sessions",
        description=(
            "Train a face-teacher / EEG-student model on a folder of XDF sessions labelled "
            "through their Markers stream (trial_start / rating / trial_end JSON markers), "
            "with a trial-level validation split, and write it as a model folder. With "
            "--init, fine-tune an existing model on a calibration session instead."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        required=True,
        metavar="DIR",
        help="folder of .xdf sessions (or one .xdf file); OpenBCI/BrainFlow text files are not "
        "sessions (they hold no trial or rating markers), so --board and the other import "
        "options of convert/inspect/replay do not apply",
    )
    p.add_argument("--out", required=True, metavar="MODEL", help="model folder to write")
    p.add_argument(
        "--init",
        metavar="MODEL",
        help="fine-tune this model folder ('default': the bundled model) instead of training "
        "from scratch; the window and filter settings come from it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.add_argument(
        "--labels",
        choices=["quadrant", "valence", "arousal"],
        default=None,
        help="classes from the 1-9 ratings: valence-arousal quadrants (default), high/low "
        "valence, or high/low arousal",
    )
    p.add_argument(
        "--rating-threshold",
        type=float,
        default=5.0,
        help="a rating above this is 'high' (default: 5, so 5 counts as low)",
    )
    g = p.add_argument_group("validation")
    g.add_argument(
        "--split",
        choices=["trial", "session", "subject"],
        default="trial",
        help="what the validation split keeps whole (default: trial)",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="fraction of trials (sessions, subjects) held out (default: 0.2; 0.3 with --init)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help="passes (default: 30; 15 with --init)")
    g.add_argument("--batch-size", type=int, default=64, help="windows per step (default: 64)")
    g.add_argument(
        "--lr", type=float, default=None, help="learning rate (default: 3e-3; 1e-3 with --init)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of split, init and order (default: 0)")
    g.add_argument(
        "--eeg-inputs",
        choices=["sites", "de", "raw", "both"],
        default="sites",
        help="student input: differential entropy on the virtual 10-20 montage, normalised per "
        "session (default: the model then scores any montage), differential entropy per "
        "channel, the filtered window, or both (these three fit this montage only)",
    )
    g.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default: 1; the model is small, one thread is as fast as "
        "several and leaves the other cores free; more may help with --eeg-inputs raw)",
    )
    g = p.add_argument_group("windows and signals (taken from the model with --init)")
    g.add_argument("--window", type=float, default=None, help="window length, s (default: 4)")
    g.add_argument("--hop", type=float, default=None, help="window hop, s (default: 0.5)")
    g.add_argument(
        "--line-freq",
        type=float,
        choices=[50.0, 60.0],
        default=None,
        help="mains frequency for the notch and line-noise score (default: 50)",
    )
    g.add_argument(
        "--reference", default=None, help="re-reference: 'average' or a channel (default: none)"
    )
    g.add_argument(
        "--skip-start",
        type=float,
        default=0.0,
        help="leave out windows starting less than this after trial start, s (default: 0)",
    )
    g = p.add_argument_group("streams")
    g.add_argument("--eeg-stream", metavar="NAME", help="EEG stream (default: the one of type EEG)")
    g.add_argument(
        "--face-stream", metavar="NAME", help="FaceFeatures stream (default: type FaceFeatures)"
    )
    g.add_argument(
        "--markers-stream",
        metavar="NAME",
        help="session markers (default: the Markers stream with trial_start events)",
    )
    p.add_argument("--description", default="", help="free text stored in the model's config.json")
    p.add_argument(
        "--json", action="store_true", help="print the report as one JSON object on stdout"
    )
    p.set_defaults(func=run)


def find_sessions(dataset: Path) -> list[tuple[str, str | None, Path]]:
    """``(session id, subject or None, path)`` of every session file under ``dataset``."""
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415

    if dataset.is_file():
        if not dataset.name.lower().endswith(SESSION_SUFFIXES):
            raise ConfigError(f"--dataset {dataset} is not an .xdf file or a folder of them")
        return [(dataset.stem, None, dataset)]
    if not dataset.is_dir():
        raise ConfigError(f"--dataset {dataset} does not exist")
    files = sorted(
        p
        for p in dataset.rglob("*")
        if p.is_file() and p.name.lower().endswith(SESSION_SUFFIXES) and not p.name.startswith(".")
    )
    if not files:
        raise ConfigError(
            f"--dataset {dataset} holds no .xdf session (searched its sub-folders too); record "
            "sessions with `bci-affect record` or simulate some with `bci-affect simulate`"
        )
    out = []
    for f in files:
        rel = f.relative_to(dataset)
        session = rel.with_suffix("").as_posix()
        # the folder holding the session (sub-01/ses-01.xdf: sub-01); nested corpora keep
        # their path (cyton/sub-01) so that subjects of different groups stay apart
        subject = rel.parent.as_posix() if len(rel.parts) > 1 else None
        out.append((session, subject, f))
    return out


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: Warnings of the XDF reader that mean part of a file was lost.
_DAMAGE = re.compile(r"\btruncated\b|\bcorrupt\b")


def _skip_reason(exc: Exception, path: Path, session: str) -> str:
    """The error's message without the file or session name it starts with."""
    text = str(exc)
    for prefix in (str(path), session):
        if text.startswith(prefix):
            return text[len(prefix) :].lstrip(" :")
    return text


def load_sessions(
    found: list[tuple[str, str | None, Path]],
    *,
    command: str,
    config: Any,
    skipped: list[dict],
    partial: list[dict] | None = None,
    quiet_nan_stream: str | None = None,
) -> Iterator[tuple[str, dict]]:
    """Load each session file of :func:`find_sessions`, one at a time.

    A file that cannot be read (empty, not XDF, cut off before its streams), or that lacks
    the EEG or trial-marker stream (``config``: a
    :class:`~bci_affect.training.dataset.DatasetConfig` naming the streams), is skipped: a
    one-line warning on stderr names it, and ``{"session", "file", "reason"}`` is appended to
    ``skipped``. A truncated or partly corrupt file is used as far as it can be read (its
    warning says what was kept) and listed in ``partial`` the same way.

    Yields
    ------
    (session id, {stream name: Chunk})

    Raises
    ------
    ConfigError
        No file could be used.
    """
    from acquisition.xdf import RecordingWarning, load_xdf  # noqa: PLC0415
    from bci_affect.core.errors import (  # noqa: PLC0415
        ConfigError,
        FileFormatError,
        StreamNotFoundError,
    )
    from bci_affect.training.markers import pick_session_streams  # noqa: PLC0415

    n_used = 0
    for i, (session, _subject, path) in enumerate(found, start=1):
        t0 = time.perf_counter()
        caught: list[warnings.WarningMessage] = []
        try:
            if path.stat().st_size == 0:
                raise FileFormatError("the file is empty (0 bytes)")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if quiet_nan_stream:
                    # NaN is how FaceFeatures encodes "no face in this frame"; the dataset
                    # summary reports the windows with a face instead of a warning per session
                    warnings.filterwarnings(
                        "ignore",
                        message=rf".*stream '{re.escape(quiet_nan_stream)}' has \d+ NaN values",
                        category=RecordingWarning,
                    )
                streams = {c.name: c for c in load_xdf(path)}
            pick_session_streams(
                streams,
                eeg=config.eeg_stream,
                face=config.face_stream,
                markers=config.markers_stream,
                session=session,
            )
        except (FileFormatError, StreamNotFoundError) as exc:
            reason = _skip_reason(exc, path, session)
            skipped.append({"session": session, "file": str(path), "reason": reason})
            _say(f"bci-affect {command}: warning: skipped {path}: {reason}")
            continue
        finally:
            for w in caught:
                _say(f"bci-affect {command}: warning: {w.message}")
        damage = [
            str(w.message)
            for w in caught
            if issubclass(w.category, RecordingWarning) and _DAMAGE.search(str(w.message))
        ]
        if damage and partial is not None:
            reason = "; ".join(_skip_reason(Exception(d), path, session) for d in damage)
            partial.append({"session": session, "file": str(path), "reason": reason})
        n_used += 1
        _say(f"[{i}/{len(found)}] loaded {session} ({time.perf_counter() - t0:.1f} s)")
        yield session, streams
    if n_used == 0 and skipped:
        first = skipped[0]
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise ConfigError(
            f"none of the {len(found)} session files can be used: {first['file']}: "
            f"{first['reason']}{more}; check them with `bci-affect inspect FILE`"
        )


def problems_lines(skipped: list[dict], partial: list[dict], n_files: int) -> list[str]:
    """Lines naming the session files skipped and those read only in part."""
    out = []
    if skipped:
        names = ", ".join(s["file"] for s in skipped)
        out.append(
            f"skipped {len(skipped)} of {n_files} session files (unreadable or unlabelled): {names}"
        )
    if partial:
        names = ", ".join(s["file"] for s in partial)
        out.append(f"used in part (truncated or corrupt): {names}")
    return out


def _resolve_init(init: str) -> Path:
    if init == "default":
        from bci_affect.pretrained import default_model_path  # noqa: PLC0415

        return default_model_path()
    return Path(init)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from bci_affect.core.errors import ConfigError  # noqa: PLC0415
    from bci_affect.models.finetune import TrainConfig  # noqa: PLC0415
    from bci_affect.processors import SignalsConfig  # noqa: PLC0415
    from bci_affect.training.dataset import DatasetConfig, build_dataset  # noqa: PLC0415
    from bci_affect.training.model_io import (  # noqa: PLC0415
        check_output_folder,
        load_model,
        save_model,
    )
    from bci_affect.training.train import (  # noqa: PLC0415
        FinetuneSettings,
        TrainSettings,
        finetune_model,
        format_metrics,
        train_model,
    )

    t_start = time.perf_counter()
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = check_output_folder(args.out, overwrite=args.overwrite)
    start = None
    if args.init:
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("window", "hop", "line_freq", "reference")
            if getattr(args, k) is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} cannot be set with --init: the windows and filters must be "
                "the ones the starting model was trained with"
            )
        start = load_model(_resolve_init(args.init), device="cpu")
        if Path(args.init).resolve() == out.resolve() and not args.overwrite:
            raise ConfigError("--out is the --init model; pass --overwrite to replace it")
        signals = start.signals
        scheme = args.labels or start.model.config.label_scheme
    else:
        defaults = {"window": 4.0, "hop": 0.5, "line_freq": 50.0}
        signals = SignalsConfig.make(
            line_hz=args.line_freq or defaults["line_freq"],
            window_s=args.window or defaults["window"],
            hop_s=args.hop or defaults["hop"],
            reference=args.reference,
        )
        scheme = args.labels or "quadrant"
    eeg_inputs = start.model.config.eeg_inputs if start else args.eeg_inputs
    # the filtered-window tensor costs memory and time; keep it only when the student reads it
    needs_tensor = eeg_inputs in ("raw", "both")
    if needs_tensor != signals.features.tensor:
        signals = replace(signals, features=replace(signals.features, tensor=needs_tensor))
    config = DatasetConfig(
        signals=signals,
        label_scheme=scheme,
        rating_threshold=args.rating_threshold,
        eeg_stream=args.eeg_stream,
        face_stream=args.face_stream,
        markers_stream=args.markers_stream,
        skip_start_s=args.skip_start,
    )
    dataset_path = Path(args.dataset)
    found = find_sessions(dataset_path)
    face_name = args.face_stream or "FaceFeatures"
    _say(f"dataset {dataset_path}: {len(found)} session file(s)")
    skipped: list[dict] = []
    partial: list[dict] = []
    sessions = load_sessions(
        found,
        command="train",
        config=config,
        skipped=skipped,
        partial=partial,
        quiet_nan_stream=face_name,
    )
    subjects = {s: subj for s, subj, _ in found if subj is not None}

    def report(session: str, part: Any) -> None:
        counts = " ".join(
            f"{n} {c}" for n, c in zip(part.class_names, part.class_counts(), strict=True)
        )
        _say(f"    {session}: {len(part)} windows in {part.n_trials} rated trials ({counts})")

    dataset = build_dataset(sessions, config, subjects=subjects, progress=report)
    summary = dataset.summary()
    _say(
        f"dataset: {summary['n_windows']} windows, {summary['n_trials']} trials, "
        f"{summary['n_sessions']} sessions, {summary['n_subjects']} subjects, "
        f"{summary['windows_with_face']} windows with a face; "
        + ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
    )
    for line in problems_lines(skipped, partial, len(found)):
        _say(line)
    torch.manual_seed(args.seed)
    train_kw: dict[str, Any] = {"batch_size": args.batch_size, "device": args.device}
    if start is None:
        tc = TrainConfig(epochs=args.epochs or 30, lr=args.lr or 3e-3, **train_kw)
        settings: Any = TrainSettings(
            eeg_inputs=eeg_inputs,
            split=args.split,
            val_fraction=0.2 if args.val_fraction is None else args.val_fraction,
            seed=args.seed,
            train=tc,
        )
        result = train_model(dataset, settings, progress=_say)
        mode = "train"
    else:
        base = FinetuneSettings().train

        tc = replace(
            base,
            epochs=args.epochs or base.epochs,
            lr=args.lr or base.lr,
            batch_size=args.batch_size,
            device=args.device,
        )
        settings = FinetuneSettings(
            split=args.split,
            val_fraction=0.3 if args.val_fraction is None else args.val_fraction,
            seed=args.seed,
            train=tc,
        )
        result = finetune_model(start.model, dataset, settings, progress=_say)
        mode = "finetune"
    from bci_affect import __version__  # noqa: PLC0415

    metadata = {
        "mode": mode,
        "description": args.description,
        "init": str(start.path) if start else None,
        "dataset": {
            "path": str(dataset_path),
            "sessions": list(dataset.sessions),
            **summary,
            "n_files": len(found),
            "skipped": skipped,
            "partial": partial,
        },
        "split": result.split.to_dict(),
        "metrics": result.metrics,
        "settings": _jsonable(settings.to_dict()),
        "training": {
            "seconds": round(result.history.seconds, 3),
            "device": result.history.device,
            "threads": args.threads,
            "final_epoch": result.history.final,
        },
        "versions": {
            "bci_affect": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
    }
    path = save_model(
        result.model, out, dataset=dataset, metadata=metadata, overwrite=args.overwrite
    )
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    splits = ("train_before", "train", "val_before", "val") if start else ("train", "val")
    if args.json:
        print(
            json.dumps(
                {
                    "model": str(path),
                    "size_bytes": size,
                    "seconds": round(time.perf_counter() - t_start, 3),
                    **metadata,
                },
                allow_nan=False,
            )
        )
    else:
        names = ", ".join(dataset.class_names)
        print(
            f"{'fine-tuned' if start else 'trained'} on {len(result.split.train)} windows, "
            f"validated on {len(result.split.val)} (split by {result.split.unit}); classes: {names}"
        )
        print(format_metrics(result.metrics, splits=splits))
        for line in problems_lines(skipped, partial, len(found)):
            print(line)
        print(f"wrote {path} ({size / 1024:.0f} kB) in {time.perf_counter() - t_start:.1f} s")
    return 0


def _jsonable(obj: Any) -> Any:
    """Settings as JSON (dataclass dicts may hold tuples and floats)."""
    return json.loads(json.dumps(obj, default=str))
