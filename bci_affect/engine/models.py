"""Which model scores a session's windows, on which device.

A session's streams fix a :class:`StreamSignature` (EEG channels, sample rate, window length,
FaceFeatures channels). :class:`ModelProvider` turns it into a :class:`LoadedModel`, once per
signature (sessions with the same montage share one model, and so one batch):

- a model given as an :class:`~bci_affect.models.transfer.AffectModel` or a checkpoint folder
  is checked against the signature (:func:`~bci_affect.models.checkpoint.check_compatible`:
  EEG channels in the same order, the same rate and window length) and refused with a clear
  error when it does not fit;
- without a model, the bundled model (``bci_affect.pretrained.default_model_path()``) is used
  when it exists and fits the stream; otherwise an untrained
  :class:`~bci_affect.models.transfer.AffectModel` built from the stream's channel names,
  whose face teacher predicts from the circumplex prior over the expression probabilities
  (zero-label mode) and whose EEG student is vacuous. Its weights come from a fixed seed, so
  runs are reproducible. ``model="untrained"`` asks for that model whatever is bundled.

FaceFeatures channels are matched by name: the model reads the channels it was built with from
whatever order (or superset) the stream has.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bci_affect.core.chunk import StreamInfo
from bci_affect.core.errors import BciAffectError, ConfigError
from bci_affect.models.checkpoint import (
    CONFIG_FILE,
    check_compatible,
    load_checkpoint,
    read_checkpoint_config,
)
from bci_affect.models.teacher import EXPRESSION_CHANNELS
from bci_affect.models.transfer import AffectModel
from bci_affect.processors.windower import FACE_TYPE
from bci_affect.uncertainty.conformal import ConformalPredictor

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FACE_CHANNELS",
    "UNTRAINED_MODEL",
    "LoadedModel",
    "ModelProvider",
    "StreamSignature",
    "bundled_model_path",
    "checkpoint_signals",
    "resolve_device",
    "signature_from_streams",
    "untrained_model",
]

#: FaceFeatures channels of the untrained model when the session has no face stream yet.
DEFAULT_FACE_CHANNELS = ("face_present", "quality", *EXPRESSION_CHANNELS)

#: Description of the untrained model in prediction records.
UNTRAINED_MODEL = "untrained (face expression prior)"

#: ``model=`` values with a meaning: the bundled model (else untrained), and always untrained.
DEFAULT = "default"
UNTRAINED = "untrained"

#: Seed of the untrained model's weights (reproducible runs).
UNTRAINED_SEED = 0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or CUDA when available, else the CPU.

    Raises
    ------
    ConfigError
        An invalid device name, or CUDA asked for without CUDA.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"invalid device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available; use 'cpu'")
    return dev


@dataclass(frozen=True)
class StreamSignature:
    """What a model must fit: the session's EEG and FaceFeatures layout.

    Parameters
    ----------
    eeg_ch_names : tuple of str
    sfreq : float
        EEG sample rate in Hz.
    n_times : int
        Samples per window.
    face_ch_names : tuple of str or None
        FaceFeatures channels; ``None`` when the session has no face stream.
    """

    eeg_ch_names: tuple[str, ...]
    sfreq: float
    n_times: int
    face_ch_names: tuple[str, ...] | None = None


def signature_from_streams(
    streams: Sequence[StreamInfo], window_s: float, *, eeg_stream: str | None = None
) -> StreamSignature | None:
    """The signature of a session's streams; ``None`` when there is no EEG stream among them."""
    eeg = next(
        (
            s
            for s in streams
            if (s.name == eeg_stream if eeg_stream is not None else s.type.upper() == "EEG")
        ),
        None,
    )
    if eeg is None or eeg.sfreq <= 0:
        return None
    face = next((s for s in streams if s.type == FACE_TYPE), None)
    return StreamSignature(
        eeg_ch_names=eeg.ch_names,
        sfreq=float(eeg.sfreq),
        n_times=int(round(window_s * eeg.sfreq)),
        face_ch_names=face.ch_names if face is not None else None,
    )


def bundled_model_path() -> Path | None:
    """The bundled model's checkpoint folder, or ``None`` while this copy has none."""
    try:
        from bci_affect.pretrained import default_model_path  # noqa: PLC0415
    except ImportError:
        return None
    try:
        path = Path(default_model_path())
    except Exception as exc:  # noqa: BLE001  (a missing bundle must not stop a live session)
        logger.debug("no bundled model: %s", exc)
        return None
    return path if (path / CONFIG_FILE).is_file() else None


def checkpoint_signals(path: str | os.PathLike):
    """The :class:`~bci_affect.processors.SignalsConfig` a model was trained with
    (``metadata.features.signals``, written by ``bci-affect train``); ``None`` when the
    checkpoint does not record one."""
    _, doc = read_checkpoint_config(path)
    features = (doc.get("metadata") or {}).get("features")
    signals = features.get("signals") if isinstance(features, dict) else None
    if not signals:
        return None
    from bci_affect.training.inputs import signals_config_from_dict  # noqa: PLC0415

    try:
        return signals_config_from_dict(signals)
    except ConfigError as exc:
        raise ConfigError(
            f"model {path}: its recorded signals settings are invalid: {exc}"
        ) from None


def untrained_model(signature: StreamSignature, *, label_scheme: str = "quadrant") -> AffectModel:
    """A fresh :class:`AffectModel` for these streams (zero-label mode, fixed seed)."""
    from bci_affect.models.teacher import n_classes  # noqa: PLC0415

    face = signature.face_ch_names or DEFAULT_FACE_CHANNELS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        model = AffectModel(
            len(signature.eeg_ch_names),
            n_classes(label_scheme),
            face_ch_names=face,
            eeg_ch_names=signature.eeg_ch_names,
            sfreq=signature.sfreq,
            n_times=signature.n_times,
            label_scheme=label_scheme,
        )
    return model.eval()


