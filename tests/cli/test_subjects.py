"""``bci_affect.cli._subjects``: where calibration data lives, shared by ``calibrate`` and
``run`` so that ``run`` never imports ``calibrate`` (the import circle between them is gone)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from bci_affect.cli._subjects import (
    DATA_ENV,
    add_subject_arguments,
    apply_subject_model,
    default_data_dir,
)
from bci_affect.core.errors import ConfigError


def test_run_does_not_import_calibrate():
    code = "import sys, bci_affect.cli.run; print('bci_affect.cli.calibrate' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False"]


def test_subject_arguments_and_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    add_subject_arguments(p)
    args = p.parse_args(["--subject", "S01", "--data-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="no calibration data in .*calibrate first"):
        apply_subject_model(args)
    args = p.parse_args(["--subject", "S01", "--model", "default"])
    apply_subject_model(args)  # --model wins: nothing looked up
    assert args.model == "default"
