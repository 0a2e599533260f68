"""``bci-affect demo``: the main job on the sample recording the project keeps in
``recordings/sample/``.

The recording was made with the project's own tools (``scripts/make_sample_recording.sh``:
``bci-affect stream --board synthetic`` recorded by ``bci-affect record``). The demo replays it
through the same source interface a live session uses and prints per-stream statistics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "recordings" / "sample" / "demo.xdf"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the pipeline on the bundled sample recording",
        description="Replay the bundled sample recording and print per-stream statistics.",
    )
    p.add_argument(
        "--recording",
        default=str(SAMPLE),
        metavar="FILE",
        help="recording to use instead of the bundled sample (default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bci_affect.cli.replay import replay_in_process  # noqa: PLC0415

    print(f"bci-affect demo: replaying {args.recording}", flush=True)
    return replay_in_process(args.recording, command="demo")
