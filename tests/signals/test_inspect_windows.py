"""``bci-affect inspect --windows`` on the real OpenBCI recording."""

import json

from bci_affect.cli import main

OPENBCI = "openbci/OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"


def test_inspect_windows_json_and_plot(shared_data, tmp_path, capsys):
    png = tmp_path / "q.png"
    rc = main(
        ["inspect", str(shared_data / OPENBCI), "--windows", "--json", "--line-freq", "60",
         "--plot", str(png)]
    )  # fmt: skip
    assert rc == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) > 150  # 4 s windows every 0.5 s over ~90 s
    first = records[0]
    for key in ("t_end", "quality", "blink_score", "muscle_score", "bad_channels", "channels"):
        assert key in first
    assert [c["name"] for c in first["channels"]][:2] == ["Fp1", "Fp2"]
    blinky = [r["blink"] for r in records if r["t_rel"] <= 20]
    closed = [r["blink"] for r in records if 30 <= r["t_rel"] <= 76]
    assert sum(blinky) > len(blinky) / 2 and not any(closed)
    assert png.stat().st_size > 10_000


def test_inspect_windows_without_eeg_stream_is_one_line(shared_data, capsys):
    rc = main(["inspect", str(shared_data / "xdf/minimal.xdf"), "--windows", "--eeg-stream", "X"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "available" in err[0]
