"""``bci-affect convert``: an OpenBCI GUI text file, a BrainFlow CSV or an XDF file to XDF.

Reads the input with the project's sources (the same streams a live session of the board
gives) and writes every stream, empty ones included, with the project's XDF writer. The
output is written atomically: an interrupted conversion leaves no half-written file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bci_affect.cli._import_options import add_import_options, import_kwargs
from bci_affect.core.errors import ConfigError, FileFormatError

_EPILOG = """\
examples:
  bci-affect convert OpenBCI-RAW-2024-05-01.txt session.xdf
  bci-affect convert OpenBCI-RAW.txt session.xdf --montage Fp1,Fp2,F3,F4,C3,C4,O1,O2
  bci-affect convert BrainFlow-RAW.csv session.xdf --board cyton --overwrite

input formats (detected from the file's first bytes unless --format is given):
  openbci    OpenBCI GUI text recording (v6/v5 with a column row, or older without)
  brainflow  BrainFlow CSV (DataFilter.write_file or the file:// streamer); --board says
             which board wrote it (inferred from the column count when unambiguous)
  xdf        XDF (LabRecorder, bci-affect record); clock offsets are applied on reading

streams written (text inputs):
  EEG          type EEG, microvolts, labels from --montage or the board's defaults
  EEG-accel    type Accelerometer, AccX/AccY/AccZ in g (when the file has them)
  Markers      type Markers, JSON {"event": "marker", "value": v} (when the file has any)
  EEG-events   type Markers, JSON {"event": "dropped_samples", "stream": "EEG", "n": n, "t": t}
               (and duplicate_samples, reordered_samples: see the README)
timestamps: Unix seconds when the file has a usable timestamp column, else from 0 s (with a
warning saying why); evenly spaced along the board's sample counter, the host timestamps
deciding what the counter cannot show (whole counter cycles lost)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="OpenBCI GUI text / BrainFlow CSV / XDF to XDF",
        description="Convert a recording to XDF, with the streams and labels bci-affect uses "
        "live. Prints a one-line summary.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="recording to convert")
    p.add_argument("output", metavar="OUT.xdf", help="XDF file to write")
    add_import_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace OUT.xdf if it exists")
    p.set_defaults(func=run)


def _check_paths(src: Path, out: Path, overwrite: bool) -> None:
    if out.suffix.lower() != ".xdf":
        raise ConfigError(f"output {out} must end in .xdf")
    if out.exists():
        if out.is_dir():
            raise ConfigError(f"output {out} is a folder; give a file name ending in .xdf")
        if src.resolve() == out.resolve():
            raise ConfigError(f"input and output are the same file ({out}); choose another OUT")
        if not overwrite:
            raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: folder {out.parent} does not exist")


def open_input(path: Path, format: str = "auto", **options):  # noqa: A002  (--format)
    """The source reading ``path`` (a :class:`~bci_affect.core.source.Source`).

    ``format="auto"`` goes by the file's first bytes alone (any extension); ``options`` are
    :func:`acquisition.files.open_recording`'s ``board``, ``montage`` and ``sfreq``.
    """
    from acquisition.files import open_recording  # noqa: PLC0415
    from acquisition.paths import FORMATS, check_recording_path  # noqa: PLC0415
    from acquisition.textfiles import sniff_format  # noqa: PLC0415

    path = check_recording_path(path)
    if format == "auto":
        format = sniff_format(path)  # noqa: A001
        if format is None:
            raise FileFormatError(
                f"{path}: not a recognised recording (no 'XDF:' magic, no OpenBCI '%' header, "
                "not tab-separated BrainFlow numbers); pass --format if it is one of "
                f"{', '.join(FORMATS[1:])}"
            )
    return open_recording(path, format=format, **options)


def run(args: argparse.Namespace) -> int:
    from acquisition.xdf_writer import write_xdf  # noqa: PLC0415

    src, out = Path(args.input), Path(args.output)
    _check_paths(src, out, args.overwrite)
    source = open_input(src, **import_kwargs(args))
    with source:
        streams = list(source.streams)
        chunks = list(source)
    counts = dict.fromkeys(streams, 0)
    for chunk in chunks:
        counts[chunk.info] = counts.get(chunk.info, 0) + chunk.n_times
    write_xdf(
        out,
        chunks,
        streams=streams,
        header={"converted_from": src.name, "writer": "bci-affect convert"},
    )
    parts = []
    for info, n in counts.items():
        if info.sfreq > 0:
            parts.append(
                f"{info.name} {info.n_chans} ch {info.sfreq:g} Hz {n} samples "
                f"({n / info.sfreq:.1f} s)"
            )
        else:
            parts.append(f"{info.name} {n} {'event' if n == 1 else 'events'}")
    print(f"wrote {out}: {'; '.join(parts)}")
    return 0
