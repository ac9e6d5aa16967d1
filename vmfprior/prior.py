"""VMFPrior: the class-conditional von Mises-Fisher model defined by a classifier's final linear layer.

Seo, Lee & Kwak (UAI 2021) show that a linear layer ``logits = W a + b`` trained with cross-entropy pairs with
the generative model of normalized penultimate activations ``p(a/|a| | y = i) = vMF(w_i / |w_i|, kappa)``.
This module turns the layer into that model: sample it, score it, mix it over classes, and compute the
class-affinity matrix of class-wise distillation (their Eq. 7).
"""

from __future__ import annotations

import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .bessel import mean_resultant_length
from .constraints import off_sphere_message
from .distributions import VonMisesFisher

__all__ = [
    "VMFPrior",
    "find_final_layer_key",
    "concentration_from_mean_cosine",
    "read_state_dict",
    "load_checkpoint_object",
    "CheckpointFormatError",
]

# Bracket of the bisection that inverts A_d: wide enough for every concentration the tests cover.
CONCENTRATION_BRACKET = (1e-4, 1e6)

# Keys of a checkpoint (beside its state dict) that hold the mean norm |a| of the penultimate activations the final
# layer saw: ckd.teacher wrote "activation_norm", common.classifier writes "mean_activation_norm".
ACTIVATION_NORM_KEYS = ("activation_norm", "mean_activation_norm")

# Substrings that mark a final classification layer in a state-dict key.
_HEAD_NAME_HINTS = ("head", "fc", "linear", "classifier", "logits", "out")


class CheckpointFormatError(ValueError):
    """A file is missing, corrupted, or holds no classifier state dict."""


def _first_sentence(error: BaseException) -> str:
    """The first sentence of an exception's message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return re.split(r"(?<=[.:])\s", text.splitlines()[0] if text else "", maxsplit=1)[0]


def load_checkpoint_object(path: str | os.PathLike):
    """Whatever a checkpoint file holds, loaded safely: ``weights_only=True``, onto the CPU (data, never code).

    Raises:
        CheckpointFormatError: the file is missing, unreadable, or holds pickled Python objects (e.g. a whole model
            saved with ``torch.save(model)``), with a message that says which and what to do.
    """
    if not os.path.isfile(path):
        raise CheckpointFormatError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise CheckpointFormatError(
            f"{str(path)!r} holds pickled Python objects{what}, e.g. a whole model saved with torch.save(model), "
            "which a safe load (weights_only=True) refuses: save model.state_dict() instead, or build the prior "
            "from the model itself with VMFPrior.from_linear(model.head, concentration)"
        ) from error
    except Exception as error:  # noqa: BLE001 -- truncated file, foreign format, ...: all mean "not a checkpoint"
        reason = _first_sentence(error)
        raise CheckpointFormatError(
            f"{str(path)!r} is corrupted or not a torch checkpoint "
            f"({type(error).__name__}{': ' + reason if reason else ''})"
        ) from error


def _state_dict_of(checkpoint, path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: the object itself, or its "model" / "state_dict" entry."""
    if isinstance(checkpoint, Mapping):
        for entry in ("model", "state_dict", "model_state_dict"):
            if isinstance(checkpoint.get(entry), Mapping):
                checkpoint = checkpoint[entry]
                break
    if not isinstance(checkpoint, Mapping) or not any(torch.is_tensor(v) for v in checkpoint.values()):
        raise CheckpointFormatError(f"{str(path)!r} holds no state dict (a dict of tensors, or one under 'model')")
    return {key: value for key, value in checkpoint.items() if torch.is_tensor(value)}


