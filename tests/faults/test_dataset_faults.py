"""``bci-affect train`` and ``bci-affect benchmark`` on a dataset folder with damaged session
files: an XDF cut off part way, one cut off before its first stream, garbage bytes and a
zero-length file.

The run goes on with the sessions that can be read: each damaged file is named in one warning
line on stderr, the files skipped and the file used only in part are listed in the output and in
the results (the model's metadata, the benchmark's JSON and report), and a folder holding
nothing usable stops with one clear error line. Real XDF files from the project's simulator.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bci_affect.cli import main

from ..training.sessions import TINY_SESSION

#: The damaged files, relative to the dataset folder.
CUT = "sub-01/ses-02.xdf"  # the first 60 % of a session: used as far as it goes
SKIPPED = {
    "sub-03/ses-01.xdf": "holds no readable XDF stream header",  # cut before any stream
    "sub-04/ses-01.xdf": "is not an XDF file",  # garbage bytes
    "sub-05/ses-01.xdf": "the file is empty (0 bytes)",
}


@pytest.fixture(autouse=True)
def _one_thread():
    """The commands set torch's threads; the tests share the machine and the process."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _damage(folder: Path) -> None:
    """Add the damaged files of :data:`CUT` and :data:`SKIPPED` to a dataset folder."""
    good = (folder / "sub-01" / "ses-01.xdf").read_bytes()
    for rel in (CUT, *SKIPPED):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    (folder / CUT).write_bytes(good[: int(0.6 * len(good))])
    (folder / "sub-03/ses-01.xdf").write_bytes(good[:300])
    (folder / "sub-04/ses-01.xdf").write_bytes(np.random.default_rng(4).bytes(20_000))
    (folder / "sub-05/ses-01.xdf").write_bytes(b"")


@pytest.fixture(scope="session")
def damaged_dataset(tmp_path_factory) -> Path:
    """Two simulated subjects (``sub-0k/ses-01.xdf``) and the damaged files."""
    from acquisition.simulator import SimulatorConfig, simulate_dataset

    out = tmp_path_factory.mktemp("damaged-sim")
    config = SimulatorConfig().replace(session=TINY_SESSION, face={"fps": 5.0})
    simulate_dataset(2, out, seed=5, config=config)
    _damage(out)
    return out


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _check_warnings(err: str, folder: Path, command: str) -> None:
    """One warning line per damaged file, naming it and why."""
    assert "Traceback" not in err, err
    warned = [x for x in err.splitlines() if x.startswith(f"bci-affect {command}: warning: ")]
    for rel, why in SKIPPED.items():
        (line,) = [x for x in warned if str(folder / rel) in x]
        assert line.startswith(f"bci-affect {command}: warning: skipped {folder / rel}: {why}")
    (cut,) = [x for x in warned if str(folder / CUT) in x]
    assert cut.startswith(f"bci-affect {command}: warning: {folder / CUT} is truncated: ")


def _check_listed(data: dict, folder: Path) -> None:
    """The results name every file skipped and the file used in part."""
    assert data["n_files"] == 6
    skipped = {Path(s["file"]).relative_to(folder).as_posix(): s["reason"] for s in data["skipped"]}
    assert skipped.keys() == SKIPPED.keys()
    assert all(why in skipped[rel] for rel, why in SKIPPED.items())
    (partial,) = data["partial"]
    assert Path(partial["file"]) == folder / CUT and "is truncated" in partial["reason"]


@pytest.mark.slow
def test_train_goes_on_without_the_damaged_files_and_names_them(damaged_dataset, tmp_path):
    model = tmp_path / "model"
    rc, out, err = _run(
        "train", "--dataset", str(damaged_dataset), "--out", str(model), "--epochs", "1",
        "--line-freq", "60", "--threads", "1",
    )  # fmt: skip
    assert rc == 0, err
    _check_warnings(err, damaged_dataset, "train")
    names = ", ".join(str(damaged_dataset / rel) for rel in sorted(SKIPPED))
    listing = f"skipped 3 of 6 session files (unreadable or unlabelled): {names}"
    assert listing in err.splitlines() and listing in out.splitlines()
    assert f"used in part (truncated or corrupt): {damaged_dataset / CUT}" in out.splitlines()
    meta = json.loads((model / "config.json").read_text())["metadata"]["dataset"]
    _check_listed(meta, damaged_dataset)
    # the three readable sessions (one of them cut) made the model
    assert meta["n_sessions"] == 3
    assert sorted(meta["sessions"]) == ["sub-01/ses-01", "sub-01/ses-02", "sub-02/ses-01"]


@pytest.mark.slow
def test_benchmark_goes_on_without_the_damaged_files_and_names_them(damaged_dataset, tmp_path):
    report = tmp_path / "report"
    args = [
        "benchmark", "--dataset", str(damaged_dataset), "--tables", "main", "--folds", "2",
        "--epochs", "1", "--labels", "arousal", "--hop", "1", "--face-stride", "2",
        "--line-freq", "60", "--corrupt-noise-uv", "0", "--threads", "1",
        "--report", str(report), "--name", "damaged",
    ]  # fmt: skip
    rc, out, err = _run(*args, "--json")
    assert rc == 0, err
    _check_warnings(err, damaged_dataset, "benchmark")
    result = json.loads(out)
    _check_listed(result["data"], damaged_dataset)
    assert result["data"]["n_sessions"] == 3 and result["data"]["n_subjects"] == 2
    readme = (report / "README.md").read_text()
    for rel in (*SKIPPED, CUT):
        assert f"`{damaged_dataset / rel}`" in readme
    # the windows come from the cache the second time: the listing comes with them
    rc, out, err = _run(*args)
    assert rc == 0, err
    assert "windows from the cache" in err
    assert "when the windows were cut: skipped 3 of 6 session files" in err
    assert any(x.startswith("skipped 3 of 6 session files") for x in out.splitlines())


@pytest.mark.parametrize("command", ["train", "benchmark"])
def test_a_folder_of_only_damaged_files_stops_with_one_line(tmp_path, command):
    folder = tmp_path / "data"
    (folder / "sub-01").mkdir(parents=True)
    (folder / "sub-01" / "ses-01.xdf").write_bytes(b"XDF:" + np.random.default_rng(1).bytes(999))
    for rel in SKIPPED:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    (folder / "sub-04/ses-01.xdf").write_bytes(np.random.default_rng(4).bytes(2000))
    (folder / "sub-05/ses-01.xdf").write_bytes(b"")
    shutil.copy(folder / "sub-04/ses-01.xdf", folder / "sub-03/ses-01.xdf")
    extra = ["--out", str(tmp_path / "m")] if command == "train" else ["--no-cache"]
    rc, out, err = _run(command, "--dataset", str(folder), *extra)
    assert rc == 2 and out == ""
    last = err.splitlines()[-1]
    assert last.startswith(
        f"bci-affect {command}: error: none of the 4 session files can be used: "
        f"{folder / 'sub-01/ses-01.xdf'}: holds no readable XDF stream header"
    )
    assert last.endswith("(and 3 more); check them with `bci-affect inspect FILE`")
    assert sum("error" in x for x in err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m").exists()
