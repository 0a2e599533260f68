"""``bci-affect simulate``: labelled synthetic affective sessions, written as XDF + sidecars."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bci_affect.core.errors import ConfigError

EPILOG = """\
examples:
  bci-affect simulate --subjects 10 --out data/sim
  bci-affect simulate --subjects 20 --out data/sim --seed 7 --config sim.toml --overwrite
  bci-affect simulate --print-config > sim.toml      # every parameter, documented

writes OUT/sub-01/ses-01.xdf (+ ses-01.json), OUT/sub-02/..., one line per subject. Each file
holds the streams a live session records: EEG (µV, Cyton montage Fp1,Fp2,C3,C4,P7,P8,O1,O2 at
250 Hz by default), EEG-events, FaceFeatures (the camera pipeline's 160 channels, 30 fps),
FaceFeatures-events, and Markers: JSON strings
  {"event": "session_start", "subject": "sub-01", "seed": 7, ...}
  {"event": "trial_start", "trial": 3, "stimulus": "stim-042"}
  {"event": "rating", "trial": 3, "valence": 7, "arousal": 3}      (1-9)
  {"event": "trial_end", "trial": 3}
  {"event": "session_end"}
The sidecar holds the configuration and the ground truth (subject traits, each trial's
target, felt state, rating and whether it was flipped, artifacts, face episodes). The same
seed and config give the same data; subject k does not depend on --subjects.
See docs/simulator.md for the model and every parameter.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="labelled synthetic sessions (EEG, FaceFeatures, Markers), written as XDF",
        description="Simulate subjects watching affective stimuli and rating them, and write "
        "each session as XDF with a JSON sidecar, exactly like `bci-affect record`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--subjects", type=int, metavar="N", help="number of subjects to simulate")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="dataset folder (created); one folder per subject"
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="S", help="master random seed, >= 0 (default 0)"
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="F",
        help="TOML file with [session], [eeg], [artifacts], [affect], [face], [labels] keys "
        "(default: the built-in defaults; see --print-config)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace sessions that already exist in DIR"
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration as commented TOML and exit",
    )
    p.set_defaults(func=run)


def _describe(summary) -> str:
    s = summary.subject
    traits = [
        "responder" if s.responder else "non-responder",
        "poker face" if s.poker_face else f"expressivity {s.expressivity:.2f}",
        f"IAF {s.iaf_hz:.1f} Hz",
    ]
    return (
        f"[{summary.index}/{summary.n_subjects}] {s.subject}: {summary.n_trials} trials, "
        f"{summary.duration_s / 60:.1f} min, {', '.join(traits)} -> {summary.path} "
        f"({summary.size_bytes / 1e6:.1f} MB, {summary.elapsed_s:.1f} s)"
    )


def run(args: argparse.Namespace) -> int:
    from acquisition.simulator import config_to_toml, load_config, simulate_dataset  # noqa: PLC0415

    config = load_config(args.config)
    if args.print_config:
        sys.stdout.write(config_to_toml(config))
        return 0
    if args.subjects is None or args.out is None:
        raise ConfigError("give --subjects N and --out DIR (or --print-config)")
    if args.subjects < 1:
        raise ConfigError(f"--subjects must be >= 1, got {args.subjects}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")

    def progress(summary) -> None:
        print(_describe(summary), flush=True)

    paths = simulate_dataset(
        args.subjects,
        args.out,
        seed=args.seed,
        config=config,
        overwrite=args.overwrite,
        progress=progress,
    )
    print(f"{len(paths)} sessions in {args.out} (seed {args.seed})", flush=True)
    return 0
