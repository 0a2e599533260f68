"""The README's first command runs on the bundled sample recording."""

from bci_affect.cli import main
from bci_affect.cli.demo import SAMPLE


def test_demo_runs_on_the_bundled_recording(capsys):
    assert SAMPLE.is_file() and SAMPLE.stat().st_size < 5_000_000
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "EEG" in out and "replayed" in out
