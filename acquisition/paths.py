"""Recording paths: which extensions bci-affect reads, and a clear error for a missing file.

A leaf module (it imports nothing from :mod:`acquisition`), so that the readers
(:mod:`acquisition.xdf`, :mod:`acquisition.textfiles`) and the dispatcher that picks one
(:mod:`acquisition.files`) can all use it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from bci_affect.core.errors import BciAffectError

__all__ = [
    "FORMATS",
    "RECORDING_EXTENSIONS",
    "RecordingNotFoundError",
    "check_recording_path",
    "recording_extension",
]

#: Extensions :func:`acquisition.files.open_recording` knows, and what reads them.
RECORDING_EXTENSIONS = {
    ".xdf": "XDF (LabRecorder, bci-affect record)",
    ".xdfz": "gzip-compressed XDF",
    ".xdf.gz": "gzip-compressed XDF",
    ".txt": "OpenBCI GUI text recording",
    ".csv": "BrainFlow CSV recording",
}

#: Readers :func:`acquisition.files.open_recording` can be told to use (``format=``, the
#: command-line ``--format``); ``auto`` chooses from the extension and the content.
FORMATS = ("auto", "openbci", "brainflow", "xdf")


class RecordingNotFoundError(BciAffectError, FileNotFoundError):
    """The recording path does not exist or is not a file."""


def recording_extension(path: str | os.PathLike) -> str:
    """The lower-case extension of ``path``, ``".xdf.gz"`` counted as one."""
    name = Path(path).name.lower()
    if name.endswith(".xdf.gz"):
        return ".xdf.gz"
    return Path(name).suffix


def check_recording_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, after checking it names an existing file.

    Raises
    ------
    RecordingNotFoundError
        Naming the path and, when its folder exists, the recordings in it.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise RecordingNotFoundError(f"{path} is a folder; give the path of a recording file")
    hint = ""
    if path.parent.is_dir():
        near = sorted(
            p.name
            for p in path.parent.iterdir()
            if p.is_file() and recording_extension(p) in RECORDING_EXTENSIONS
        )
        if near:
            shown = ", ".join(near[:5]) + (", ..." if len(near) > 5 else "")
            hint = f"; recordings in {path.parent}: {shown}"
    raise RecordingNotFoundError(f"recording {path} does not exist{hint}")
