"""``bci-affect inspect FILE [--json]``: what a recording holds, stream by stream.

For every stream: name, type, channel count, labels and units, sample format, nominal and
effective rate, first and last timestamp, duration, sample count, gaps (steps longer than two
nominal sample periods: how many, and the seconds missing), NaN values, timestamps that run
backwards, and for string (marker) streams the number of markers and the first few.

``--json`` prints one JSON object per stream (JSON lines) with the fields of
:data:`acquisition.files.SUMMARY_FIELDS` plus ``file``:

``file`` (str), ``stream`` (name), ``type``, ``source_id``, ``channel_format``, ``n_chans``,
``ch_names`` (list), ``units`` (list), ``nominal_srate`` (Hz, 0 = irregular),
``effective_srate`` (Hz, (n-1)/duration; null below 2 samples), ``n_samples``,
``first_timestamp`` / ``last_timestamp`` (s, LSL clock; null when empty), ``duration_s``,
``n_gaps`` / ``gap_s`` (null for irregular streams), ``nan_count`` (null for strings),
``backward_steps``, ``n_markers`` / ``first_markers`` (string streams; null otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from bci_affect.cli._import_options import add_import_options, import_kwargs

if TYPE_CHECKING:  # imported for type hints only; run() imports the real thing
    from acquisition.files import StreamSummary


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="streams of a recording: rates, duration, gaps, NaNs, markers",
        description=(
            "Print what a recording (XDF, OpenBCI GUI .txt, BrainFlow .csv) holds, stream by "
            "stream: type, channels, units, format, nominal and effective rate, first/last "
            "timestamp, duration, samples, gaps (steps > 2 sample periods), NaN values and "
            "the first markers of string streams."
        ),
    )
    p.add_argument("file", metavar="FILE", help="recording: .xdf, .xdfz, .txt or .csv")
    add_import_options(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per stream (JSON lines; fields in the README) instead of a table",
    )
    p.add_argument(
        "--windows",
        action="store_true",
        help="per-window signal quality and band power of the EEG stream (4 s windows, 0.5 s hop)",
    )
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="plot signals shaded by quality and band power over time (implies --windows)",
    )
    p.add_argument(
        "--line-freq",
        type=float,
        choices=[50.0, 60.0],
        default=50.0,
        help="mains frequency for the notch and the line-noise score (default: 50)",
    )
    p.add_argument(
        "--eeg-stream", metavar="NAME", help="EEG stream to window (default: first of type EEG)"
    )
    p.add_argument(
        "--reference",
        default=None,
        help="re-reference windows to 'average' or a channel name (default: as recorded)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from acquisition.files import open_recording, summarize  # noqa: PLC0415

    with recording_warnings("inspect"):
        source = open_recording(args.file, **import_kwargs(args))
        with source:
            chunks = list(source)
            summaries = summarize(source, chunks)
    if args.windows or args.plot:
        return _windows(args, chunks)
    if args.json:
        for s in summaries:
            print(json.dumps({"file": str(args.file), **s.to_dict()}, allow_nan=False))
    else:
        print(format_report(str(args.file), summaries))
    return 0


def _windows(args: argparse.Namespace, chunks: list) -> int:
    """Per-window quality and band power of the EEG stream (``--windows`` / ``--plot``)."""
    from bci_affect.core import pick_stream, read_all  # noqa: PLC0415
    from bci_affect.processors import SignalsConfig  # noqa: PLC0415
    from bci_affect.signals_report import (  # noqa: PLC0415
        format_windows,
        plot_signals,
        window_records,
    )

    streams = read_all(chunks)
    info = pick_stream(
        [c.info for c in streams.values()],
        name=args.eeg_stream,
        type=None if args.eeg_stream else "EEG",
    )
    eeg = streams[info.name]
    face = next((c for c in streams.values() if c.info.type == "FaceFeatures"), None)
    config = SignalsConfig.make(line_hz=args.line_freq, reference=args.reference)
    records = list(window_records(eeg, config, face=face))
    if args.json:
        for r in records:
            print(json.dumps({"file": str(args.file), "stream": eeg.name, **r}, allow_nan=False))
    else:
        print(format_windows(records))
    if args.plot:
        plot_signals(eeg, records, args.plot, config=config)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def recording_warnings(command: str) -> Iterator[None]:
    """Print warnings raised while reading a recording as one line each on stderr."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"bci-affect {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _num(value: float | None, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def format_table(summaries: Sequence[StreamSummary]) -> str:
    """One line per stream: type, channels, format, rates, samples, duration, gaps, NaNs."""
    header = (
        "stream",
        "type",
        "ch",
        "format",
        "nominal Hz",
        "effective Hz",
        "samples",
        "duration s",
        "gaps",
        "gap s",
        "NaN",
    )
    rows = [header]
    for s in summaries:
        rows.append(
            (
                s.stream,
                s.type,
                str(s.n_chans),
                s.channel_format,
                _num(s.nominal_srate, "g") if s.nominal_srate > 0 else "irregular",
                _num(s.effective_srate, ".3f"),
                str(s.n_samples),
                _num(s.duration_s, ".3f"),
                _num(s.n_gaps, "d"),
                _num(s.gap_s, ".3f"),
                _num(s.nan_count, "d"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    left = {0, 1, 3}
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _shorten(items: Sequence[str], n: int = 16) -> str:
    shown = " ".join(items[:n])
    return shown + (f" ... (+{len(items) - n})" if len(items) > n else "")


def format_report(path: str, summaries: Sequence[StreamSummary]) -> str:
    """The human-readable ``inspect`` report: a heading, the table, then per-stream details."""
    firsts = [s.first_timestamp for s in summaries if s.first_timestamp is not None]
    lasts = [s.last_timestamp for s in summaries if s.last_timestamp is not None]
    heading = f"{path}: {len(summaries)} stream{'s' if len(summaries) != 1 else ''}"
    if firsts:
        heading += f", {max(lasts) - min(firsts):.3f} s ({min(firsts):.3f} -> {max(lasts):.3f} s)"
    lines = [heading, "", format_table(summaries), ""]
    for s in summaries:
        span = (
            f"{s.first_timestamp:.3f} -> {s.last_timestamp:.3f} s"
            if s.first_timestamp is not None
            else "no samples"
        )
        lines.append(f"{s.stream} (source_id {s.source_id or '-'!s}): {span}")
        units = sorted({u for u in s.units if u})
        lines.append(
            f"  channels: {_shorten(s.ch_names)}" + (f" [{', '.join(units)}]" if units else "")
        )
        if s.backward_steps:
            lines.append(f"  timestamps running backwards: {s.backward_steps}")
        if s.n_markers is not None:
            quoted = ", ".join(repr(m if len(m) <= 60 else m[:57] + "...") for m in s.first_markers)
            lines.append(f"  markers: {s.n_markers}" + (f"; first: {quoted}" if quoted else ""))
    return "\n".join(lines).rstrip()
