"""Where calibration data lives and which model a subject scores with.

Shared by ``calibrate`` (which writes subjects' models) and the commands that score with one
(``run --subject``), so that neither imports the other for it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bci_affect.core.errors import ConfigError

__all__ = [
    "DATA_ENV",
    "add_subject_arguments",
    "apply_subject_model",
    "default_data_dir",
    "store_path",
    "subject_model",
]

#: Environment variable naming the calibration data folder.
DATA_ENV = "BCI_AFFECT_DATA"


def default_data_dir() -> Path:
    """``$BCI_AFFECT_DATA``, else ``$XDG_DATA_HOME/bci-affect`` (``~/.local/share/bci-affect``)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "bci-affect"


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / "calibration.sqlite"


def subject_model(subject: str, data_dir: Path | None = None) -> Path:
    """The latest model version of ``subject`` (what ``run --subject`` scores with).

    Raises
    ------
    ConfigError
        No calibration data, or no model for the subject.
    """
    from calibration.store import LabelStore  # noqa: PLC0415

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    path = store_path(data_dir)
    if not path.exists():
        raise ConfigError(
            f"no calibration data in {data_dir}; calibrate first (bci-affect calibrate "
            f"--subject {subject} ...) or name the folder with --data-dir"
        )
    with LabelStore(path) as store:
        row = store.latest_model(subject)
    if row is None or not row.path:
        raise ConfigError(
            f"subject {subject!r} has no model in {data_dir}; run bci-affect calibrate "
            f"--subject {subject} first"
        )
    if not Path(row.path).is_dir():
        raise ConfigError(
            f"subject {subject!r}'s model v{row.version} is missing ({row.path}); restore it "
            "or calibrate again"
        )
    return Path(row.path)


def add_subject_arguments(p: argparse.ArgumentParser) -> None:
    """``--subject`` and ``--data-dir`` for commands that score with a subject's model."""
    p.add_argument(
        "--subject",
        metavar="S",
        help="score with this subject's latest calibrated model (unless --model is given)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=f"calibration data folder (default: ${DATA_ENV} or ~/.local/share/bci-affect)",
    )


def apply_subject_model(args: argparse.Namespace) -> None:
    """``args.model`` := the subject's latest model when ``--subject`` is given without one."""
    if getattr(args, "subject", None) and not args.model:
        args.model = str(subject_model(args.subject, args.data_dir))
