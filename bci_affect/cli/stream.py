"""``bci-affect stream``: publish a BrainFlow board as LSL streams.

Opens the board, creates one LSL outlet per stream of the source (EEG, accelerometer, events)
and pushes every chunk with its LSL-clock timestamps until Ctrl-C, SIGTERM, ``--duration`` or
the end of a played-back file.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import TextIO

from bci_affect.core.errors import ConfigError
from bci_affect.core.source import Source

_BOARDS = "synthetic, cyton, cyton-daisy, ganglion, playback"

_EPILOG = """\
examples:
  bci-affect stream --board synthetic --duration 10
  bci-affect stream --board cyton --serial-port /dev/ttyUSB0 --montage Fp1,Fp2,C3,C4,P7,P8,O1,O2
  bci-affect stream --board playback --file BrainFlow-RAW.csv --master-board cyton

streams published (NAME is --name):
  NAME         type EEG, microvolts, one channel per electrode, board rate
  NAME-accel   type Accelerometer, AccX/AccY/AccZ in g
  NAME-events  type Markers, JSON strings: dropped_samples, gap, stream_lost, stream_recovered
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stream",
        help="publish a BrainFlow board as LSL streams",
        description="Publish a BrainFlow board (or a BrainFlow CSV played back in real time) "
        "as LSL streams, timestamped on the LSL clock, until Ctrl-C or --duration.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--board", required=True, metavar="BOARD", help=f"one of: {_BOARDS}")
    p.add_argument(
        "--serial-port",
        metavar="PORT",
        help="serial port of the dongle (cyton, cyton-daisy, ganglion), e.g. /dev/ttyUSB0 or COM3",
    )
    p.add_argument("--file", metavar="F", help="BrainFlow CSV to play back (--board playback)")
    p.add_argument(
        "--master-board",
        default="synthetic",
        metavar="B",
        help="for playback: the board that recorded --file (default: synthetic)",
    )
    p.add_argument(
        "--montage",
        metavar="LABELS",
        help="comma-separated EEG channel labels, one per board channel (default: BrainFlow's)",
    )
    p.add_argument("--name", default="EEG", help="name of the EEG stream (default: EEG)")
    p.add_argument(
        "--source-id",
        metavar="ID",
        help="LSL source_id of the EEG stream, so inlets recover after a restart "
        "(default: bci-affect:<board>:<serial port|file|synthetic>)",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)"
    )
    p.set_defaults(func=run)


def parse_montage(text: str | None) -> list[str] | None:
    """``"Fp1, Fp2,C3"`` -> ``["Fp1", "Fp2", "C3"]``; None stays None."""
    if text is None:
        return None
    labels = [c.strip() for c in text.split(",")]
    if not any(labels):
        raise ConfigError(f"--montage needs comma-separated channel labels, got {text!r}")
    return labels


def publish(source: Source, *, duration_s: float | None = None, out: TextIO | None = None) -> dict:
    """Publish every stream of ``source`` as an LSL outlet until it ends, is stopped or Ctrl-C.

    In the main thread, SIGTERM (service managers, ``kill``) ends it like Ctrl-C: drained,
    released, summed up.

    Parameters
    ----------
    source : Source
        An unopened source; it is opened and closed here.
    duration_s : float, optional
        Stop after this many seconds of streaming.
    out : text stream, optional
        Where the one-line-per-stream announcement and the summary go (default stdout).

    Returns
    -------
    dict
        Samples pushed per stream name.
    """
    from acquisition.lsl import Outlet  # noqa: PLC0415

    if duration_s is not None and not duration_s > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {duration_s}")
    out = sys.stdout if out is None else out
    counts: dict[str, int] = {}
    with source:
        outlets = {info.name: Outlet(info) for info in source.streams}
        for info in source.streams:
            labels = ",".join(info.ch_names[:16]) + (",..." if info.n_chans > 16 else "")
            rate = f"{info.sfreq:g} Hz" if info.sfreq else "irregular"
            print(
                f"publishing {info.name!r}: type {info.type}, {info.n_chans} ch ({labels}), "
                f"{rate}, source_id {info.source_id}",
                file=out,
                flush=True,
            )
        counts = dict.fromkeys(outlets, 0)
        timer = None
        if duration_s is not None:
            timer = threading.Timer(duration_s, source.stop)
            timer.daemon = True
            timer.start()
        start = time.monotonic()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: source.stop())
        try:
            for chunk in source:
                outlets[chunk.name].push(chunk)
                counts[chunk.name] += chunk.n_times
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if timer is not None:
                timer.cancel()
            for outlet in outlets.values():
                outlet.close()
        elapsed = time.monotonic() - start
    pushed = ", ".join(f"{name} {n} samples" for name, n in counts.items())
    stats = getattr(source, "stats", None)
    drops = (
        f"; {stats.n_dropped} dropped samples in {stats.n_drops} drops, {stats.n_gaps} gaps"
        if stats is not None
        else ""
    )
    print(f"streamed {elapsed:.1f} s: {pushed}{drops}", file=out, flush=True)
    return counts


def run(args: argparse.Namespace) -> int:
    from acquisition.brainflow_source import BrainFlowSource  # noqa: PLC0415
    from acquisition.lsl_inlet import quiet_liblsl  # noqa: PLC0415

    quiet_liblsl()  # liblsl's informational lines would bury the stream announcements

    source = BrainFlowSource(
        args.board,
        serial_port=args.serial_port,
        file=args.file,
        master_board=args.master_board,
        montage=parse_montage(args.montage),
        name=args.name,
        source_id=args.source_id,
    )
    publish(source, duration_s=args.duration)
    return 0
