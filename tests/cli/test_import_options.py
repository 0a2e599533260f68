"""The import options (``--format``, ``--board``, ``--montage``, ``--sfreq``) on every command
that reads a file, and their one-line errors."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from bci_affect.cli import build_parser, main
from bci_affect.cli._import_options import IMPORT_OPTIONS, import_kwargs

N_TRUE = 1430  # 11.4 s of Cyton+Daisy at 125 Hz, 30 % of it lost
N_KEPT = 1001


@pytest.fixture(scope="module")
def daisy_csv(tmp_path_factory) -> Path:
    """A Cyton+Daisy BrainFlow CSV (32 columns, like the synthetic board's) with 30 % of
    the samples lost (so the rows' rate, 88 Hz, fits neither board's) and 3 packets written
    twice, through BrainFlow's own ``DataFilter.write_file``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brainflow.board_shim import BoardIds, BoardShim
        from brainflow.data_filter import DataFilter

    descr = BoardShim.get_board_descr(BoardIds.CYTON_DAISY_BOARD.value)
    pos = np.array([p for p in range(N_TRUE) if p % 10 not in (3, 4, 7)])
    assert pos.size == N_KEPT
    pos = np.insert(pos, [100, 500, 800], pos[[99, 499, 799]])  # repeated packets
    data = np.zeros((descr["num_rows"], pos.size))
    data[descr["package_num_channel"]] = (2 * pos) % 256
    data[descr["eeg_channels"]] = np.sin(np.arange(16)[:, None] + pos / 125.0)
    data[descr["timestamp_channel"]] = 1.7e9 + pos / 125.0 + 0.004
    path = tmp_path_factory.mktemp("cli") / "BrainFlow-RAW-daisy.csv"
    DataFilter.write_file(data, str(path), "w")
    return path


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"bci-affect {command}: error: "), err
    return err


def test_inspect_reads_a_daisy_csv_with_board(daisy_csv, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="acquisition.textfiles"):
        assert main(["inspect", "--board", "cyton-daisy", str(daisy_csv), "--json"]) == 0
    rows = {r["stream"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    eeg = rows["EEG"]
    assert eeg["n_chans"] == 16 and eeg["nominal_srate"] == 125.0
    assert eeg["n_samples"] == N_KEPT and eeg["backward_steps"] == 0
    assert eeg["duration_s"] == pytest.approx((N_TRUE - 1) / 125.0, abs=1e-3)
    assert eeg["ch_names"][:2] == ["Fp1", "Fp2"]
    # 2 gaps in every 10 samples, 3 duplicates
    assert rows["EEG-events"]["n_markers"] == 2 * N_TRUE // 10 + 3
    [summary] = [r.getMessage() for r in caplog.records if "sample counter" in r.getMessage()]
    assert "1004 rows -> 1001 samples in time order, 3 duplicate rows dropped" in summary


def test_replay_reads_a_daisy_csv_with_board(daisy_csv, capsys):
    assert main(["replay", "--board", "cyton-daisy", str(daisy_csv), "--streams", "EEG"]) == 0
    out = capsys.readouterr().out
    eeg = next(line.split() for line in out.splitlines() if line.startswith("EEG "))
    assert eeg[:3] == ["EEG", "EEG", "16"] and int(eeg[6]) == N_KEPT
    assert f"replayed {N_KEPT} samples" in out


@pytest.mark.lsl
def test_realtime_replay_reads_a_daisy_csv_with_board(daisy_csv, uid, capsys):
    argv = ["replay", str(daisy_csv), "--board", "cyton-daisy", "--realtime", "--speed", "16"]
    assert main([*argv, "--streams", "EEG", "--source-id-prefix", uid]) == 0
    out = capsys.readouterr().out
    assert f"source_id {uid}:BrainFlow:CytonDaisy:" in out
    assert f"done: pushed {N_KEPT} samples" in out


@pytest.mark.parametrize("command", ["inspect", "replay"])
def test_ambiguous_csv_without_board_is_one_line_and_status_2(daisy_csv, command, capsys):
    assert main([command, str(daisy_csv)]) == 2
    err = _one_error_line(capsys, command)
    assert "32 columns fit several BrainFlow boards" in err and "cyton_daisy" in err
    assert "(--board)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--board", "cytn"], "unknown BrainFlow board 'cytn'"),
        (["--board", "cyton"], r"32 tab-separated values per line, but board 'Cyton' writes 24"),
        (["--format", "openbci"], "not an OpenBCI GUI text file"),
        (["--board", "cyton-daisy", "--sfreq", "-5"], "--sfreq must be > 0 Hz, got -5.0"),
        (["--board", "cyton-daisy", "--montage", "a,b"], "montage gives 2 labels"),
    ],
)
def test_bad_import_options_are_one_line_and_status_2(daisy_csv, argv, message, capsys):
    for command in ("inspect", "replay"):
        assert main([command, str(daisy_csv), *argv]) == 2
        assert message.replace("\\", "") in _one_error_line(capsys, command)


def test_import_options_on_files_they_do_not_fit(shared_data, capsys):
    txt = shared_data / "openbci" / "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
    assert main(["inspect", str(txt), "--board", "cyton"]) == 2
    err = _one_error_line(capsys, "inspect")
    assert "--board applies to BrainFlow CSV files" in err and "OpenBCI GUI text file" in err
    xdf = shared_data / "xdf" / "minimal.xdf"
    assert main(["replay", str(xdf), "--montage", "a,b,c"]) == 2
    assert "--montage and --sfreq apply to text files" in _one_error_line(capsys, "replay")


def test_format_forces_the_reader(daisy_csv, tmp_path, capsys):
    renamed = tmp_path / "daisy.txt"  # a .txt extension would send it to the GUI reader
    renamed.write_bytes(daisy_csv.read_bytes())
    argv = ["inspect", str(renamed), "--json", "--format", "brainflow", "--board", "cyton-daisy"]
    assert main(argv) == 0
    eeg = next(r for r in map(json.loads, capsys.readouterr().out.splitlines()))
    assert eeg["stream"] == "EEG" and eeg["n_samples"] == N_KEPT


def test_one_helper_gives_every_command_the_same_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    argv = ["--format", "brainflow", "--board", "cyton-daisy", "--montage", "a", "--sfreq", "125"]
    want = {"format": "brainflow", "board": "cyton-daisy", "montage": "a", "sfreq": 125.0}
    for command, extra in (("convert", ["IN", "OUT.xdf"]), ("inspect", ["F"]), ("replay", ["F"])):
        args = sub[command].parse_args([*extra, *argv])
        assert import_kwargs(args) == want, command
        assert import_kwargs(sub[command].parse_args(extra)) == {}, command
    # train and benchmark read labelled XDF sessions only; their help says why
    for command in ("train", "benchmark"):
        if command not in sub:
            continue
        text = sub[command].format_help()
        assert "hold no trial or rating markers" in " ".join(text.split()), command
        assert not any(
            f"--{o}" in a.option_strings for a in sub[command]._actions for o in IMPORT_OPTIONS
        ), command
