"""``bci-affect demo``: the main job, end to end, on the sample recording the project keeps in
``recordings/sample/``.

The recording is a short simulated session (EEG, FaceFeatures, Markers) written by the
project's own simulator (``scripts/make_sample_recording.sh``). The demo replays it through
the inference engine exactly as a live session is scored (sources -> windows -> features ->
model -> predictions), with the bundled model, and writes the predictions (JSON lines) and
the report (HTML and PNG) into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bci_affect.cli.run import add_model_arguments

SAMPLE = Path(__file__).resolve().parents[2] / "recordings" / "sample" / "demo.xdf"
OUT = Path("out") / "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the bundled sample recording and write a report",
        description="Score the bundled sample recording with the bundled model (the same "
        "engine as a live session) and write the predictions and the report.",
    )
    p.add_argument(
        "--recording",
        default=str(SAMPLE),
        metavar="FILE",
        help="recording to use instead of the bundled sample (default: %(default)s)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=OUT,
        metavar="DIR",
        help="where predictions.jsonl, report.html and report.png go (default: out/demo)",
    )
    add_model_arguments(p, live=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from acquisition.files import check_recording_path  # noqa: PLC0415
    from bci_affect.cli.replay import score_in_process  # noqa: PLC0415
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415
    from bci_affect.engine.report import write_report  # noqa: PLC0415

    recording = check_recording_path(args.recording)
    out_dir: Path = args.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out-dir {out_dir} exists and is not a folder")
    if args.line_freq is None and recording.resolve() == SAMPLE.resolve():
        args.line_freq = 60.0  # the sample recording's mains (the simulator's default)
    args.out = args.out or out_dir / "predictions.jsonl"
    args.report = args.report or out_dir / "report.html"
    args.streams = None
    args.chunk_s = None
    print(f"bci-affect demo: {recording}", flush=True)
    outputs: list = []
    status = score_in_process(
        str(recording),
        args,
        command="demo",
        title=f"bci-affect demo: {recording.name}",
        keep=outputs,
    )
    png = args.report.with_suffix(".png")
    if args.report.suffix.lower() == ".html" and outputs and outputs[0].log.records:
        write_report(
            list(outputs[0].log.records),
            png,
            title=f"bci-affect demo: {recording.name}",
            trials=outputs[0].trials,
        )
        print(f"report: {png}", flush=True)
    return status
