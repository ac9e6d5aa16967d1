"""The five training losses of the CKD experiments.

* ``label``: cross-entropy with the true label.
* ``label-smoothing``: the cross-entropy against ``(1 - eps)`` on the label and ``eps / (C - 1)`` on every other
  class, so exactly ``eps`` of each target row lies off the diagonal. With ``eps`` set to a CKD affinity's mean
  off-diagonal mass (:func:`off_diagonal_mass`) it is the control that separates CKD's class structure from
  plain smoothing: the same amount of soft mass, spread evenly instead of by class similarity.
* ``kd`` (Hinton et al.; the paper's Algorithm 1): ``(1 - alpha) CE(y, p_S) + alpha T^2 H(p_T^T(. | x), p_S^T(. | x))``
  with ``p^T = softmax(logits / T)``, T = 4, alpha = 0.9 (the protocol of the CRD code base the paper's Table 2
  numbers come from). The T^2 factor keeps the soft term's gradient on the scale of the hard one.
* ``ckd`` (Algorithm 2): ``H(p_T(. | y), p_S(. | x)) = -sum_k A[y, k] log p_S(k | x)`` with A the class-affinity
  matrix of the teacher's final layer (Eq. 7, ``VMFPrior.class_affinity``), at temperature 1; no teacher
  forward pass. A's rows already put most of their mass on the label, so no separate hard term is added.
* ``ckd+kd``: KD with its hard-label term replaced by CKD: ``(1 - alpha) H(A[y], p_S) + alpha T^2 H(p_T^T, p_S^T)``.

H(p, q) = -sum_k p_k log q_k is the cross-entropy; it differs from KL(p || q) by the entropy of p, which has no
gradient, so the training is the same as with the KL form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ckd.config import KD_TEMPERATURE, KD_WEIGHT, LOSSES

__all__ = [
    "LOSSES",
    "NEEDS_TEACHER_LOGITS",
    "NEEDS_AFFINITY",
    "kd_loss",
    "ckd_loss",
    "soft_cross_entropy",
    "smoothing_loss",
    "smoothing_targets",
    "off_diagonal_mass",
    "distillation_loss",
    "KD_TEMPERATURE",
    "KD_WEIGHT",
]

NEEDS_TEACHER_LOGITS = ("kd", "ckd+kd")
NEEDS_AFFINITY = ("ckd", "ckd+kd")


def soft_cross_entropy(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets[b, k] log_softmax(logits)[b, k]``.

    Args:
        targets: (B, C) rows of probabilities.
        logits: (B, C).

    Returns:
        () tensor.
    """
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = KD_TEMPERATURE
) -> torch.Tensor:
    """The soft term of KD: ``T^2 * mean_b H(softmax(t_b / T), softmax(s_b / T))``.

    Args:
        student_logits: (B, C).
        teacher_logits: (B, C); no gradient flows into them.
        temperature: T.

    Returns:
        () tensor.
    """
    targets = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return temperature**2 * soft_cross_entropy(targets, student_logits / temperature)


def ckd_loss(student_logits: torch.Tensor, labels: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Class-wise KD: ``mean_b -sum_k affinity[labels[b], k] log p_S(k | x_b)``.

    Args:
        student_logits: (B, C).
        labels: (B,) true classes.
        affinity: (C, C) row-stochastic teacher affinity p_T(k | i) (Eq. 7).

    Returns:
        () tensor.
    """
    return soft_cross_entropy(affinity[labels], student_logits)


def smoothing_targets(
    labels: torch.Tensor, num_classes: int, epsilon: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Target rows ``(1 - epsilon)`` on the label and ``epsilon / (C - 1)`` elsewhere.

    Args:
        labels: (B,) classes.
        num_classes: C (at least 2).
        epsilon: off-diagonal mass in [0, 1].
        dtype: of the result.

    Returns:
        (B, C) rows summing to 1.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
    targets = torch.full((labels.shape[0], num_classes), epsilon / (num_classes - 1), dtype=dtype, device=labels.device)
    return targets.scatter_(1, labels[:, None], 1.0 - epsilon)


def smoothing_loss(student_logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Label smoothing with off-diagonal mass ``epsilon``: ``H(smoothing_targets(labels), p_S)``, batch mean.

    Args:
        student_logits: (B, C).
        labels: (B,).
        epsilon: the mass put on the other classes, evenly.

    Returns:
        () tensor.
    """
    targets = smoothing_targets(labels, student_logits.shape[1], epsilon, student_logits.dtype)
    return soft_cross_entropy(targets, student_logits)


def off_diagonal_mass(affinity: torch.Tensor) -> float:
    """Mean over rows of the mass an affinity row puts on other classes: ``1 - mean_i A[i, i]``."""
    return float(1.0 - affinity.diagonal().double().mean())


def distillation_loss(
    loss: str,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    affinity: torch.Tensor | None = None,
    temperature: float = KD_TEMPERATURE,
    kd_weight: float = KD_WEIGHT,
    smoothing: float | None = None,
) -> torch.Tensor:
    """The training loss ``loss`` (one of :data:`LOSSES`; see the module docstring).

    Args:
        loss: "label", "label-smoothing", "kd", "ckd" or "ckd+kd".
        student_logits: (B, C).
        labels: (B,).
        teacher_logits: (B, C), needed by "kd" and "ckd+kd".
        affinity: (C, C), needed by "ckd" and "ckd+kd".
        temperature: KD's T.
        kd_weight: KD's alpha.
        smoothing: label smoothing's epsilon, needed by "label-smoothing".

    Returns:
        () tensor.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss in NEEDS_TEACHER_LOGITS and teacher_logits is None:
        raise ValueError(f"loss {loss!r} needs the teacher's logits")
    if loss in NEEDS_AFFINITY and affinity is None:
        raise ValueError(f"loss {loss!r} needs the class affinity")
    if loss == "label-smoothing" and smoothing is None:
        raise ValueError("loss 'label-smoothing' needs its epsilon (smoothing)")
    if loss == "label":
        return F.cross_entropy(student_logits, labels)
    if loss == "label-smoothing":
        return smoothing_loss(student_logits, labels, smoothing)
    if loss == "ckd":
        return ckd_loss(student_logits, labels, affinity)
    hard = F.cross_entropy(student_logits, labels) if loss == "kd" else ckd_loss(student_logits, labels, affinity)
    return (1 - kd_weight) * hard + kd_weight * kd_loss(student_logits, teacher_logits, temperature)
