"""SimulatorConfig: documentation, TOML round trip, and errors that name the key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from acquisition.simulator import (
    SimulatorConfig,
    config_to_toml,
    describe_fields,
    load_config,
)
from acquisition.simulator.config import SECTIONS
from bci_affect.cli import main
from bci_affect.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_every_parameter_is_documented_with_a_unit_and_in_the_docs():
    doc = (ROOT / "docs" / "simulator.md").read_text(encoding="utf-8")
    rows = describe_fields()
    assert len(rows) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values())
    for section, key, _default, unit, text in rows:
        assert isinstance(unit, str)
        assert len(text) > 10, f"{section}.{key} has no documentation"
        assert re.search(rf"`{key}`", doc), f"docs/simulator.md does not document {section}.{key}"


def test_defaults_round_trip_through_toml(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text(config_to_toml(), encoding="utf-8")
    assert load_config(path) == SimulatorConfig()
    assert load_config(None) == SimulatorConfig()


def test_changed_values_round_trip(tmp_path):
    cfg = SimulatorConfig().replace(
        eeg={"ch_names": ["F3", "F4", "Pz"], "sfreq_hz": 500},
        session={"n_trials": 5, "trial_s": [12, 15]},
        labels={"wrong_label_rate": 0.2},
    )
    assert cfg.eeg.sfreq_hz == 500.0 and isinstance(cfg.eeg.sfreq_hz, float)
    assert cfg.session.trial_s == (12.0, 15.0)
    path = tmp_path / "sim.toml"
    path.write_text(config_to_toml(cfg, comments=False), encoding="utf-8")
    assert load_config(path) == cfg
    assert SimulatorConfig.from_dict(cfg.to_dict()) == cfg


def test_partial_file_keeps_other_defaults(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text("[affect]\nresponder_prob = 0.0\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.affect.responder_prob == 0.0
    assert cfg.eeg == SimulatorConfig().eeg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[eeg]\nalpha_pk = 3\n", r"unknown key eeg\.alpha_pk.*valid keys of \[eeg\]"),
        ("[eegg]\nsfreq_hz = 3\n", r"unknown section \[eegg\]"),
        ('[eeg]\nsfreq_hz = "fast"\n', r"eeg\.sfreq_hz must be a number \(Hz\)"),
        ("[eeg]\nsfreq_hz = true\n", r"eeg\.sfreq_hz must be a number"),
        ("[eeg]\nsfreq_hz = 32\n", r"eeg\.sfreq_hz must be >= 64"),
        ("[session]\nn_trials = 2.5\n", r"session\.n_trials must be an integer"),
        ("[session]\nn_trials = 0\n", r"session\.n_trials must be >= 1"),
        ("[session]\ntrial_s = [30, 20]\n", r"session\.trial_s must be \[low, high\]"),
        ("[session]\ntrial_s = [30]\n", r"session\.trial_s must be a list of 2 values"),
        ("[session]\nrating_s = 25\n", r"session\.rating_s .* shorter than the shortest trial"),
        ("[labels]\nwrong_label_rate = 1.5\n", r"labels\.wrong_label_rate must be in \[0, 1\]"),
        ('[eeg]\nch_names = ["Fp1", "Fp1"]\n', r"eeg\.ch_names must be unique; repeated: Fp1"),
        ("[artifacts]\nline_freq_hz = 130\n", r"artifacts\.line_freq_hz .* below Nyquist"),
        ("[affect]\nlow_range = [2, 7]\n", r"affect\.low_range .* below affect\.high_range"),
        ("[face]\njitter_s = 0.05\n", r"face\.jitter_s must be below a quarter frame"),
        ("eeg = 3\n", r"\[eeg\] must be a table"),
        ("[eeg\n", r"not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_and_replace_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown section 'video'"):
        SimulatorConfig().replace(video={"fps": 3})
    with pytest.raises(ConfigError, match=r"face\.fps must be > 0"):
        SimulatorConfig().replace(face={"fps": 0})


def test_cli_reports_config_errors_on_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[face]\nfps_hz = 30\n", encoding="utf-8")
    rc = main(["simulate", "--subjects", "1", "--out", str(tmp_path / "o"), "--config", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "unknown key face.fps_hz" in err
    assert not (tmp_path / "o").exists()


def test_cli_print_config_is_loadable(tmp_path, capsys):
    assert main(["simulate", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "[labels]" in text and "# " in text
    path = tmp_path / "printed.toml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path) == SimulatorConfig()


def test_cli_needs_subjects_and_out(capsys):
    assert main(["simulate", "--subjects", "2"]) == 2
    assert "give --subjects N and --out DIR" in capsys.readouterr().err
