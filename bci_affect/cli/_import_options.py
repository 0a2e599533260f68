"""The options for reading text recordings, shared by every command that opens a file.

``convert``, ``inspect`` and ``replay`` add them with :func:`add_import_options` and pass
:func:`import_kwargs` to :func:`acquisition.files.open_recording`, so a BrainFlow CSV whose
column count fits several boards (a Cyton+Daisy and the synthetic board both write 32
columns) reads the same way everywhere: ``--board cyton-daisy``.
"""

from __future__ import annotations

import argparse
from typing import Any

from acquisition.paths import FORMATS

#: The attribute names :func:`add_import_options` sets on the parsed arguments.
IMPORT_OPTIONS = ("format", "board", "montage", "sfreq")


def add_import_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--format``, ``--board``, ``--montage`` and ``--sfreq`` (one argument group)."""
    g = parser.add_argument_group(
        "reading text recordings (OpenBCI GUI .txt, BrainFlow .csv; XDF needs none of these)"
    )
    g.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="input format (default: from the extension and the file's first line)",
    )
    g.add_argument(
        "--board",
        metavar="B",
        help="BrainFlow board that wrote a CSV: cyton, cyton-daisy, ganglion, synthetic, ... "
        "(default: inferred from the column count when only one board fits)",
    )
    g.add_argument(
        "--montage",
        metavar="LABELS",
        help="comma-separated EEG labels, one per channel (default: the board's electrode "
        "names, else EEG1, EEG2, ...)",
    )
    g.add_argument(
        "--sfreq",
        type=float,
        metavar="HZ",
        help="sample rate of a text file, when its header lacks it or the board was "
        "reconfigured (default: from the file or the board)",
    )


def import_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`acquisition.files.open_recording` from parsed options.

    Options the parser did not define (a command without them) and options left at their
    default are left out.
    """
    out: dict[str, Any] = {}
    for name in IMPORT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and not (name == "format" and value == "auto"):
            out[name] = value
    return out