@dataclass(eq=False)
class LoadedModel:
    """A model ready to score windows of one signature.

    Attributes
    ----------
    model : AffectModel
        In eval mode, on ``device``.
    name : str
        Description written into every prediction (checkpoint path or "untrained ...").
    conformal : ConformalPredictor or None
        The fitted conformal predictor (sets are computed per window by the engine, so that
        randomised sets do not depend on how windows were batched).
    """

    model: AffectModel
    name: str
    device: torch.device
    conformal: ConformalPredictor | None = None
    _face_cols: dict = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.class_names

    @property
    def needs_raw(self) -> bool:
        return self.model.config.eeg_inputs in ("raw", "both")

    @property
    def face_ch_names(self) -> tuple[str, ...]:
        return self.model.config.face_ch_names

    def face_columns(self, stream_names: tuple[str, ...]) -> np.ndarray | None:
        """Columns of a face frame, in the model's channel order; ``None``: already in order.

        Raises
        ------
        ConfigError
            The stream lacks channels the model reads.
        """
        cols = self._face_cols.get(stream_names, False)
        if cols is not False:
            return cols
        want = self.face_ch_names
        if stream_names == want:
            cols = None
        else:
            pos = {n: i for i, n in enumerate(stream_names)}
            missing = [c for c in want if c not in pos]
            if missing:
                raise ConfigError(
                    f"model {self.name} reads FaceFeatures channels that the face stream lacks: "
                    f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}; use the "
                    "face pipeline the model was trained with, or retrain"
                )
            cols = np.array([pos[c] for c in want], dtype=np.intp)
        self._face_cols[stream_names] = cols
        return cols


class ModelProvider:
    """One :class:`LoadedModel` per stream signature (see the module docstring).

    Parameters
    ----------
    model : AffectModel, path-like, "default", "untrained" or None
        A model, a checkpoint folder, ``None`` / ``"default"`` for the bundled model (falling
        back to an untrained one), or ``"untrained"`` for the untrained model whatever is
        bundled (the face expression prior alone).
    device : str or torch.device, optional
        ``None``: CUDA when available, else the CPU.
    """

    def __init__(
        self,
        model: AffectModel | str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = resolve_device(device)
        if model is not None and not isinstance(model, AffectModel | str | os.PathLike):
            raise ConfigError(
                f"model must be an AffectModel, a checkpoint folder or None, got "
                f"{type(model).__name__}"
            )
        if isinstance(model, str) and model in (UNTRAINED, DEFAULT):
            model = None if model == DEFAULT else model
        elif isinstance(model, str | os.PathLike):
            read_checkpoint_config(model)  # a clear error now rather than at the first window
        self._model = model
        self._cache: dict[StreamSignature, LoadedModel] = {}
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """What was asked for: a checkpoint path, "model object", "untrained" or "default"."""
        if self._model is None:
            return DEFAULT
        if isinstance(self._model, AffectModel):
            return "model object"
        return str(self._model)

    def get(self, signature: StreamSignature) -> LoadedModel:
        """The model for ``signature`` (built or loaded on first use, then cached).

        Raises
        ------
        ConfigError
            A given model does not fit the streams (channels, rate, window length).
        """
        with self._lock:
            loaded = self._cache.get(signature)
            if loaded is None:
                loaded = self._load(signature)
                self._cache[signature] = loaded
            return loaded

    def _check_face(self, loaded: LoadedModel, signature: StreamSignature) -> None:
        if signature.face_ch_names is not None:
            loaded.face_columns(signature.face_ch_names)

    def _load(self, sig: StreamSignature) -> LoadedModel:
        m = self._model
        if isinstance(m, str) and m == UNTRAINED:
            return self._untrained(sig)
        if isinstance(m, AffectModel):
            check_compatible(
                m.config,
                eeg_ch_names=sig.eeg_ch_names,
                sfreq=sig.sfreq,
                n_times=sig.n_times,
                source="the model",
            )
            m.to(self.device).eval()
            loaded = LoadedModel(m, f"{type(m).__name__} (given)", self.device, m.conformal)
            self._check_face(loaded, sig)
            return loaded
        if m is not None:
            return self._from_checkpoint(Path(m), sig, str(m))
        path = bundled_model_path()
        if path is not None:
            try:
                return self._from_checkpoint(path, sig, f"bundled ({path.name})")
            except BciAffectError as exc:  # does not fit, or a broken install: say so, go on
                logger.warning(
                    "the bundled model does not fit this session's streams (%s); using an "
                    "untrained model that predicts from the face expression prior",
                    exc,
                )
        return self._untrained(sig)

    def _untrained(self, sig: StreamSignature) -> LoadedModel:
        model = untrained_model(sig).to(self.device)
        logger.info(
            "scoring with an untrained model built from the stream's channels (%d EEG, %s)",
            len(sig.eeg_ch_names),
            f"{len(sig.face_ch_names)} face channels" if sig.face_ch_names else "no face stream",
        )
        return LoadedModel(model, UNTRAINED_MODEL, self.device, None)

    def _from_checkpoint(self, path: Path, sig: StreamSignature, name: str) -> LoadedModel:
        model = load_checkpoint(
            path,
            eeg_ch_names=sig.eeg_ch_names,
            sfreq=sig.sfreq,
            n_times=sig.n_times,
            device=self.device,
        )
        loaded = LoadedModel(model, name, self.device, model.conformal)
        self._check_face(loaded, sig)
        return loaded
