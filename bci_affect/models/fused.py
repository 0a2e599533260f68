"""Eval-mode inference of :class:`~bci_affect.models.transfer.AffectModel` with folded weights.

At batch 1 a forward pass is a hundred tiny tensor ops, and each eager op costs several
microseconds of dispatch whatever its size: the number of ops sets the time. :class:`FusedWeights`
holds copies of the model's weights with the constant parts of the pass folded in, and
:func:`fused_forward` runs the same maths as the model's eager pass with fewer ops:

- the input standardisations (``(x - mean) / std``) are folded into the first linear layer
  of the teacher's frame encoder and of the student's differential-entropy branch
  (``W' = W / std``, ``b' = b - W' mean``); a non-finite DE value is replaced by its training
  mean, which is 0 after the standardisation, as in the eager pass;
- the teacher's gate is folded into the last layer of its head;
- the frame encoder carries extra pass-through columns (the expression probabilities, and the
  quality as ``relu(q) - relu(q - 1) = clamp(q, 0, 1)``), so that one masked sum over the frames
  feeds the mean pooling, the circumplex prior and the face reliability, and one matrix product
  turns it into the prior's numerator and the quality sum;
- the two prototype projections are one block-diagonal matrix product, the prototype
  similarity and the evidence ``exp(s / T) - exp(-1 / T) = exp(-1 / T) expm1((s + 1) / T)``
  one affine product, and both modalities' evidence, Dirichlet parameters and uncertainties are
  computed together on a ``(B, 2, K)`` tensor;
- the ``calibrated`` flag is read once per weight version, not once per pass.

The folded copies are plain attributes, never part of the state dict, so checkpoints stay plain
state dicts; :class:`FusedWeights` is rebuilt whenever a parameter or buffer changed in place
(tensor version counters), the model moved (``to``), loaded a state dict or left eval mode.
Outputs equal the eager pass to float32 rounding (about 1e-6).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: :class:`~bci_affect.models.transfer.AffectModel` and ``WindowBatch`` live in the module that
#: imports this one; they are annotated by these names so that the import goes one way.
AffectModel = torch.nn.Module
WindowBatch = Any

_VERSION = operator.attrgetter("_version")

__all__ = ["FusedWeights", "fold_standardisation", "fused_forward", "fusable"]


def fold_standardisation(
    weight: Tensor, bias: Tensor, mean: Tensor, std: Tensor
) -> tuple[Tensor, Tensor]:
    """Fold ``x -> (x - mean) / std`` into the linear layer that follows it.

    Parameters
    ----------
    weight : Tensor, shape (out, in)
    bias : Tensor, shape (out,)
    mean, std : Tensor, shape (in,) (or any shape with ``in`` elements, flattened)

    Returns
    -------
    weight_t : Tensor, shape (in, out)
        ``(W / std).T``, contiguous (the layout ``torch.addmm`` reads fastest).
    bias : Tensor, shape (out,)
        ``b - (W / std) @ mean``. Computed in float64, returned in ``weight``'s dtype.
    """
    w = weight.double() / std.double().reshape(1, -1)
    b = bias.double() - w @ mean.double().reshape(-1)
    return w.t().contiguous().to(weight.dtype), b.to(weight.dtype)


def _t(weight: Tensor) -> Tensor:
    return weight.detach().t().contiguous()


class FusedWeights:
    """Folded weights of one :class:`AffectModel` state (see the module docstring).

    Parameters
    ----------
    model : AffectModel
        The model whose current parameters and buffers are folded.
    """

    def __init__(self, model: AffectModel) -> None:
        self._tensors = [*model.parameters(), *model.buffers()]
        self.key = self._key()
        with torch.inference_mode(False), torch.no_grad():
            self._fold(model)

    def _key(self) -> int:
        # version counters only grow: their sum changes whenever any tensor changed in place
        return sum(map(_VERSION, self._tensors))

    def stale(self) -> bool:
        """Whether a parameter or buffer changed in place since the weights were folded."""
        return self._key() != self.key

    def _fold(self, model: AffectModel) -> None:
        teacher, student, protos = model.teacher, model.student, model.prototypes
        k = teacher.n_outputs
        ref = teacher.frame_encoder.weight
        dt, dev = ref.dtype, ref.device
        # teacher: frame encoder with the face standardisation folded in, plus pass-through
        # columns whose ReLU gives the prior's clamp_min(expression, 0) and, as
        # relu(q) - relu(q - 1), the quality clamp(q, 0, 1), so that one masked sum over the
        # frames feeds the mean pooling, the prior and the face reliability
        frame_w, frame_b = fold_standardisation(
            teacher.frame_encoder.weight,
            teacher.frame_encoder.bias,
            teacher.input_mean,
            teacher.input_std,
        )  # (C, H), (H,)
        n_face, hidden = frame_w.shape
        expr = list(teacher._expr_idx) if teacher.use_prior else []
        q = teacher._quality_idx
        extra = [*expr, *((q, q) if q is not None else ())]
        sel = frame_w.new_zeros(n_face, len(extra))
        for j, c in enumerate(extra):
            sel[c, j] = 1.0
        sel_b = frame_w.new_zeros(len(extra))
        if q is not None:
            sel_b[-1] = -1.0
        self.frame_w = torch.cat([frame_w, sel], dim=1).contiguous()  # (C, H + E)
        self.frame_b = torch.cat([frame_b, sel_b])
        width = hidden + len(extra)
        ww = teacher.window_encoder.weight.detach()  # (D, 2H): [mean, max]
        window_w = ww.new_zeros(2 * width, ww.shape[0])
        window_w[:hidden] = ww[:, :hidden].t()
        window_w[width : width + hidden] = ww[:, hidden:].t()
        self.window_w = window_w  # (2 (H + E), D), zero rows for the extra columns
        self.window_b = teacher.window_encoder.bias.detach().clone()
        # frame sums -> [prior numerator (K) | quality sum (1)]
        self.use_prior = teacher.use_prior
        self.has_quality = q is not None
        self.summary_w = self.summary_b = None
        if extra:
            summary_w = ww.new_zeros(width, k + 1)
            summary_b = ww.new_zeros(k + 1)
            if expr:
                summary_w[hidden : hidden + len(expr), :k] = teacher.prior_matrix.detach()
                summary_b[:k] = 1e-6
            if q is not None:
                summary_w[width - 2, k] = 1.0
                summary_w[width - 1, k] = -1.0
            self.summary_w, self.summary_b = summary_w, summary_b
        if not teacher.use_prior:
            self.uniform_logits = torch.full((1, k), -math.log(k), dtype=dt, device=dev)
        layers = teacher.head.layers
        gate = teacher.head_gate.detach() if teacher.head_gate is not None else None
        self.head = []
        for i, lin in enumerate(layers):
            w, b = lin.weight.detach(), lin.bias.detach()
            if i == len(layers) - 1 and gate is not None:  # gate * head(f_t)
                w, b = w * gate, b * gate
            self.head.append((w.t().contiguous(), b.clone()))
        # student: DE branch with the EEG standardisation folded in
        de = student.de_encoder
        if de is not None:
            self.de_mean = de.input_mean.detach().clone()
            self.de_w1, self.de_b1 = fold_standardisation(
                de.fc1.weight, de.fc1.bias, de.input_mean, de.input_std
            )
            self.de_w2, self.de_b2 = _t(de.fc2.weight), de.fc2.bias.detach().clone()
        self.head_hidden_w = _t(student.head_hidden.weight)
        self.head_hidden_b = student.head_hidden.bias.detach().clone()
        self.head_out_w = _t(student.head_out.weight)
        self.head_out_b = student.head_out.bias.detach().clone()
        # prototypes: both projections as one block-diagonal product
        fw, ew = protos.face_proj.weight.detach(), protos.eeg_proj.weight.detach()
        p, d_face, d_eeg = fw.shape[0], fw.shape[1], ew.shape[1]
        block = fw.new_zeros(d_face + d_eeg, 2 * p)
        block[:d_face, :p] = fw.t()
        block[d_face:, p:] = ew.t()
        self.proj_w = block
        self.proj_b = torch.cat([protos.face_proj.bias.detach(), protos.eeg_proj.bias.detach()])
        self.proto_dim = p
        # evidence exp(s / T) - exp(-1 / T) = c * expm1(y), y = (s + 1) / T in [0, 2 / T]
        inv_t = 1.0 / float(protos.temperature)
        self.protos_t = (protos.unit_prototypes_t().detach() * inv_t).contiguous()
        self.protos_b = torch.full((k,), inv_t, dtype=ref.dtype, device=ref.device)
        self.y_max = 2.0 * inv_t
        self.exp_floor = math.exp(-inv_t)
        self.calibrated = bool(model.calibrated)
        self.k = k
        self.k_tensor = torch.tensor(float(k), dtype=dt, device=dev)


def fusable(model: AffectModel, batch: WindowBatch) -> bool:
    """Whether :func:`fused_forward` handles ``batch``: it has face frames and every EEG input
    the student reads (the model also runs it only in eval mode without autograd).
    """
    student = model.student
    return (
        batch.face is not None
        and (student.de_encoder is None or batch.eeg_de is not None)
        and (student.raw_encoder is None or batch.eeg_raw is not None)
    )


def fused_forward(
    model: AffectModel, w: FusedWeights, batch: WindowBatch, with_injected: bool
) -> dict[str, Any]:
    """The fields of :class:`~bci_affect.models.transfer.AffectOutput` for ``batch``.

    Same maths as ``AffectModel.forward`` in eval mode (see the module docstring); the caller
    checks :func:`fusable` and adds the conformal sets.
    """
    teacher, student = model.teacher, model.student
    face = batch.face
    teacher._check(face)
    b, n_frames, n_face = face.shape
    # --- teacher ------------------------------------------------------------------------------
    mask = batch.face_mask
    m = mask if mask is not None and mask.dtype == torch.bool else teacher.frame_mask(face, mask)
    if m.shape != face.shape[:2]:
        teacher.frame_mask(face, m)  # raises the shape error
    mf = m.unsqueeze(-1).to(face.dtype)  # (B, T, 1)
    clean = torch.nan_to_num(face, nan=0.0, posinf=0.0, neginf=0.0)  # (B, T, C)
    # frames without a face go through the encoder too; the pooling multiplies them by 0
    h = torch.addmm(w.frame_b, clean.reshape(b * n_frames, n_face), w.frame_w).relu_()
    h = h.view(b, n_frames, -1).mul_(mf)  # (B, T, H + E)
    sums = h.sum(dim=1)  # (B, H + E)
    count = mf.sum(dim=1).clamp_min_(1.0)  # (B, 1) frames with a face
    pooled = torch.cat([sums / count, h.amax(dim=1)], dim=-1)  # (B, 2 (H + E))
    f_t = torch.addmm(w.window_b, pooled, w.window_w).relu_()  # (B, D)
    available = m.any(dim=1)  # (B,)
    k = w.k
    if w.summary_w is not None:
        summary = torch.addmm(w.summary_b, sums, w.summary_w)  # (B, K + 1)
    # the face reliability: the mean quality over the frames with a face
    rel_t = (summary[:, k:] / count).view(b) if w.has_quality else available.to(face.dtype)
    if w.use_prior:
        prior_logits = torch.log_softmax(summary[:, :k].log(), dim=-1)  # (B, K)
    else:
        prior_logits = w.uniform_logits
    x = f_t
    last = len(w.head) - 1
    for i, (wt, bias) in enumerate(w.head):
        if i < last:
            x = torch.addmm(bias, x, wt).relu_()
        else:
            teacher_logits = torch.addmm(bias, x, wt).add_(prior_logits)  # (B, K)
    # --- student ------------------------------------------------------------------------------
    feats = []
    finite = None
    de = batch.eeg_de
    if student.de_encoder is not None:
        student._check(de, batch.eeg_raw)
        ok = (de - de).eq(0.0)  # (B, C, n_bands): x - x is NaN for NaN and +-inf
        finite = ok.all(dim=(1, 2))
        x = torch.where(ok, de, w.de_mean).view(b, -1)  # bad values -> their training mean
        x = torch.addmm(w.de_b1, x, w.de_w1).relu_()
        feats.append(torch.addmm(w.de_b2, x, w.de_w2).relu_())  # (B, D)
    if student.raw_encoder is not None:
        raw = batch.eeg_raw
        student._check(batch.eeg_de, raw)
        ok = torch.isfinite(raw).flatten(1).all(dim=1)
        finite = ok if finite is None else finite & ok
        feats.append(student.raw_encoder(raw))
    f_s = feats[0] if student.merge is None else F.relu(student.merge(torch.cat(feats, dim=-1)))
    x = torch.addmm(w.head_hidden_b, f_s, w.head_hidden_w).relu_()
    student_logits = torch.addmm(w.head_out_b, x, w.head_out_w)  # (B, K)
    if batch.eeg_quality is not None:
        q = torch.nan_to_num(batch.eeg_quality, nan=0.0).clamp_(0.0, 1.0)
        rel_s = torch.where(finite, q, 0.0)  # (B,)
    else:
        rel_s = finite.to(f_s.dtype)  # (B,)
    d = model.config.emg_fusion_discount
    if batch.emg_score is not None and d > 0:
        emg = torch.nan_to_num(batch.emg_score, nan=1.0).clamp_(0.0, 1.0)
        rel_s = torch.addcmul(rel_s, rel_s, emg, value=-d)  # rel_s * (1 - d * emg)
    # --- prototypes and opinions --------------------------------------------------------------
    z = torch.addmm(w.proj_b, torch.cat([f_t, f_s], dim=-1), w.proj_w).view(b, 2, w.proto_dim)
    z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min_(1e-12)  # (B, 2, P)
    rel = torch.stack([rel_t, rel_s], dim=1)[..., None]  # (B, 2, 1)
    teacher_probs = torch.softmax(teacher_logits, dim=-1)
    if w.calibrated:
        y = torch.addmm(w.protos_b, z.view(2 * b, w.proto_dim), w.protos_t)  # (2B, K)
        e = y.clamp_(0.0, w.y_max).expm1_().view(b, 2, w.k).mul_(rel).mul_(w.exp_floor)
    else:  # zero-label mode: the circumplex prior speaks, the untrained student does not
        e = torch.stack([teacher_probs, torch.zeros_like(teacher_probs)], dim=1)
        e = e.mul_(rel).mul_(model.prior_evidence)
    e_t, e_s = e.unbind(1)
    alphas = e + 1.0  # (B, 2, K): teacher, student
    alpha_t, alpha_s = alphas.unbind(1)
    u_t, u_s = torch.div(w.k_tensor, alphas.sum(dim=-1)).unbind(1)  # (B,) each
    probs, alpha, u = model.fuse(teacher_logits, student_logits, rel_t, rel_s)
    z_face, z_eeg = z.unbind(1)
    injected = None
    if with_injected:
        h = F.relu(model.inject_proj(f_s))
        injected = teacher.head.forward_from(model.inject_layer, h)
    return {
        "teacher_logits": teacher_logits,
        "student_logits": student_logits,
        "teacher_probs": teacher_probs,
        "student_probs": torch.softmax(student_logits, dim=-1),
        "probs": probs,
        "alpha_teacher": alpha_t,
        "alpha_student": alpha_s,
        "alpha": alpha,
        "uncertainty_teacher": u_t,
        "uncertainty_student": u_s,
        "uncertainty": u,
        "z_face": z_face,
        "z_eeg": z_eeg,
        "face_available": available,
        "face_reliability": rel_t,
        "eeg_reliability": rel_s,
        "injected_logits": injected,
    }
