"""``bci-affect replay FILE``: replay a recording through the same source interface as a live
session.

Without ``--realtime`` the file is read in process as fast as possible, chunk by chunk, and
per-stream statistics are printed (samples, duration, effective rate, gaps, NaNs) with the
replay throughput. With ``--realtime`` every stream is published as an LSL outlet with its
recorded timing (``--speed`` scales it) until the recording ends or Ctrl-C, so any LSL tool
(``bci-affect run``, LabRecorder, MNE-LSL) sees a live session.
"""

from __future__ import annotations

import argparse
import threading
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay a recording in process, or in real time as LSL streams",
        description=(
            "Replay a recording (XDF, OpenBCI GUI .txt, BrainFlow .csv). By default the file "
            "is read in process as fast as possible and per-stream statistics are printed. "
            "With --realtime its streams are published as LSL outlets with the recorded "
            "timing, timestamps shifted onto the current LSL clock (the shift is printed and "
            "published in each stream's desc as replay_offset_s)."
        ),
    )
    p.add_argument("file", metavar="FILE", help="recording: .xdf, .xdfz, .txt or .csv")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="publish the streams as LSL outlets with the recorded timing",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="X",
        help="with --realtime: playback speed, 2 = twice as fast (default: 1)",
    )
    p.add_argument(
        "--streams",
        nargs="+",
        metavar="NAME",
        default=None,
        help="replay only these streams (names as `bci-affect inspect` lists them)",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        help="with --realtime: start over when the recording ends, until Ctrl-C",
    )
    p.add_argument(
        "--chunk-s",
        type=float,
        default=0.1,
        metavar="S",
        help="in process: seconds of recording per chunk (default: 0.1)",
    )
    p.add_argument(
        "--source-id-prefix",
        default=None,
        metavar="P",
        help="with --realtime: published source_id is P:<recorded source_id> "
        "(default: bci-affect-replay)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415

    if not args.realtime:
        for flag, value in (("--speed", args.speed), ("--loop", args.loop or None)):
            if value is not None:
                raise ConfigError(f"{flag} only applies with --realtime")
        if args.source_id_prefix is not None:
            raise ConfigError("--source-id-prefix only applies with --realtime")
        return replay_in_process(args.file, streams=args.streams, chunk_s=args.chunk_s)
    return _realtime(args)


def replay_in_process(
    file: str, *, streams: list[str] | None = None, chunk_s: float = 0.1, command: str = "replay"
) -> int:
    """Read ``file`` through its source as fast as possible; print per-stream statistics."""
    from acquisition.files import open_recording, summarize  # noqa: PLC0415
    from bci_affect.cli.inspect import format_table, recording_warnings  # noqa: PLC0415

    with recording_warnings(command):
        t0 = time.perf_counter()
        source = open_recording(file, streams=streams, chunk_s=chunk_s)
        with source:
            chunks = iter(source)
            # Scoring with a model (--model) plugs in here: the chunks go through the
            # pipeline, and the statistics below still count every chunk read.
            summaries = summarize(source, chunks)
        elapsed = time.perf_counter() - t0
    print(format_table(summaries))
    firsts = [s.first_timestamp for s in summaries if s.first_timestamp is not None]
    lasts = [s.last_timestamp for s in summaries if s.last_timestamp is not None]
    span = max(lasts) - min(firsts) if firsts else 0.0
    n = sum(s.n_samples for s in summaries)
    speed = f", {span / elapsed:.0f}x real time" if elapsed > 0 and span > 0 else ""
    print(f"\nreplayed {n} samples ({span:.3f} s of recording) in {elapsed:.3f} s{speed}")
    return 0


def _realtime(args: argparse.Namespace) -> int:
    from acquisition.player import DEFAULT_SOURCE_ID_PREFIX, Player  # noqa: PLC0415
    from bci_affect.cli.inspect import recording_warnings  # noqa: PLC0415

    speed = 1.0 if args.speed is None else args.speed
    with recording_warnings("replay"):
        player = Player(
            args.file,
            speed=speed,
            loop=args.loop,
            streams=args.streams,
            source_id_prefix=args.source_id_prefix or DEFAULT_SOURCE_ID_PREFIX,
        )
        player.start()
    try:
        print(
            f"publishing {len(player.streams)} streams of {args.file} on LSL at {speed:g}x, "
            f"timestamps shifted by {player.offset_s:+.6f} s"
            + (" (looping)" if args.loop else "")
            + "; Ctrl-C to stop",
            flush=True,
        )
        width = max(len(s.name) for s in player.streams)
        for s in player.streams:
            rate = f"{s.sfreq:g} Hz" if s.sfreq > 0 else "irregular"
            print(
                f"  {s.name.ljust(width)}  type {s.type}, {s.n_chans} ch, {rate}, "
                f"source_id {s.source_id}",
                flush=True,
            )
        while not player.join(timeout=0.5):
            pass
        # Keep the outlets a moment so consumers receive the last samples before they close.
        threading.Event().wait(1.0)
    finally:
        player.stop()
    total = sum(player.n_pushed.values())
    print(f"done: pushed {total} samples", flush=True)
    return 0
