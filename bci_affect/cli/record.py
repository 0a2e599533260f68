"""``bci-affect record``: record LSL streams to XDF (LabRecorder) with a JSON sidecar."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from bci_affect.core.errors import ConfigError

EPILOG = """\
examples:
  bci-affect record --out recordings/S01/ses1.xdf
      every stream visible, until Ctrl-C; subject S01, session ses1
  bci-affect record --out recordings/S01/ses2.xdf --streams EEG type=Markers --duration 600
  bci-affect record --out rec.xdf --streams source_id=cyton-1234 --board cyton --montage 10-20

stream selectors: a bare word matches a stream's name or type; name=, type=, source_id= and
host= match that field exactly. Beside FILE.xdf, FILE.json records the subject, session, board,
montage, software versions, these arguments, each stream's metadata and sample count, the
start/stop times (LSL clock and UTC), and how the recording ended: status complete,
interrupted (killed, or SIGTERM to the recording process; the file is final) or failed (e.g. a
full disk; the file holds what was written), with the reason. Exit status 2 unless complete.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "record",
        help="record LSL streams to XDF (LabRecorder)",
        description="Record LSL streams into one XDF file with LabRecorder, plus a JSON sidecar.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE.xdf",
        help="file to write, e.g. recordings/<subject>/<session>.xdf (folders are created)",
    )
    p.add_argument(
        "--streams",
        nargs="+",
        action="extend",
        metavar="SEL",
        help="streams to record (default: every stream visible)",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="seconds to wait for each --streams selector (default 5), or to listen for "
        "streams without --streams (default 2)",
    )
    p.add_argument("--subject", help="subject id (default: the folder of --out)")
    p.add_argument("--session", help="session id (default: the file name of --out)")
    p.add_argument("--board", help="EEG board, stored in the sidecar (e.g. cyton)")
    p.add_argument("--montage", help="electrode montage, stored in the sidecar (e.g. 10-20)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=run)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from acquisition.lsl_inlet import describe_stream, quiet_liblsl  # noqa: PLC0415

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration:g}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    timeout = args.timeout if args.timeout is not None else (5.0 if args.streams else 2.0)
    if getattr(args, "log_level", "WARNING") != "DEBUG":
        quiet_liblsl()
    config = {k: v for k, v in vars(args).items() if k != "func"}

    def on_start(rec) -> None:
        infos = rec.stream_infos
        until = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
        print(f"recording {len(infos)} stream(s) to {rec.path} {until}:")
        for info in infos:
            print(f"  {describe_stream(info)}")
        sys.stdout.flush()
        if in_main:  # `kill PID` stops the recording as cleanly as Ctrl-C
            signal.signal(signal.SIGTERM, lambda *_: rec.request_stop())

    in_main = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.getsignal(signal.SIGTERM) if in_main else None
    try:
        summary = _record(args, on_start, timeout, config)
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    print(
        f"wrote {summary.path} ({_size(summary.size_bytes)}, {summary.duration_s:.1f} s) "
        f"and {summary.sidecar}"
    )
    width = max((len(s.name) for s in summary.streams), default=0)
    for s in summary.streams:
        print(f"  {s.name:<{width}}  {s.type:<12} {s.n_samples:>9} samples")
    return 0


def _record(args: argparse.Namespace, on_start, timeout: float, config: dict):
    from acquisition.recorder import record  # noqa: PLC0415

    return record(
        args.out,
        args.streams,
        duration_s=args.duration,
        on_start=on_start,
        timeout_s=timeout,
        subject=args.subject,
        session=args.session,
        board=args.board,
        montage=args.montage,
        overwrite=args.overwrite,
        config=config,
    )
