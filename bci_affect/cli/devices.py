"""``bci-affect devices``: the LSL streams visible now and the BrainFlow boards supported."""

from __future__ import annotations

import argparse
import json
import logging

from bci_affect.core.errors import ConfigError

logger = logging.getLogger(__name__)

EPILOG = """\
--json prints one JSON object per line:
  {"kind": "lsl_stream", "name", "type", "n_chans", "sfreq" (Hz, 0 = irregular),
   "channel_format", "source_id", "hostname", "uid"}
  {"kind": "brainflow_board", "name", "board_id"}
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "devices",
        help="list LSL streams on the network and supported BrainFlow boards",
        description="List the LSL streams visible now and the BrainFlow boards bci-affect "
        "supports.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds to listen for LSL streams (default 2)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(func=run)


def supported_boards() -> tuple[list[tuple[str, int | None]], str | None]:
    """``(name, board_id)`` of each supported BrainFlow board, and a note when unavailable."""
    try:
        from acquisition import brainflow_source  # noqa: PLC0415
    except ImportError as exc:
        return [], f"BrainFlow support is not available ({exc})"
    names = getattr(brainflow_source, "BOARD_NAMES", None)
    if names is None:
        return [], "BrainFlow support does not list its boards (no BOARD_NAMES)"
    ids = getattr(brainflow_source, "BOARD_IDS", None)
    if isinstance(names, dict):
        ids, names = names, list(names)
    ids = ids if isinstance(ids, dict) else {}
    return [(str(n), ids.get(n)) for n in names], None


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [("  " + fmt.format(*r)).rstrip() for r in [header, *rows]]


def run(args: argparse.Namespace) -> int:
    from acquisition.lsl_inlet import lsl_format_name, quiet_liblsl, resolve_streams  # noqa: PLC0415

    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if getattr(args, "log_level", "WARNING") != "DEBUG":
        quiet_liblsl()
    infos = sorted(resolve_streams(timeout_s=args.timeout), key=lambda i: (i.name(), i.uid()))
    boards, note = supported_boards()
    if note:
        logger.warning("%s", note)

    if args.json:
        for i in infos:
            row = {
                "kind": "lsl_stream",
                "name": i.name(),
                "type": i.type(),
                "n_chans": i.channel_count(),
                "sfreq": float(i.nominal_srate()),
                "channel_format": lsl_format_name(i.channel_format()),
                "source_id": i.source_id(),
                "hostname": i.hostname(),
                "uid": i.uid(),
            }
            print(json.dumps(row))
        for name, board_id in boards:
            print(json.dumps({"kind": "brainflow_board", "name": name, "board_id": board_id}))
        return 0

    print(f"LSL streams ({len(infos)} visible after {args.timeout:g} s):")
    if infos:
        rows = [
            [
                i.name(),
                i.type(),
                str(i.channel_count()),
                f"{i.nominal_srate():g} Hz" if i.nominal_srate() > 0 else "irregular",
                lsl_format_name(i.channel_format()),
                i.source_id(),
                i.hostname(),
            ]
            for i in infos
        ]
        header = ["NAME", "TYPE", "CH", "RATE", "FORMAT", "SOURCE_ID", "HOST"]
        print("\n".join(_table(rows, header)))
    else:
        print("  none (start one with `bci-affect stream --board synthetic`)")
    print()
    if boards:
        print("BrainFlow boards (bci-affect stream --board NAME):")
        rows = [[n, "" if b is None else str(b)] for n, b in boards]
        print("\n".join(_table(rows, ["NAME", "BOARD_ID"])))
    else:
        print(f"BrainFlow boards: none ({note})")
    return 0
