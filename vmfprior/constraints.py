"""Constraints of the distributions on the sphere, and the transforms ``biject_to`` / ``transform_to`` give for them.

* ``unit_sphere``: vectors of unit norm along the last dimension (the support of both distributions and the
  constraint on ``VonMisesFisher.loc``).

  - ``biject_to(unit_sphere)`` is the stereographic projection ``StereographicTransform``: a bijection from
    ``R^(d-1)`` onto the sphere without one point (``-e_1``, a set of measure zero), with the log-Jacobian of the
    surface measure, so it serves samplers that need a density on an unconstrained space (HMC, normalizing flows).
  - ``transform_to(unit_sphere)`` is ``NormalizeTransform``, ``x -> x / |x|`` on ``R^d``: not a bijection, but the
    parametrization of a direction that optimizes well (no pole, no scale to learn), like torch's
    ``transform_to(simplex)`` is the softmax while ``biject_to(simplex)`` is stick-breaking.

* ``positive_finite``: strictly positive and finite (the concentration; ``constraints.positive`` lets +inf
  through). Both registries give ``ExpTransform``, as torch does for ``constraints.positive``; ``exp`` of an
  unconstrained value above log(float max) overflows to inf, outside the constraint, as it does for torch's.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints
from torch.distributions.constraint_registry import biject_to, transform_to
from torch.distributions.transforms import ExpTransform, Transform

__all__ = [
    "UNIT_NORM_TOLERANCE",
    "unit_sphere",
    "positive_finite",
    "StereographicTransform",
    "NormalizeTransform",
    "off_sphere_message",
]

# Tolerance on | ||x|| - 1 | when checking that a vector lies on the sphere: loose enough for float32 vectors
# normalized by the caller, tight enough to catch an unnormalized one.
UNIT_NORM_TOLERANCE = 1e-4


class _UnitSphere(constraints.Constraint):
    """Vectors of unit Euclidean norm along the last dimension."""

    is_discrete = False
    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value.norm(dim=-1) - 1.0).abs() <= UNIT_NORM_TOLERANCE


class _PositiveFinite(constraints.Constraint):
    """Strictly positive and finite (``constraints.positive`` lets +inf through)."""

    is_discrete = False
    event_dim = 0

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value > 0) & torch.isfinite(value)


unit_sphere = _UnitSphere()
positive_finite = _PositiveFinite()


def off_sphere_message(value: torch.Tensor, name: str, radius: float = 1.0) -> str | None:
    """None when every row of ``value`` (..., d) has norm ``radius`` (relative tolerance UNIT_NORM_TOLERANCE), else
    a one-line message naming ``name``, how many rows are off and the worst one's index and norm (never the tensor).

    Reads the norms on the host: call it only where validation is wanted.
    """
    norms = value.detach().norm(dim=-1)
    error = (norms / radius - 1.0).abs()
    bad = ~(error <= UNIT_NORM_TOLERANCE)  # nan counts as bad
    if not bool(bad.any()):
        return None
    worst = int(torch.where(torch.isnan(error), torch.inf, error).flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), norms.shape)) if norms.dim() else ()
    sphere = "the unit sphere" if radius == 1.0 else f"the sphere of radius {radius:g}"
    return (
        f"{name} must lie on {sphere} along its last dimension (relative tolerance {UNIT_NORM_TOLERANCE:g}); "
        f"{int(bad.sum())} of {bad.numel()} rows do not, the worst, at index {index}, has norm "
        f"{float(norms.flatten()[worst]):.6g}"
    )


class StereographicTransform(Transform):
    """The stereographic projection ``R^(d-1) -> S^(d-1)`` from the pole ``-e_1``: a bijection onto the sphere
    without that pole.

    ``x -> ((1 - |x|^2) / (1 + |x|^2), 2 x / (1 + |x|^2))``; the origin goes to ``e_1``. The map is conformal with
    factor ``2 / (1 + |x|^2)``, so the log-Jacobian of the surface measure is ``(d - 1) log(2 / (1 + |x|^2))``.
    Inverse: ``y -> y[1:] / (1 + y[0])``.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = unit_sphere
    bijective = True

    def __eq__(self, other):
        return isinstance(other, StereographicTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        squared = (x * x).sum(-1, keepdim=True)
        return torch.cat([(1.0 - squared) / (1.0 + squared), 2.0 * x / (1.0 + squared)], dim=-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y[..., 1:] / (1.0 + y[..., :1])

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        squared = (x * x).sum(-1)
        return x.shape[-1] * (math.log(2.0) - torch.log1p(squared))

    def forward_shape(self, shape):
        if len(shape) < 1:
            raise ValueError(f"StereographicTransform needs a vector, got shape {tuple(shape)}")
        return torch.Size(shape[:-1]) + (shape[-1] + 1,)

    def inverse_shape(self, shape):
        if len(shape) < 1 or shape[-1] < 2:
            raise ValueError(
                f"StereographicTransform's inverse needs points of S^(d-1) with d >= 2, got {tuple(shape)}"
            )
        return torch.Size(shape[:-1]) + (shape[-1] - 1,)


class NormalizeTransform(Transform):
    """``x -> x / |x|`` along the last dimension: ``R^d \\ {0}`` onto the unit sphere, not injective.

    Its ``inv`` is the identity on the sphere (a right inverse: ``t(t.inv(y)) == y``). Not a bijection, so it has
    no log-Jacobian; use ``biject_to(unit_sphere)`` where a density on the unconstrained space is needed.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = unit_sphere
    bijective = False

    def __eq__(self, other):
        return isinstance(other, NormalizeTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y


@biject_to.register(_UnitSphere)
def _biject_to_unit_sphere(constraint) -> Transform:
    return StereographicTransform()


@transform_to.register(_UnitSphere)
def _transform_to_unit_sphere(constraint) -> Transform:
    return NormalizeTransform()


@biject_to.register(_PositiveFinite)
@transform_to.register(_PositiveFinite)
def _to_positive_finite(constraint) -> Transform:
    return ExpTransform()