def read_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The state dict of a saved classifier: the file's dict itself, or its "model" / "state_dict" entry.

    Loads with ``weights_only=True`` onto the CPU: a checkpoint is data, never code.

    Raises:
        CheckpointFormatError: the file is missing, unreadable, holds a whole pickled model, or holds no dict of
            tensors.
    """
    return _state_dict_of(load_checkpoint_object(path), path)


def _checked_activation_norm(value, name: str = "activation_norm") -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name} must be a positive number (the mean |a| of the penultimate activations), got {value!r}"
        )
    return float(value)


def _checked_radius(radius) -> float:
    if isinstance(radius, bool) or not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive number, got {radius!r}")
    return float(radius)


def find_final_layer_key(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The key of the final linear layer's weight in a classifier's state dict.

    Candidates are 2-D ``*weight`` tensors whose module name contains a head-like word (head, fc, linear,
    classifier, logits, out); the last one in the state dict's order (the order modules were registered) wins,
    since a classifier's final layer is normally registered last. Without such a name, a single 2-D weight is
    taken as the layer.

    Raises:
        ValueError: listing the candidate keys when none is found.
    """
    matrices = [
        key
        for key, value in state_dict.items()
        if key.endswith("weight") and torch.is_tensor(value) and value.dim() == 2
    ]
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
        activation_norm: optional mean norm |a| of the penultimate activations the layer saw in training, the
            default of ``class_affinity`` (``from_checkpoint`` reads it from checkpoints that store it).

    Buffers (move with ``.to(device)``): ``mean_directions`` (C, d), ``concentration`` (C,), ``weight``, ``bias``.
    ``activation_norm`` is a plain attribute (float or None), not part of the state dict.
    """

    weight: torch.Tensor
    """The final layer's weight W (C, d), a buffer."""
    bias: torch.Tensor | None
    """The final layer's bias (C,) or None, a buffer."""
    mean_directions: torch.Tensor
    """The unit rows w_i / |w_i| (C, d): the vMF mean directions, a buffer."""
    concentration: torch.Tensor
    """kappa_i per class (C,), a buffer."""

    def __init__(
        self,
        weight: torch.Tensor,
        concentration: torch.Tensor | float,
        bias: torch.Tensor | None = None,
        activation_norm: float | None = None,
    ):
        super().__init__()
        if not torch.is_tensor(weight) or weight.dim() != 2 or not weight.is_floating_point():
            raise ValueError(f"weight must be a floating (C, d) tensor, got {getattr(weight, 'shape', type(weight))}")
        num_classes, dim = weight.shape
        if dim < 2:
            raise ValueError(
                "weight must have at least 2 columns (the sphere S^{d-1} needs d >= 2), got shape "
                f"{tuple(weight.shape)}"
            )
        weight = weight.detach().clone()
        norms = weight.norm(dim=1)
        if bool((norms == 0).any()) or not bool(torch.isfinite(weight).all()):
            bad_rows = [int(i) for i in torch.nonzero((norms == 0) | ~torch.isfinite(norms)).flatten()]
            shown = f"{bad_rows[:10]}{' ...' if len(bad_rows) > 10 else ''}"
            raise ValueError(
                f"weight rows {shown} ({len(bad_rows)} of {num_classes}) are zero or not finite: they "
                "define no mean direction"
            )
        concentration = torch.as_tensor(concentration, dtype=weight.dtype, device=weight.device).detach().clone()
        if concentration.dim() == 0:
            concentration = concentration.expand(num_classes).clone()
        if concentration.shape != (num_classes,):
            raise ValueError(
                f"concentration must be a number or a ({num_classes},) tensor, got shape {tuple(concentration.shape)}"
            )
        bad = ~((concentration > 0) & torch.isfinite(concentration))
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"concentration must be positive and finite; {int(bad.sum())} of {num_classes} values are not, "
                f"the first, of class {first}, is {float(concentration[first])!r}"
            )
        if bias is not None:
            bias = torch.as_tensor(bias, dtype=weight.dtype, device=weight.device).detach().clone()
            if bias.shape != (num_classes,):
                raise ValueError(
                    f"bias must have shape ({num_classes},) to match weight {tuple(weight.shape)}, got "
                    f"{tuple(bias.shape)}"
                )
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("mean_directions", weight / norms[:, None])
        self.register_buffer("concentration", concentration)
        self.activation_norm = _checked_activation_norm(activation_norm)
        """Mean norm |a| of the penultimate activations the layer saw in training (None when unknown)."""

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        concentration: torch.Tensor | float,
        bias: torch.Tensor | None = None,
        activation_norm: float | None = None,
    ) -> VMFPrior:
        """The prior of a final layer given by its weight (C, d) (and optional bias (C,) and mean |a|)."""
        return cls(weight, concentration, bias, activation_norm=activation_norm)

    @classmethod
    def from_linear(
        cls, linear: nn.Module, concentration: torch.Tensor | float, activation_norm: float | None = None
    ) -> VMFPrior:
        """The prior of an ``nn.Linear`` (or any head with a ``weight`` (C, d) and optional ``bias``)."""
        weight = getattr(linear, "weight", None)
        if not torch.is_tensor(weight):
            raise TypeError(f"linear must have a weight tensor (C, d), got {type(linear).__name__}")
        bias = getattr(linear, "bias", None)
        return cls(weight, concentration, bias if torch.is_tensor(bias) else None, activation_norm=activation_norm)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        concentration: torch.Tensor | float,
        key: str | None = None,
        activation_norm: float | None = None,
    ) -> VMFPrior:
        """The prior of the final layer stored in a saved classifier.

        Args:
            path: a ``torch.save``'d state dict, or a dict with the state dict under "model" / "state_dict" (a whole
                pickled model is refused with a message saying what to save instead).
            concentration: kappa (number or (C,)).
            key: the weight's key in the state dict; found with ``find_final_layer_key`` when omitted.
                The bias is read from the same module's ``bias`` key if present.
            activation_norm: the mean |a| for ``class_affinity``; by default the checkpoint's top-level
                "activation_norm" entry (written by ``ckd.teacher``) when it has one, else None.
        """
        checkpoint = load_checkpoint_object(path)
        state_dict = _state_dict_of(checkpoint, path)
        if key is None:
            key = find_final_layer_key(state_dict)
        elif key not in state_dict:
            candidates = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.dim() == 2]
            raise ValueError(f"key {key!r} is not in the checkpoint; 2-D weights there: {candidates}")
        if activation_norm is None and isinstance(checkpoint, Mapping):
            for name in ACTIVATION_NORM_KEYS:
                if checkpoint.get(name) is not None:
                    activation_norm = _checked_activation_norm(checkpoint[name], f"the checkpoint's {name!r}")
                    break
        weight = state_dict[key]
        bias = state_dict.get(key[: -len("weight")] + "bias") if key.endswith("weight") else None
        return cls(
            weight.float(),
            concentration,
            bias.float() if torch.is_tensor(bias) else None,
            activation_norm=activation_norm,
        )

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
        """Number of classes C (rows of the final layer)."""
        return self.mean_directions.shape[0]

    @property
    def dim(self) -> int:
        """Ambient dimension d of the sphere S^{d-1}."""
        return self.mean_directions.shape[1]

    def _check_labels(self, labels: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Labels on the prior's device; their range is read on the host only with ``validate``."""
        if (
            not torch.is_tensor(labels)
            or labels.is_floating_point()
            or labels.is_complex()
            or labels.dtype == torch.bool
        ):
            raise ValueError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
        if labels.dim() != 1:
            raise ValueError(f"labels must have shape (B,), got {tuple(labels.shape)}")
        if validate and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels.to(self.mean_directions.device)

    def _check_points(self, z: torch.Tensor, name: str = "z", radius: float | None = None) -> None:
        """Shape check; with a ``radius``, also that every row lies on that sphere (reads norms on the host)."""
        if not torch.is_tensor(z) or z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (B, {self.dim}), got {tuple(getattr(z, 'shape', ()))}")
        if radius is not None:
            message = off_sphere_message(z, name, radius)
            if message is not None:
                hint = "" if radius != 1.0 else " (pass radius= for points scaled as by sample(labels, radius=...))"
                raise ValueError(message + hint)

    # ---- the model ----------------------------------------------------------------------------------------

    def _distribution(self, labels: torch.Tensor | None) -> VonMisesFisher:
        """vMF(w_y/|w_y|, kappa_y) for checked labels (B,), or for every class with ``labels=None``."""
        every_class = VonMisesFisher(self.mean_directions, self.concentration, validate_args=False)
        # A selection shares the C classes' Bessel terms, evaluated once if needed: C evaluations, not B.
        return every_class if labels is None else every_class.select(labels)

    def forward(self, labels: torch.Tensor, validate: bool = True) -> VonMisesFisher:
        """The class-conditional distributions for a batch of labels: a VonMisesFisher with batch_shape (B,).

        Args:
            labels: (B,) integer class labels.
            validate: check that the labels lie in [0, C), which reads them on the host (a device
                synchronisation on a GPU). A caller that has checked its labels passes False: nothing is then read
                on the host, and an out-of-range label fails as tensor indexing does.
        """
        return self._distribution(self._check_labels(labels, validate))

    def sample(self, labels: torch.Tensor, radius: float = 1.0, validate: bool = True) -> torch.Tensor:
        """z ~ radius * vMF(w_y / |w_y|, kappa_y), shape (B, d); radius = sqrt(d) gives GAN-style noise.

        ``validate`` as for ``forward``: False skips the host-side label range check.
        """
        radius = _checked_radius(radius)
        with torch.no_grad():
            return radius * self(labels, validate=validate).sample()

    def log_prob(
        self, z: torch.Tensor, labels: torch.Tensor, radius: float = 1.0, validate: bool = True
    ) -> torch.Tensor:
        """log p(z | y) of points z on the sphere of radius ``radius`` (as ``sample`` draws them): (B, d) -> (B,).

        The density of the scaled point z = radius * u, u ~ vMF, with respect to the surface measure of the
        radius-r sphere: log vMF(z / r) - (d - 1) log r (the Jacobian term of the scaling is included, so the
        density integrates to 1 over that sphere; for r = 1 it is the vMF log-density itself).

        Args:
            z: (B, d) points with |z| = radius.
            labels: (B,) their classes.
            radius: the sphere's radius, as given to ``sample``.
            validate: check the labels' range and that every |z| equals ``radius`` (relative tolerance 1e-4):
                points off that sphere raise ValueError instead of getting a meaningless number. Both read on the
                host; pass False where the caller guarantees them.

        Returns:
            (B,) log-densities.
        """
        radius = _checked_radius(radius)
        self._check_points(z, radius=radius if validate else None)
        labels = self._check_labels(labels, validate)
        if labels.shape[0] != z.shape[0]:
            raise ValueError(f"z has {z.shape[0]} rows but labels has {labels.shape[0]}")
        return self._scaled_log_prob(self._distribution(labels), z, radius)

    def _scaled_log_prob(self, distribution: VonMisesFisher, z: torch.Tensor, radius: float) -> torch.Tensor:
        if radius == 1.0:
            return distribution.log_prob(z)
        return distribution.log_prob(z / radius) - (self.dim - 1) * math.log(radius)

    def class_log_probs(self, z: torch.Tensor, radius: float = 1.0, validate: bool = True) -> torch.Tensor:
        """log p(z | y = i) for every class i: z (B, d) -> (B, C); ``radius`` and ``validate`` as for ``log_prob``."""
        radius = _checked_radius(radius)
        self._check_points(z, radius=radius if validate else None)
        # (B, 1, d) against batch (C,) -> (B, C)
        return self._scaled_log_prob(self._distribution(None), z.unsqueeze(1), radius)

    def mixture_log_prob(
        self, z: torch.Tensor, class_probs: torch.Tensor | None = None, radius: float = 1.0, validate: bool = True
    ) -> torch.Tensor:
        """log sum_i p(i) p(z | y = i), z (B, d) -> (B,); class_probs (C,) defaults to uniform.

        ``radius`` and ``validate`` as for ``log_prob`` (``validate`` also checks that class_probs is a
        distribution).
        """
        log_components = self.class_log_probs(z, radius=radius, validate=validate)
        if class_probs is None:
            log_weights = torch.full((self.num_classes,), -math.log(self.num_classes), dtype=z.dtype, device=z.device)
        else:
            class_probs = torch.as_tensor(class_probs, dtype=z.dtype, device=z.device)
            if class_probs.shape != (self.num_classes,):
                raise ValueError(f"class_probs must have shape ({self.num_classes},), got {tuple(class_probs.shape)}")
            if validate and (bool((class_probs < 0).any()) or abs(float(class_probs.sum()) - 1.0) > 1e-5):
                raise ValueError("class_probs must be non-negative and sum to 1")
            log_weights = torch.log(class_probs)
        return torch.logsumexp(log_components + log_weights, dim=1)

    @torch.no_grad()
    def class_affinity(
        self,
        num_samples: int | None = None,
        activation_norm: float | None = None,
        batch_size: int = 10_000,
        *,
        n_samples: int | None = None,
    ) -> torch.Tensor:
        """Class affinity p_T(y | i) = mean_j softmax(W a_j + b), a_j ~ activation_norm * vMF(w_i/|w_i|, kappa_i).

        Eq. 7 of Seo, Lee & Kwak: soft targets for class-wise knowledge distillation computed from the final
        layer alone. The logits scale with |a|, so the norm must be the one the layer saw in training: there is
        no neutral default.

        Args:
            num_samples: Monte Carlo samples per class (default 1000).
            activation_norm: |a| of the sampled activations; by default the prior's ``activation_norm`` (from its
                checkpoint, see ``from_checkpoint``). Without either: ValueError.
            batch_size: samples processed at once (bounds memory).
            n_samples: deprecated name of ``num_samples``.

        Returns:
            (C, C) row-stochastic matrix; row i is the predicted class distribution for class i's activations.
        """
        if n_samples is not None:
            warnings.warn(
                "class_affinity(n_samples=...) is deprecated; use num_samples=", DeprecationWarning, stacklevel=3
            )
            if num_samples is not None:
                raise ValueError("pass num_samples only (n_samples is its deprecated name)")
            num_samples = n_samples
        num_samples = 1000 if num_samples is None else num_samples
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if activation_norm is None:
            activation_norm = self.activation_norm
        if activation_norm is None:
            raise ValueError(
                "class_affinity needs activation_norm: the mean |a| of the penultimate activations the final layer saw "
                "in training (the logits scale with it). This prior's source stored none; pass activation_norm=, or "
                "build the prior with VMFPrior.from_checkpoint from a checkpoint with an 'activation_norm' entry "
                "(as ckd.teacher writes)"
            )
        norm = _checked_activation_norm(activation_norm)
        assert norm is not None  # for the type checker: activation_norm is not None here
        affinity = torch.zeros(self.num_classes, self.num_classes, dtype=self.weight.dtype, device=self.weight.device)
        per_batch = max(1, batch_size // self.num_classes)
        every_class = self._distribution(None)
        for start in range(0, num_samples, per_batch):
            count = min(per_batch, num_samples - start)
            activations = norm * every_class.sample((count,))  # (count, C, d)
            logits = activations @ self.weight.T  # (count, C, C): [j, i, :] logits of sample j of class i
            if self.bias is not None:
                logits = logits + self.bias
            affinity += torch.softmax(logits, dim=-1).sum(dim=0)
        return affinity / num_samples
