"""Distributions on the unit sphere S^{d-1} of R^d: von Mises-Fisher and uniform, with closed-form KLs.

Both follow ``torch.distributions``: parameters are checked against ``arg_constraints`` when validation is on,
``batch_shape``/``event_shape`` are set in ``__init__``, ``expand`` works, and the KLs are registered with
``torch.distributions.register_kl`` so ``kl_divergence`` and ``Independent`` treat them like built-ins.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, register_kl

from .bessel import bessel_values, log_bessel_iv_and_ratio, work_dtype
from .constraints import UNIT_NORM_TOLERANCE, off_sphere_message, positive_finite, unit_sphere  # noqa: F401
from .reflection import reflect_to_mean_direction
from .reflection import row_dot as _row_dot
from .wood_sampler import gradient_needs_mean, sample_radial

__all__ = ["VonMisesFisher", "HypersphericalUniform", "unit_sphere", "ParameterTypeError", "ShapeMismatchError"]


class ParameterTypeError(TypeError, ValueError):
    """A parameter of the wrong type (e.g. a list ``loc``).

    Both a TypeError (Python's convention for a wrong type) and a ValueError (what torch's distributions raise for
    a non-tensor parameter), so code written for either catches it.
    """


class ShapeMismatchError(ValueError, RuntimeError):
    """Parameters whose shapes do not broadcast.

    Both a ValueError (the project's convention: a bad argument, named in the message) and a RuntimeError (what
    torch's distributions raise, from ``torch.broadcast_tensors``), so code written for either catches it.
    """


def log_sphere_area(dim: int) -> float:
    """log of the surface area of S^{dim-1}: log(2 pi^(d/2) / Gamma(d/2))."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def _tangent_directions(shape: torch.Size, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Isotropic vectors orthogonal to e_1 and their norms: shapes shape = (..., d) and (...).

    Gaussians with the first coordinate zeroed (in float64, d - 1 Gaussians padded with a zero: torch's float64
    normals are slow on CPUs); for d = 3 a uniform angle on the circle instead, which needs one uniform draw
    rather than two normals and no norm.
    """
    if shape[-1] == 3:
        angle = torch.rand(shape[:-1], dtype=dtype, device=device) * (2.0 * math.pi)
        directions = torch.stack([torch.zeros_like(angle), torch.cos(angle), torch.sin(angle)], dim=-1)
        return directions, torch.ones_like(angle)
    if dtype == torch.float64:  # float64 normals cost several copies each: draw d - 1 and pad
        normal = torch.randn(shape[:-1] + (shape[-1] - 1,), dtype=dtype, device=device)
        return torch.nn.functional.pad(normal, (1, 0)), _row_dot(normal, normal).sqrt()
    normal = torch.randn(shape, dtype=dtype, device=device)
    normal[..., 0] = 0.0
    return normal, _row_dot(normal, normal).sqrt()


def _work(tensor: torch.Tensor) -> torch.Tensor:
    """Promote to float64 (float32 on MPS, which has none) for terms that cancel, e.g. KL at small kappa."""
    return tensor.to(work_dtype(tensor.device))


class _KLToUniform(torch.autograd.Function):
    """KL(vMF(mu, kappa) || U(S^{d-1})) from precomputed Bessel terms, with its derivative in closed form.

    KL = kappa A + v log kappa - (d/2) log(2 pi) - log I_v(kappa) + log |S^{d-1}|, v = d/2 - 1. With
    d/dkappa log I_v = A + v / kappa and A' = 1 - A^2 - (d - 1) A / kappa, the derivative is
    dKL/dkappa = A + kappa A' - A = kappa (1 - A^2) - (d - 1) A: one node instead of a chain of small ones.
    """

    @staticmethod
    def forward(ctx, concentration, log_bessel, mean_length, dim):
        kappa = _work(concentration)
        order = 0.5 * dim - 1.0
        kl = kappa * mean_length + order * torch.log(kappa) - log_bessel
        kl = kl + (log_sphere_area(dim) - 0.5 * dim * math.log(2.0 * math.pi))
        ctx.dim = dim
        ctx.save_for_backward(kappa, mean_length)
        return kl.to(concentration.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_kl):
        kappa, mean_length = ctx.saved_tensors
        derivative = kappa * (1.0 - mean_length * mean_length) - (ctx.dim - 1.0) * mean_length
        return (grad_kl.to(kappa.dtype) * derivative).to(grad_kl.dtype), None, None, None


class VonMisesFisher(Distribution):
    """The von Mises-Fisher distribution on S^{d-1}: density C_d(kappa) exp(kappa mu^T x).

    Sampling is exact for every d >= 2 and reparameterized in both ``loc`` and ``concentration``: the
    component w = mu^T z comes from Wood's (1994) rejection sampler (exact inverse CDF for d = 3) with
    implicit-reparameterization gradients in kappa (Figurnov et al., 2018; see ``wood_sampler``), the tangent
    direction from normalized Gaussians (a uniform angle for d = 3), and a Householder reflection maps e_1 to
    ``loc`` (Davidson et al., 2018).

    ``loc`` is normalized once, when the distribution is built: validation accepts vectors within 1e-4 of unit
    norm, and every method then uses the same unit vector (gradients flow through the normalization).

    Shapes and errors follow ``torch.distributions`` (batch_shape = broadcast of ``loc.shape[:-1]`` and
    ``concentration.shape``), with these choices:

    * a ``concentration`` of shape ``loc.shape[:-1] + (1,)`` (s-vae's convention) is refused with a ValueError
      that says to squeeze it: torch's broadcasting would silently turn a batch (B,) into (B, B).
      ``vmfprior.svae.VonMisesFisher`` accepts that shape;
    * shapes that do not broadcast raise ``ShapeMismatchError``, both a ValueError naming the shapes and the
      RuntimeError torch's distributions raise;
    * a ``loc`` that is not a floating tensor (e.g. a list) raises ``ParameterTypeError``, both a TypeError and the
      ValueError torch's distributions raise.

    Args:
        loc: (..., d) mean directions, unit norm along the last dimension.
        concentration: (...) concentrations kappa > 0, broadcastable with ``loc.shape[:-1]``.
        validate_args: check the parameters (and ``log_prob`` inputs) against the constraints; a failure names
            the worst entry and its index, not the whole tensor.
    """

    arg_constraints = {"loc": unit_sphere, "concentration": positive_finite}
    support = unit_sphere
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor | float, validate_args: bool | None = None):
        if not isinstance(loc, torch.Tensor) or not loc.is_floating_point():
            described = f"a tensor of dtype {loc.dtype}" if isinstance(loc, torch.Tensor) else type(loc).__name__
            raise ParameterTypeError(f"loc must be a floating-point tensor of shape (..., d), got {described}")
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(f"loc must have shape (..., d) with d >= 2, got shape {tuple(loc.shape)}")
        if isinstance(concentration, bool) or not isinstance(concentration, (torch.Tensor, int, float)):
            raise ParameterTypeError(f"concentration must be a tensor or a number, got {type(concentration).__name__}")
        if not isinstance(concentration, torch.Tensor):
            concentration = torch.tensor(concentration, dtype=loc.dtype, device=loc.device)
        if not concentration.is_floating_point():
            concentration = concentration.to(loc.dtype)
        # A (..., 1) concentration is s-vae's convention. torch's broadcasting would turn a batch (B,) into (B, B)
        # without a word, so it is refused here (vmfprior.svae.VonMisesFisher accepts it).
        if concentration.dim() >= 1 and concentration.shape == loc.shape[:-1] + (1,):
            raise ValueError(
                f"concentration has shape {tuple(concentration.shape)}, loc has shape {tuple(loc.shape)}: "
                "concentration must have the batch shape loc.shape[:-1]; squeeze its trailing dimension of size 1"
            )
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        except RuntimeError:
            raise ShapeMismatchError(
                f"loc shape {tuple(loc.shape)} and concentration shape {tuple(concentration.shape)} do not broadcast: "
                "concentration must broadcast with loc.shape[:-1]"
            ) from None
        super().__init__(batch_shape, torch.Size([loc.shape[-1]]), validate_args=False)
        self._validate_args = Distribution._validate_args if validate_args is None else bool(validate_args)
        if self._validate_args:
            self._check_parameters(loc, concentration)
        self._set_parameters(loc, concentration)

    def _set_parameters(self, loc: torch.Tensor, concentration: torch.Tensor) -> None:
        """Store the caller's tensors and derive what every method uses from them.

        ``loc`` is normalized here, once: validation accepts vectors within UNIT_NORM_TOLERANCE of unit norm, and
        every method (log_prob, the KLs, rsample, mean) then sees the same unit vector. The caller's tensors are
        kept as given so that ``copy.deepcopy`` and pickling copy leaves (see ``__getstate__``).
        """
        self._given_loc, self._given_concentration = loc, concentration
        self.loc = (loc / loc.norm(dim=-1, keepdim=True)).expand(self.batch_shape + self.event_shape)
        self.concentration = concentration.expand(self.batch_shape)
        self._bessel = None
        self._bessel_source = None

    def _check_parameters(self, loc: torch.Tensor, concentration: torch.Tensor) -> None:
        """The ``arg_constraints`` checks, with messages that name the worst entry instead of printing the tensor."""
        message = off_sphere_message(loc, "loc")
        if message is not None:
            raise ValueError(message)
        bad = ~positive_finite.check(concentration.detach())
        if bool(bad.any()):
            first = tuple(int(i) for i in torch.nonzero(bad)[0]) if bad.dim() else ()
            value = float(concentration.detach()[first]) if first else float(concentration.detach())
            raise ValueError(f"concentration must be positive and finite; {int(bad.sum())} of {bad.numel()} values are "
                             f"not, the first, at index {first}, is {value!r}")

    def _validate_sample(self, value: torch.Tensor) -> None:
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[-1] == self.dim:
            message = off_sphere_message(value, "value")
            if message is not None:
                raise ValueError(message)
        super()._validate_sample(value)

    def __getstate__(self) -> dict:
        """The instance without its derived tensors: the caller's ``loc`` and ``concentration`` (leaves when the
        caller's were) are copied and the rest is rebuilt, so ``copy.deepcopy`` works on parameters that require
        grad (torch refuses to deep-copy the non-leaf normalized ``loc``)."""
        state = dict(self.__dict__)
        for derived in ("loc", "concentration", "_bessel", "_bessel_source"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._set_parameters(self._given_loc, self._given_concentration)

    @property
    def dim(self) -> int:
        """The ambient dimension d (samples have ``shape[-1] == d``)."""
        return self.event_shape[0]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(VonMisesFisher, _instance)
        batch_shape = torch.Size(batch_shape)
        super(VonMisesFisher, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        new._given_loc, new._given_concentration = self._given_loc, self._given_concentration
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.concentration = self.concentration.expand(batch_shape)
        new._bessel = None
        new._bessel_source = None
        return new

    def select(self, index: torch.Tensor) -> "VonMisesFisher":
        """The distributions at ``index`` along the first batch dimension, e.g. one per label out of one per class.

        The selection shares this distribution's Bessel terms: when it first needs them (log_prob, entropy, mean,
        a KL, a gradient of rsample in the concentration) they are evaluated once for this distribution's batch
        and gathered, so N selected rows out of C cost C evaluations, not N. Nothing is read on the host: an
        out-of-range index fails as tensor indexing does.

        Args:
            index: integer tensor of any shape I, values in [0, batch_shape[0]).

        Returns:
            VonMisesFisher with batch_shape I + batch_shape[1:], the same validation setting.
        """
        if len(self.batch_shape) == 0:
            raise ValueError("select needs a distribution with a batch dimension; this one has batch_shape ()")
        if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.dtype == torch.bool:
            raise ValueError(f"index must be an integer tensor, got {getattr(index, 'dtype', type(index).__name__)}")
        new = VonMisesFisher.__new__(VonMisesFisher)
        batch_shape = index.shape + self.batch_shape[1:]
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        new._given_loc, new._given_concentration = self.loc[index], self.concentration[index]
        new.loc, new.concentration = new._given_loc, new._given_concentration
        new._bessel = None
        new._bessel_source = (self, index)
        return new

    # ----- Bessel terms, evaluated at most once per distribution ------------------------------------------
    def _bessel_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log I_{d/2-1}(kappa), A_d(kappa)), without gradient, in the work dtype; shape batch_shape each.

        Sampling (its kappa-gradient needs A_d), ``log_prob``, ``entropy``, ``mean`` and the KLs all need these;
        they are evaluated on first use and kept with the distribution, which like every torch distribution
        describes its parameters as they were when it was built (build a new one after changing them in place).
        """
        if self._bessel is None:
            if self._bessel_source is not None:  # a selection: gather from the distribution it was selected from
                source, index = self._bessel_source
                self._bessel = tuple(values[index] for values in source._bessel_values())
            else:
                self._bessel = bessel_values(0.5 * self.dim - 1.0, _work(self.concentration))
        return self._bessel

    def _normalizer_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log C_d(kappa), A_d(kappa)) in the work dtype, differentiable in the concentration.

        log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa), A_d = I_{d/2} / I_{d/2-1}.
        """
        order = 0.5 * self.dim - 1.0
        kappa = _work(self.concentration)
        log_bessel, mean_length = log_bessel_iv_and_ratio(order, kappa, values=self._bessel_values())
        return order * torch.log(kappa) - 0.5 * self.dim * math.log(2.0 * math.pi) - log_bessel, mean_length

    @property
    def mean(self) -> torch.Tensor:
        """E[z] = A_d(kappa) mu, shape batch_shape + (d,)."""
        return self._normalizer_terms()[1].to(self.loc.dtype).unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Draw reparameterized samples, shape sample_shape + batch_shape + (d,)."""
        shape = self._extended_shape(sample_shape)
        batch, dtype, loc = shape[:-1], self.loc.dtype, self.loc
        # The kappa-gradient of w needs A_d(kappa): pass the cached value when a gradient can flow.
        mean_length = None
        if self.concentration.requires_grad and torch.is_grad_enabled() and gradient_needs_mean(self.dim):
            mean_length = self._bessel_values()[1].expand(batch)
        w, tangent_length = sample_radial(self.concentration.expand(batch), self.dim, mean_length)  # (S..., B...)

        # Around e_1 the sample is w e_1 + sqrt(1 - w^2) g / |g| with g isotropic orthogonal to e_1; a
        # Householder reflection takes it to loc.
        normal, normal_length = _tangent_directions(shape, dtype, loc.device)
        return reflect_to_mean_direction(w, tangent_length, normal, normal_length, loc)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log density w.r.t. the surface measure on S^{d-1}; value (..., d) -> (...)."""
        if self._validate_args:
            self._validate_sample(value)
        log_normalizer = self._normalizer_terms()[0].to(value.dtype)
        return log_normalizer + self.concentration * _row_dot(value, self.loc)

    def entropy(self) -> torch.Tensor:
        """H = -log C_d(kappa) - kappa A_d(kappa), shape batch_shape."""
        return self._entropy_work().to(self.concentration.dtype)

    def _entropy_work(self) -> torch.Tensor:
        log_normalizer, mean_length = self._normalizer_terms()
        return -log_normalizer - _work(self.concentration) * mean_length


class HypersphericalUniform(Distribution):
    """The uniform distribution on the unit sphere S^{dim-1} of R^dim.

    Args:
        dim: ambient dimension d >= 2 (samples have shape (..., d)).
        batch_shape: batch shape of the distribution.
        dtype, device: of the samples and log-densities (default dtype / CPU).
    """

    arg_constraints = {}
    support = unit_sphere
    has_rsample = False

    def __init__(self, dim: int, batch_shape=(), dtype: torch.dtype | None = None, device=None, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2 (the ambient dimension), got {dim!r}")
        self._dim = dim
        self._dtype = dtype or torch.get_default_dtype()
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    @property
    def dim(self) -> int:
        return self._dim

    def _validate_sample(self, value: torch.Tensor) -> None:
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[-1] == self._dim:
            message = off_sphere_message(value, "value")
            if message is not None:
                raise ValueError(message)
        super()._validate_sample(value)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new._dim, new._dtype, new._device = self._dim, self._dtype, self._device
        super(HypersphericalUniform, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self._dtype, device=self._device)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Normalized Gaussians, shape sample_shape + batch_shape + (d,)."""
        shape = self._extended_shape(sample_shape)
        normal = torch.randn(shape, dtype=self._dtype, device=self._device)
        return normal / normal.norm(dim=-1, keepdim=True)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -log_sphere_area(self._dim), dtype=value.dtype, device=value.device)

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, log_sphere_area(self._dim), dtype=self._dtype, device=self._device)


