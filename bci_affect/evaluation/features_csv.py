"""Plain feature tables: published EEG feature sets evaluated on equal terms.

A feature table is a CSV file with a header row; the columns ``subject``, ``trial`` and
``label`` (any order, names case-insensitive) and then one numeric column per feature::

    subject,trial,label,Fp1_alpha,Fp2_alpha,...
    s01,1,HVHA,3.21,3.05,...

One row is one window; the rows of a trial are in time order. ``trial`` is unique within a
subject (any text). ``label`` is any text or number: numbers are ordered numerically, the class
names of a rating scheme (``LVLA``, ``LVHA``, ``HVLA``, ``HVHA``; ``low_valence``,
``high_valence``...) keep that scheme's order, other text is ordered alphabetically. Empty
cells, ``NA`` and ``NaN`` are missing values (filled with the training mean by the models).

The benchmark scores such a table with the same folds, the same EEG-only models (the EEG
student network on the features, logistic regression, majority class, chance) and the same
active-learning policies that need no second modality (random, student entropy), so a
published feature set and the project's band features can be compared on one footing.
:func:`write_features_csv` exports the band features of recorded sessions in this format.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.evaluation.data import EvalSet
from bci_affect.models.teacher import LABEL_SCHEMES

logger = logging.getLogger(__name__)

__all__ = ["REQUIRED_COLUMNS", "load_features_csv", "write_features_csv"]

#: Columns every feature table needs.
REQUIRED_COLUMNS = ("subject", "trial", "label")

_MISSING = {"", "na", "nan", "n/a", "null", "none"}


def _class_order(labels: list[str]) -> tuple[str, ...]:
    uniq = sorted(set(labels))
    for names in LABEL_SCHEMES.values():
        if set(uniq) == set(names):
            return tuple(names)
    try:
        nums = {u: float(u) for u in uniq}
    except ValueError:
        return tuple(uniq)
    return tuple(sorted(uniq, key=lambda u: nums[u]))


def load_features_csv(path: str | Path) -> EvalSet:
    """Read a feature table.

    Parameters
    ----------
    path : str or Path
        CSV file (comma-separated, header row; see the module docstring).

    Returns
    -------
    EvalSet
        ``eeg_de`` of shape ``(n_rows, n_features, 1)``; ``source`` ``"features"``.

    Raises
    ------
    FileFormatError
        The file is missing, has no header, lacks a required column, has no feature column,
        or a feature cell is not a number (the message names the line and the column).
    ConfigError
        Fewer than two classes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"--features {path}: no such file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise FileFormatError(f"{path}: empty file; expected a header row")
            names = [h.strip() for h in header]
            lower = [h.lower() for h in names]
            missing = [c for c in REQUIRED_COLUMNS if c not in lower]
            if missing:
                raise FileFormatError(
                    f"{path}: missing column(s) {', '.join(missing)}; a feature table has the "
                    "columns subject, trial, label, then one numeric column per feature "
                    f"(header: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})"
                )
            if len(set(lower)) != len(lower):
                dup = sorted({h for h in lower if lower.count(h) > 1})
                raise FileFormatError(f"{path}: duplicate column(s) {', '.join(dup)}")
            pos = {c: lower.index(c) for c in REQUIRED_COLUMNS}
            feat_cols = [i for i, h in enumerate(lower) if h not in REQUIRED_COLUMNS]
            if not feat_cols:
                raise FileFormatError(f"{path}: no feature column after subject, trial, label")
            subjects, trials, labels, rows = [], [], [], []
            for line_no, rec in enumerate(reader, start=2):
                if not rec or all(not c.strip() for c in rec):
                    continue
                if len(rec) != len(names):
                    raise FileFormatError(
                        f"{path}, line {line_no}: {len(rec)} cells for {len(names)} columns"
                    )
                sid, tid, lab = (rec[pos[c]].strip() for c in REQUIRED_COLUMNS)
                if not sid or not tid or not lab:
                    raise FileFormatError(
                        f"{path}, line {line_no}: subject, trial and label must not be empty"
                    )
                values = []
                for i in feat_cols:
                    cell = rec[i].strip()
                    if cell.lower() in _MISSING:
                        values.append(math.nan)
                        continue
                    try:
                        values.append(float(cell))
                    except ValueError:
                        raise FileFormatError(
                            f"{path}, line {line_no}, column {names[i]!r}: {cell!r} is not a "
                            "number (features must be numeric; leave a cell empty if missing)"
                        ) from None
                subjects.append(sid)
                trials.append(tid)
                labels.append(lab)
                rows.append(values)
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise FileFormatError(f"{path}: not a valid CSV file ({exc})") from None
    if not rows:
        raise FileFormatError(f"{path}: no data rows")
    classes = _class_order(labels)
    if len(classes) < 2:
        raise ConfigError(f"{path}: every row has the label {classes[0]!r}; need two classes")
    index = {c: i for i, c in enumerate(classes)}
    x = np.asarray(rows, dtype=np.float64)
    if np.isinf(x).any():
        raise FileFormatError(f"{path}: infinite feature values; use finite numbers or leave empty")
    subj = np.asarray(subjects, dtype=str)
    t_start = np.zeros(len(rows))
    for s in np.unique(subj):
        m = subj == s
        t_start[m] = np.arange(int(m.sum()), dtype=np.float64)
    feat_names = tuple(names[i] for i in feat_cols)
    return EvalSet(
        eeg_de=x.astype(np.float32)[:, :, None],
        labels=np.array([index[lab] for lab in labels], dtype=np.int64),
        subject=subj,
        session=subj.copy(),
        trial=np.asarray(trials, dtype=str),
        t_start=t_start,
        # consecutive rows of a subject count as overlapping windows (for queries spread in time)
        t_end=t_start + 2.0,
        class_names=classes,
        feature_names=feat_names,
        ch_names=feat_names,
        bands=("value",),
        label_scheme=None,
        source="features",
        info={"features_csv": str(path), "n_features": len(feat_names)},
    )


def write_features_csv(es: EvalSet, path: str | Path) -> Path:
    """Write the band features of an :class:`EvalSet` as a feature table.

    Columns ``subject``, ``trial``, ``label`` (the class name), then one column per feature
    (``<channel>_<band>``), one row per window in the set's order; values with 9 significant
    digits (float32 round-trips exactly).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = es.eeg_de.reshape(len(es), -1)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["subject", "trial", "label", *es.feature_names])
        for i in range(len(es)):
            w.writerow(
                [
                    es.subject[i],
                    es.trial[i],
                    es.class_names[int(es.labels[i])],
                    *("" if not np.isfinite(v) else f"{v:.9g}" for v in x[i]),
                ]
            )
    tmp.replace(path)
    return path
