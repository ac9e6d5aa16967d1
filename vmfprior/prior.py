"""VMFPrior: the class-conditional von Mises-Fisher model defined by a classifier's final linear layer.

Seo, Lee & Kwak (UAI 2021) show that a linear layer ``logits = W a + b`` trained with cross-entropy pairs with
the generative model of normalized penultimate activations ``p(a/|a| | y = i) = vMF(w_i / |w_i|, kappa)``.
This module turns the layer into that model: sample it, score it, mix it over classes, and compute the
class-affinity matrix of class-wise distillation (their Eq. 7).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch
from torch import nn

from .bessel import bessel_values, mean_resultant_length, work_dtype
from .distributions import VonMisesFisher

__all__ = ["VMFPrior", "find_final_layer_key", "concentration_from_mean_cosine", "read_state_dict", "CheckpointFormatError"]

# Bracket of the bisection that inverts A_d: wide enough for every concentration the tests cover.
CONCENTRATION_BRACKET = (1e-4, 1e6)

# Substrings that mark a final classification layer in a state-dict key.
_HEAD_NAME_HINTS = ("head", "fc", "linear", "classifier", "logits", "out")


class CheckpointFormatError(ValueError):
    """A file is missing, corrupted, or holds no classifier state dict."""


def read_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The state dict of a saved classifier: the file's dict itself, or its "model" / "state_dict" entry.

    Loads with ``weights_only=True`` onto the CPU: a checkpoint is data, never code.

    Raises:
        CheckpointFormatError: the file is missing, unreadable, or holds no dict of tensors.
    """
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"checkpoint file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- truncated file, foreign pickle, ...: all mean "not a checkpoint"
        raise CheckpointFormatError(f"{str(path)!r} is corrupted or not a torch checkpoint "
                                    f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from error
    if isinstance(checkpoint, Mapping):
        for entry in ("model", "state_dict", "model_state_dict"):
            if isinstance(checkpoint.get(entry), Mapping):
                checkpoint = checkpoint[entry]
                break
    if not isinstance(checkpoint, Mapping) or not any(torch.is_tensor(v) for v in checkpoint.values()):
        raise CheckpointFormatError(f"{str(path)!r} holds no state dict (a dict of tensors, or one under 'model')")
    return {key: value for key, value in checkpoint.items() if torch.is_tensor(value)}


def find_final_layer_key(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The key of the final linear layer's weight in a classifier's state dict.

    Candidates are 2-D ``*weight`` tensors whose module name contains a head-like word (head, fc, linear,
    classifier, logits, out); the last one in the state dict's order (the order modules were registered) wins,
    since a classifier's final layer is normally registered last. Without such a name, a single 2-D weight is
    taken as the layer.

    Raises:
        ValueError: listing the candidate keys when none is found.
    """
    matrices = [key for key, value in state_dict.items() if key.endswith("weight") and torch.is_tensor(value) and value.dim() == 2]
    hinted = [key for key in matrices if any(hint in key.rsplit(".", 1)[0].lower() for hint in _HEAD_NAME_HINTS)]
    if hinted:
        return hinted[-1]
    if len(matrices) == 1:
        return matrices[0]
    raise ValueError(
        "could not tell which 2-D weight is the final linear layer; pass key= one of: "
        f"{matrices if matrices else '(none: the checkpoint has no 2-D weight)'}"
    )


def concentration_from_mean_cosine(mean_cosine: torch.Tensor, dim: int, iterations: int = 80) -> torch.Tensor:
    """Solve A_d(kappa) = mean_cosine for kappa: the maximum-likelihood concentration of a vMF whose mean
    direction is known, given the mean cosine between the data and that direction (Mardia & Jupp, 2000, 10.3).

    A_d is increasing, so bisection on log kappa over CONCENTRATION_BRACKET finds it (clipped to the bracket).

    Args:
        mean_cosine: tensor of mean cosines in (0, 1), any shape.
        dim: ambient dimension d.
        iterations: bisection steps (80 halve the log-bracket to below 1e-20).

    Returns:
        kappa, float64, shaped like ``mean_cosine``.
    """
    target = torch.as_tensor(mean_cosine, dtype=torch.float64)
    low = torch.full_like(target, math.log(CONCENTRATION_BRACKET[0]))
    high = torch.full_like(target, math.log(CONCENTRATION_BRACKET[1]))
    for _ in range(iterations):
        middle = (low + high) / 2
        too_small = mean_resultant_length(dim, middle.exp()) < target
        low, high = torch.where(too_small, middle, low), torch.where(too_small, high, middle)
    return ((low + high) / 2).exp()


class VMFPrior(nn.Module):
    """p(z | y = i) = vMF(z; w_i / |w_i|, kappa_i) on S^{d-1}, from a classifier's final layer W (C, d).

    Args:
        weight: (C, d) final-layer weight; every row must be non-zero.
        concentration: kappa, a positive number or a (C,) tensor of per-class concentrations.
        bias: optional (C,) bias, used by ``class_affinity``.

    Buffers (move with ``.to(device)``): ``mean_directions`` (C, d), ``concentration`` (C,), ``weight``, ``bias``.
    """

    def __init__(self, weight: torch.Tensor, concentration: torch.Tensor | float, bias: torch.Tensor | None = None):
        super().__init__()
        if not torch.is_tensor(weight) or weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(f"weight must be a floating (C, d) tensor, got {getattr(weight, 'shape', type(weight))}")
        num_classes, dim = weight.shape
        if dim < 2:
            raise ValueError(f"weight must have at least 2 columns (the sphere S^{{d-1}} needs d >= 2), got shape {tuple(weight.shape)}")
        weight = weight.detach().clone()
        norms = weight.norm(dim=1)
        if bool((norms == 0).any()) or not bool(torch.isfinite(weight).all()):
            bad = [int(i) for i in torch.nonzero((norms == 0) | ~torch.isfinite(norms)).flatten()]
            raise ValueError(f"weight rows {bad} are zero or not finite: they define no mean direction")
        concentration = torch.as_tensor(concentration, dtype=weight.dtype, device=weight.device).detach().clone()
        if concentration.dim() == 0:
            concentration = concentration.expand(num_classes).clone()
        if concentration.shape != (num_classes,):
            raise ValueError(f"concentration must be a number or a ({num_classes},) tensor, got shape {tuple(concentration.shape)}")
        if not bool(((concentration > 0) & torch.isfinite(concentration)).all()):
            raise ValueError(f"concentration must be positive and finite, got {concentration.tolist()}")
        if bias is not None:
            bias = torch.as_tensor(bias, dtype=weight.dtype, device=weight.device).detach().clone()
            if bias.shape != (num_classes,):
                raise ValueError(f"bias must have shape ({num_classes},) to match weight {tuple(weight.shape)}, got {tuple(bias.shape)}")
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("mean_directions", weight / norms[:, None])
        self.register_buffer("concentration", concentration)

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_weight(cls, weight: torch.Tensor, concentration: torch.Tensor | float, bias: torch.Tensor | None = None) -> "VMFPrior":
        """The prior of a final layer given by its weight (C, d) (and optional bias (C,))."""
        return cls(weight, concentration, bias)

    @classmethod
    def from_linear(cls, linear: nn.Module, concentration: torch.Tensor | float) -> "VMFPrior":
        """The prior of an ``nn.Linear`` (or any head with a ``weight`` (C, d) and optional ``bias``)."""
        weight = getattr(linear, "weight", None)
        if not torch.is_tensor(weight):
            raise TypeError(f"linear must have a weight tensor (C, d), got {type(linear).__name__}")
        bias = getattr(linear, "bias", None)
        return cls(weight, concentration, bias if torch.is_tensor(bias) else None)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, concentration: torch.Tensor | float, key: str | None = None) -> "VMFPrior":
        """The prior of the final layer stored in a saved classifier.

        Args:
            path: a ``torch.save``'d state dict, or a dict with the state dict under "model" / "state_dict".
            concentration: kappa (number or (C,)).
            key: the weight's key in the state dict; found with ``find_final_layer_key`` when omitted.
                The bias is read from the same module's ``bias`` key if present.
        """
        state_dict = read_state_dict(path)
        if key is None:
            key = find_final_layer_key(state_dict)
        elif key not in state_dict:
            candidates = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.dim() == 2]
            raise ValueError(f"key {key!r} is not in the checkpoint; 2-D weights there: {candidates}")
        weight = state_dict[key]
        bias = state_dict.get(key[: -len("weight")] + "bias") if key.endswith("weight") else None
        return cls(weight.float(), concentration, bias.float() if torch.is_tensor(bias) else None)

    @torch.no_grad()
    def fit_concentration(self, features: torch.Tensor, labels: torch.Tensor, per_class: bool = False) -> torch.Tensor:
        """Maximum-likelihood kappa of the class-conditional vMF, with the layer's mean directions held fixed.

        Solves A_d(kappa) = mean_j cos(a_j, w_{y_j}/|w_{y_j}|) over the given activations (all of them, or
        each class's own with ``per_class``). Use it to pick the prior's concentration from held-out data:
        ``VMFPrior.from_linear(head, prior.fit_concentration(features, labels))``.

        Args:
            features: (N, d) penultimate activations (any norm: they are normalized here).
            labels: (N,) their classes.
            per_class: one kappa per class instead of a shared one (every class needs activations).

        Returns:
            () tensor, or (C,) with ``per_class``; float64.
        """
        self._check_points(features, "features")
        labels = self._check_labels(labels)
        if labels.shape[0] != features.shape[0]:
            raise ValueError(f"features has {features.shape[0]} rows but labels has {labels.shape[0]}")
        unit = nn.functional.normalize(features.to(self.mean_directions), dim=1)
        cosines = (unit * self.mean_directions[labels]).sum(dim=1).double()
        if not per_class:
            return concentration_from_mean_cosine(cosines.mean(), self.dim)
        counts = torch.bincount(labels, minlength=self.num_classes)
        if bool((counts == 0).any()):
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"per_class needs activations of every class; none for classes {missing}")
        sums = torch.zeros(self.num_classes, dtype=torch.float64, device=cosines.device).index_add_(0, labels, cosines)
        return concentration_from_mean_cosine(sums / counts, self.dim)

    # ---- shape facts --------------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return self.mean_directions.shape[0]

    @property
    def dim(self) -> int:
        """Ambient dimension d of the sphere S^{d-1}."""
        return self.mean_directions.shape[1]

    def _check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(labels) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
        if labels.dim() != 1:
            raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]")
        return labels.to(self.mean_directions.device)

    def _check_points(self, z: torch.Tensor, name: str = "z") -> None:
        if not torch.is_tensor(z) or z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (B, {self.dim}), got {tuple(getattr(z, 'shape', ()))}")

    # ---- the model ----------------------------------------------------------------------------------------

    def _distribution(self, labels: torch.Tensor | None) -> VonMisesFisher:
        """vMF(w_y/|w_y|, kappa_y) for checked labels (B,), or for every class with ``labels=None``."""
        mean_directions, concentration = self.mean_directions, self.concentration
        # The C classes' Bessel terms, evaluated once per call and gathered per label: C evaluations, not B.
        log_bessel, ratio = bessel_values(0.5 * self.dim - 1.0, concentration.to(work_dtype(concentration.device)))
        if labels is not None:
            mean_directions, concentration = mean_directions[labels], concentration[labels]
            log_bessel, ratio = log_bessel[labels], ratio[labels]
        distribution = VonMisesFisher(mean_directions, concentration, validate_args=False)
        distribution._use_bessel_values((log_bessel, ratio))
        return distribution

    def forward(self, labels: torch.Tensor) -> VonMisesFisher:
        """The class-conditional distributions for a batch of labels: a VonMisesFisher with batch_shape (B,)."""
        return self._distribution(self._check_labels(labels))

    def sample(self, labels: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
        """z ~ radius * vMF(w_y / |w_y|, kappa_y), shape (B, d); radius = sqrt(d) gives GAN-style noise."""
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a positive number, got {radius!r}")
        with torch.no_grad():
            return radius * self(labels).sample()

    def log_prob(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log p(z | y), z (B, d) on the unit sphere -> (B,)."""
        self._check_points(z)
        labels = self._check_labels(labels)
        if labels.shape[0] != z.shape[0]:
            raise ValueError(f"z has {z.shape[0]} rows but labels has {labels.shape[0]}")
        return self(labels).log_prob(z)

    def class_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log vMF(z; w_i/|w_i|, kappa_i) for every class i: z (B, d) -> (B, C)."""
        self._check_points(z)
        return self._distribution(None).log_prob(z.unsqueeze(1))  # (B, 1, d) against batch (C,) -> (B, C)

    def mixture_log_prob(self, z: torch.Tensor, class_probs: torch.Tensor | None = None) -> torch.Tensor:
        """log sum_i p(i) vMF(z; w_i/|w_i|, kappa_i), z (B, d) -> (B,); class_probs (C,) defaults to uniform."""
        log_components = self.class_log_probs(z)
        if class_probs is None:
            log_weights = torch.full((self.num_classes,), -math.log(self.num_classes), dtype=z.dtype, device=z.device)
        else:
            class_probs = torch.as_tensor(class_probs, dtype=z.dtype, device=z.device)
            if class_probs.shape != (self.num_classes,):
                raise ValueError(f"class_probs must have shape ({self.num_classes},), got {tuple(class_probs.shape)}")
            if bool((class_probs < 0).any()) or abs(float(class_probs.sum()) - 1.0) > 1e-5:
                raise ValueError("class_probs must be non-negative and sum to 1")
            log_weights = torch.log(class_probs)
        return torch.logsumexp(log_components + log_weights, dim=1)

    @torch.no_grad()
    def class_affinity(self, n_samples: int = 1000, activation_norm: float = 1.0, batch_size: int = 10_000) -> torch.Tensor:
        """Class affinity p_T(y | i) = mean_j softmax(W a_j + b), a_j ~ activation_norm * vMF(w_i/|w_i|, kappa_i).

        Eq. 7 of Seo, Lee & Kwak: soft targets for class-wise knowledge distillation computed from the final
        layer alone. ``activation_norm`` is the norm of the penultimate activations the layer saw in training
        (the logits scale with it).

        Args:
            n_samples: Monte Carlo samples per class.
            activation_norm: |a| of the sampled activations.
            batch_size: samples processed at once (bounds memory).

        Returns:
            (C, C) row-stochastic matrix; row i is the predicted class distribution for class i's activations.
        """
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if not (isinstance(activation_norm, (int, float)) and math.isfinite(activation_norm) and activation_norm > 0):
            raise ValueError(f"activation_norm must be a positive number, got {activation_norm!r}")
        affinity = torch.zeros(self.num_classes, self.num_classes, dtype=self.weight.dtype, device=self.weight.device)
        per_batch = max(1, batch_size // self.num_classes)
        for start in range(0, n_samples, per_batch):
            count = min(per_batch, n_samples - start)
            activations = activation_norm * self._distribution(None).sample((count,))  # (count, C, d)
            logits = activations @ self.weight.T  # (count, C, C): [j, i, :] logits of sample j of class i
            if self.bias is not None:
                logits = logits + self.bias
            affinity += torch.softmax(logits, dim=-1).sum(dim=0)
        return affinity / n_samples