def _check_same_dim(p_dim: int, q_dim: int) -> None:
    if p_dim != q_dim:
        raise ValueError(f"KL between distributions on spheres of different dimensions: d = {p_dim} and d = {q_dim}")


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p: VonMisesFisher, q: HypersphericalUniform) -> torch.Tensor:
    """KL(vMF(mu, kappa) || U(S^{d-1})) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}|."""
    _check_same_dim(p.event_shape[0], q.event_shape[0])  # not q.dim: s-vae's uniform counts the sphere's own
    kl = _KLToUniform.apply(p.concentration, *p._bessel_values(), p.dim)
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))


@register_kl(VonMisesFisher, VonMisesFisher)
def _kl_vmf_vmf(p: VonMisesFisher, q: VonMisesFisher) -> torch.Tensor:
    """KL(vMF(mu_p, kappa_p) || vMF(mu_q, kappa_q)), closed form.

    E_p[log p - log q] = log C(kappa_p) - log C(kappa_q) + kappa_p A(kappa_p) - kappa_q A(kappa_p) mu_q^T mu_p,
    using E_p[z] = A(kappa_p) mu_p.
    """
    _check_same_dim(p.dim, q.dim)
    kappa_p, kappa_q = _work(p.concentration), _work(q.concentration)
    alignment = _work(_row_dot(p.loc, q.loc))
    log_normalizer_p, mean_length_p = p._normalizer_terms()
    log_normalizer_q, _ = q._normalizer_terms()
    kl = log_normalizer_p - log_normalizer_q + mean_length_p * (kappa_p - kappa_q * alignment)
    return kl.to(torch.promote_types(p.concentration.dtype, q.concentration.dtype))


