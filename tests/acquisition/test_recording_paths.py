"""``acquisition.paths``: the leaf module that breaks the files <-> xdf import circle."""

from __future__ import annotations

import subprocess
import sys

import pytest

import acquisition.files
import acquisition.paths
from acquisition.paths import RecordingNotFoundError, check_recording_path, recording_extension


def test_readers_do_not_import_the_dispatcher(shared_data):
    """``acquisition.xdf`` and ``acquisition.textfiles`` need only ``acquisition.paths``: a
    fresh interpreter that reads an XDF and a text file with them never imports
    ``acquisition.files`` (before, xdf imported it on every read, and files imported xdf)."""
    xdf = shared_data / "xdf" / "minimal.xdf"
    txt = shared_data / "openbci" / "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
    code = (
        "import sys\n"
        "from acquisition.xdf import XdfSource\n"
        "from acquisition.textfiles import OpenBciTextSource\n"
        f"with XdfSource({str(xdf)!r}) as s: n = sum(c.n_times for c in s)\n"
        f"with OpenBciTextSource({str(txt)!r}) as s: s.streams\n"
        "print(n, 'acquisition.files' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["18", "False"]


def test_files_re_exports_the_path_helpers(tmp_path):
    assert acquisition.files.check_recording_path is check_recording_path
    assert acquisition.files.RecordingNotFoundError is RecordingNotFoundError
    assert acquisition.files.RECORDING_EXTENSIONS is acquisition.paths.RECORDING_EXTENSIONS
    assert recording_extension("a/B.XDF.GZ") == ".xdf.gz" and recording_extension("x") == ""
    (tmp_path / "ses-01.xdf").write_bytes(b"XDF:")
    with pytest.raises(RecordingNotFoundError, match=r"ses-02\.xdf does not exist.*ses-01\.xdf"):
        check_recording_path(tmp_path / "ses-02.xdf")
    with pytest.raises(RecordingNotFoundError, match="is a folder"):
        check_recording_path(tmp_path)
