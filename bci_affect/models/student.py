"""The EEG student: an encoder over differential entropy and/or the filtered window, and its head.

Two input branches, either or both (``inputs="de" | "raw" | "both"``):

- ``"de"``: differential entropy per channel and band, ``(B, n_chans, n_bands)`` (delta, theta,
  alpha, beta, gamma by default), standardised per channel × band and sent through a two-layer
  MLP;
- ``"raw"``: the filtered window ``(B, n_chans, n_times)`` in µV through a compact convolutional
  net in the style of EEGNet (Lawhern et al. 2018, as implemented in braindecode's
  ``EEGNetv4``): temporal convolution, depthwise spatial convolution over all channels, a
  separable convolution and an adaptive pooling, so any window length works.

The channel count and montage come from the stream (``ch_names``); checkpoints store them and
refuse a stream with other channels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bci_affect.core.errors import ConfigError, ShapeError

logger = logging.getLogger(__name__)

__all__ = [
    "BANDS",
    "STUDENT_INPUTS",
    "CompactConvNet",
    "DEEncoder",
    "EEGStudent",
    "LogisticBaseline",
]

#: The differential-entropy bands, in order.
BANDS = ("delta", "theta", "alpha", "beta", "gamma")

#: Input branches of :class:`EEGStudent`. ``"sites"`` is the differential-entropy branch fed
#: the montage-free, session-normalised virtual-site features (:mod:`bci_affect.processors.sites`):
#: ``n_chans`` is then the number of virtual sites, whatever the board.
STUDENT_INPUTS = ("de", "raw", "both", "sites")


class DEEncoder(nn.Module):
    """MLP over differential entropy per channel × band.

    Parameters
    ----------
    n_chans, n_bands : int
        Input shape ``(B, n_chans, n_bands)``.
    hidden, out_features : int
        Hidden and output widths.
    """

    def __init__(
        self, n_chans: int, n_bands: int, *, hidden: int = 64, out_features: int = 32
    ) -> None:
        super().__init__()
        self.n_chans, self.n_bands = n_chans, n_bands
        self.register_buffer("input_mean", torch.zeros(n_chans, n_bands))
        self.register_buffer("input_std", torch.ones(n_chans, n_bands))
        self.fc1 = nn.Linear(n_chans * n_bands, hidden)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, de: Tensor) -> Tensor:
        """``f`` of shape ``(B, out_features)`` from ``de`` of shape ``(B, n_chans, n_bands)``.

        Non-finite values (channels left out as bad) become 0 *after* the standardisation:
        the training mean of that channel and band, not an extreme value.
        """
        x = torch.nan_to_num(
            (de - self.input_mean) / self.input_std, nan=0.0, posinf=0.0, neginf=0.0
        ).flatten(1)  # (B, C * n_bands)
        x = F.relu(F.linear(x, self.fc1.weight, self.fc1.bias))  # (B, hidden)
        return F.relu(F.linear(x, self.fc2.weight, self.fc2.bias))  # (B, out_features)


class CompactConvNet(nn.Module):
    """A compact EEGNet-style encoder of the filtered window.

    Parameters
    ----------
    n_chans : int
        EEG channels.
    out_features : int
        Output width.
    n_filters : int
        Temporal filters ``F1``.
    depth_multiplier : int
        Spatial filters per temporal filter ``D``.
    temporal_kernel : int
        Temporal kernel length in samples (odd; about 1/8 s is a good default).
    pool_len : int
        Time steps kept by the final adaptive pooling.
    """

    def __init__(
        self,
        n_chans: int,
        *,
        out_features: int = 32,
        n_filters: int = 8,
        depth_multiplier: int = 2,
        temporal_kernel: int = 31,
        pool_len: int = 8,
    ) -> None:
        super().__init__()
        f1, f2 = n_filters, n_filters * depth_multiplier
        k = int(temporal_kernel) | 1  # odd, so "same" padding is symmetric
        self.n_chans = n_chans
        self.register_buffer("input_mean", torch.zeros(n_chans, 1))
        self.register_buffer("input_std", torch.ones(n_chans, 1))
        self.temporal = nn.Conv2d(1, f1, (1, k), padding=(0, k // 2), bias=False)
        self.bn1 = nn.BatchNorm2d(f1)
        self.spatial = nn.Conv2d(f1, f2, (n_chans, 1), groups=f1, bias=False)
        self.bn2 = nn.BatchNorm2d(f2)
        self.separable_depth = nn.Conv2d(f2, f2, (1, 15), padding=(0, 7), groups=f2, bias=False)
        self.separable_point = nn.Conv2d(f2, f2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(f2)
        self.pool = nn.AdaptiveAvgPool2d((1, pool_len))
        self.fc = nn.Linear(f2 * pool_len, out_features)

    def forward(self, raw: Tensor) -> Tensor:
        """``f`` of shape ``(B, out_features)`` from ``raw`` of shape ``(B, n_chans, n_times)`` in µV.

        Non-finite samples become 0 after the standardisation (the channel's training mean).
        """
        x = torch.nan_to_num(
            (raw - self.input_mean) / self.input_std, nan=0.0, posinf=0.0, neginf=0.0
        ).unsqueeze(1)  # (B, 1, C, T)
        x = self.bn1(self.temporal(x))  # (B, F1, C, T)
        x = F.elu(self.bn2(self.spatial(x)))  # (B, F2, 1, T)
        x = F.avg_pool2d(x, (1, 4), ceil_mode=True)  # (B, F2, 1, T / 4)
        x = F.elu(self.bn3(self.separable_point(self.separable_depth(x))))  # (B, F2, 1, T / 4)
        x = self.pool(x).flatten(1)  # (B, F2 * pool_len)
        return F.relu(self.fc(x))  # (B, out_features)


class EEGStudent(nn.Module):
    """EEG student: encoder ``f_s`` and its own task head.

    Parameters
    ----------
    n_chans : int
        EEG channels (``len(ch_names)``).
    n_outputs : int
        Task classes.
    n_times : int, optional
        Samples per window of the filtered input (needed for ``"raw"`` and ``"both"``; the net
        itself accepts any length, checkpoints use it to refuse a different window).
    ch_names : sequence of str, optional
        EEG channel labels from the stream.
    sfreq : float, optional
        Sample rate in Hz of the filtered input; sets the temporal kernel to about 1/8 s.
    inputs : {"de", "raw", "both", "sites"}
        Which input branches to use (``"sites"``: the DE branch over virtual sites).
    n_bands : int
        Bands of the differential-entropy input.
    embed_dim : int
        Width of ``f_s``.
    de_hidden : int
        Hidden width of the DE branch.
    n_filters, depth_multiplier, pool_len : int
        Sizes of the convolutional branch (see :class:`CompactConvNet`).
    head_hidden : int
        Hidden width of the two-layer student head.
    dropout : float
        Dropout before the head (training only).
    """

    def __init__(
        self,
        n_chans: int,
        n_outputs: int,
        *,
        n_times: int | None = None,
        ch_names: Sequence[str] | None = None,
        sfreq: float | None = None,
        inputs: str = "de",
        n_bands: int = len(BANDS),
        embed_dim: int = 32,
        de_hidden: int = 64,
        n_filters: int = 8,
        depth_multiplier: int = 2,
        pool_len: int = 8,
        head_hidden: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if inputs not in STUDENT_INPUTS:
            raise ConfigError(
                f"unknown student inputs {inputs!r}; valid: {', '.join(STUDENT_INPUTS)}"
            )
        if n_chans < 1 or n_outputs < 2:
            raise ConfigError(f"need n_chans >= 1 and n_outputs >= 2, got {n_chans}, {n_outputs}")
        names = (
            tuple(ch_names)
            if ch_names is not None
            else tuple(f"EEG{i + 1}" for i in range(n_chans))
        )
        if len(names) != n_chans:
            raise ConfigError(f"ch_names has {len(names)} names but n_chans is {n_chans}")
        if inputs in ("raw", "both") and n_times is None:
            raise ConfigError(f"student inputs {inputs!r} need n_times (samples per window)")
        if sfreq is not None and not sfreq > 0:
            raise ConfigError(f"sfreq must be > 0 Hz, got {sfreq}")
        self.n_chans, self.n_outputs, self.n_times, self.n_bands = (
            n_chans,
            n_outputs,
            n_times,
            n_bands,
        )
        self.ch_names, self.sfreq, self.inputs, self.embed_dim = names, sfreq, inputs, embed_dim
        self.de_encoder = self.raw_encoder = None
        widths = 0
        if inputs in ("de", "both", "sites"):
            self.de_encoder = DEEncoder(n_chans, n_bands, hidden=de_hidden, out_features=embed_dim)
            widths += embed_dim
        if inputs in ("raw", "both"):
            kernel = max(3, round(sfreq / 8)) if sfreq else 31
            self.raw_encoder = CompactConvNet(
                n_chans,
                out_features=embed_dim,
                n_filters=n_filters,
                depth_multiplier=depth_multiplier,
                temporal_kernel=kernel,
                pool_len=pool_len,
            )
            widths += embed_dim
        self.merge = nn.Linear(widths, embed_dim) if inputs == "both" else None
        self.dropout = dropout
        self.head_hidden = nn.Linear(embed_dim, head_hidden)
        self.head_out = nn.Linear(head_hidden, n_outputs)

    def _check(self, de: Tensor | None, raw: Tensor | None) -> None:
        if self.de_encoder is not None:
            if de is None:
                raise ShapeError(
                    f"this student reads differential entropy (inputs={self.inputs!r}); pass eeg_de"
                )
            if de.ndim != 3 or de.shape[1:] != (self.n_chans, self.n_bands):
                raise ShapeError(
                    f"eeg_de must have shape (B, {self.n_chans}, {self.n_bands}), got {tuple(de.shape)}"
                )
        if self.raw_encoder is not None:
            if raw is None:
                raise ShapeError(
                    f"this student reads the filtered window (inputs={self.inputs!r}); pass eeg_raw"
                )
            if raw.ndim != 3 or raw.shape[1] != self.n_chans:
                raise ShapeError(
                    f"eeg_raw must have shape (B, {self.n_chans}, n_times), got {tuple(raw.shape)}"
                )

    @torch.no_grad()
    def fit_input_stats(self, de: Tensor | None = None, raw: Tensor | None = None) -> None:
        """Set the standardisation of each branch from training windows (finite values only)."""
        if self.de_encoder is not None and de is not None and de.shape[0] > 1:
            x = de.double()
            ok = torch.isfinite(x).all(dim=(1, 2))
            if ok.sum() > 1:
                mean, std = x[ok].mean(0), x[ok].std(0)
                self.de_encoder.input_mean.copy_(mean.float())
                self.de_encoder.input_std.copy_(
                    torch.where(std > 1e-6, std, torch.ones_like(std)).float()
                )
        if self.raw_encoder is not None and raw is not None and raw.shape[0] > 1:
            x = raw.double()
            ok = torch.isfinite(x).all(dim=(1, 2))
            if ok.sum() > 1:
                x = x[ok].transpose(0, 1).reshape(self.n_chans, -1)  # (C, N * T)
                mean, std = x.mean(1, keepdim=True), x.std(1, keepdim=True)
                self.raw_encoder.input_mean.copy_(mean.float())
                self.raw_encoder.input_std.copy_(
                    torch.where(std > 1e-6, std, torch.ones_like(std)).float()
                )

    def encode(self, de: Tensor | None = None, raw: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Student feature and input validity.

        Parameters
        ----------
        de : Tensor, shape (B, n_chans, n_bands), optional
        raw : Tensor, shape (B, n_chans, n_times), optional

        Returns
        -------
        f_s : Tensor, shape (B, embed_dim)
        finite : Tensor of bool, shape (B,)
            Windows whose inputs were all finite (non-finite values are replaced by the
            training mean of their input, 0 after the standardisation, and the caller should
            give such windows no evidence).
        """
        self._check(de, raw)
        feats = []
        finite = None
        if self.de_encoder is not None:
            ok = torch.isfinite(de).flatten(1).all(dim=1)  # (B,)
            finite = ok
            feats.append(self.de_encoder(de))
        if self.raw_encoder is not None:
            ok = torch.isfinite(raw).flatten(1).all(dim=1)  # (B,)
            finite = ok if finite is None else finite & ok
            feats.append(self.raw_encoder(raw))
        f_s = (
            feats[0] if self.merge is None else F.relu(self.merge(torch.cat(feats, dim=-1)))
        )  # (B, D)
        return f_s, finite

    def logits(self, f_s: Tensor) -> Tensor:
        """Task logits of the student head, shape ``(B, K)``."""
        if self.training and self.dropout > 0:
            f_s = F.dropout(f_s, self.dropout, True)
        h = F.relu(
            F.linear(f_s, self.head_hidden.weight, self.head_hidden.bias)
        )  # (B, head_hidden)
        return F.linear(h, self.head_out.weight, self.head_out.bias)  # (B, K)

    def forward(self, de: Tensor | None = None, raw: Tensor | None = None) -> Tensor:
        """Task logits, shape ``(B, K)``."""
        f_s, _ = self.encode(de, raw)
        return self.logits(f_s)


class LogisticBaseline(nn.Module):
    """Multinomial logistic regression over standardised differential entropy (a baseline).

    Parameters
    ----------
    n_chans : int
        EEG channels.
    n_outputs : int
        Classes.
    n_bands : int
        Bands per channel.
    """

    def __init__(self, n_chans: int, n_outputs: int, *, n_bands: int = len(BANDS)) -> None:
        super().__init__()
        self.n_chans, self.n_outputs, self.n_bands = n_chans, n_outputs, n_bands
        self.register_buffer("input_mean", torch.zeros(n_chans, n_bands))
        self.register_buffer("input_std", torch.ones(n_chans, n_bands))
        self.linear = nn.Linear(n_chans * n_bands, n_outputs)

    def forward(self, de: Tensor) -> Tensor:
        x = ((de - self.input_mean) / self.input_std).flatten(1)  # (B, C * n_bands)
        return self.linear(x)  # (B, K)