@register_kl(HypersphericalUniform, VonMisesFisher)
def _kl_uniform_vmf(p: HypersphericalUniform, q: VonMisesFisher) -> torch.Tensor:
    """KL(U(S^{d-1}) || vMF(mu, kappa)) = -log |S^{d-1}| - log C_d(kappa), closed form.

    E_U[log U - log q] = -log |S^{d-1}| - log C_d(kappa) - kappa mu^T E_U[z], and E_U[z] = 0. It does not depend
    on mu; it is the vMF's log-partition relative to the uniform, log(Gamma(d/2) (2 / kappa)^(d/2-1) I_{d/2-1}(kappa)).
    """
    _check_same_dim(p.event_shape[0], q.event_shape[0])
    kl = -log_sphere_area(q.event_shape[0]) - q._normalizer_terms()[0]
    dtype = torch.promote_types(p._dtype, q.concentration.dtype)
    return kl.to(dtype).expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))


@register_kl(HypersphericalUniform, HypersphericalUniform)
def _kl_uniform_uniform(p: HypersphericalUniform, q: HypersphericalUniform) -> torch.Tensor:
    """KL(U(S^{d-1}) || U(S^{d-1})) = 0 (different spheres have no KL: ValueError)."""
    _check_same_dim(p.event_shape[0], q.event_shape[0])
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return torch.zeros(shape, dtype=torch.promote_types(p._dtype, q._dtype), device=p._device)
