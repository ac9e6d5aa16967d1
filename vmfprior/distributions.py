"""Distributions on the unit sphere S^{d-1} of R^d: von Mises-Fisher and uniform, with closed-form KLs.

Both follow ``torch.distributions``: parameters are checked against ``arg_constraints`` when validation is on,
``batch_shape``/``event_shape`` are set in ``__init__``, ``expand`` works, and the KLs are registered with
``torch.distributions.register_kl`` so ``kl_divergence`` and ``Independent`` treat them like built-ins.
"""

from __future__ import annotations

import math
from functools import cache
from typing import cast

import torch
from torch.distributions import Distribution, register_kl

from .bessel import bessel_values, cached_constant, eager_on_cpu, host_int, log_bessel_iv_and_ratio, work_dtype
from .constraints import UNIT_NORM_TOLERANCE, off_sphere_message, positive_finite, unit_sphere  # noqa: F401
from .reflection import SHORT_ROW, reflect_to_mean_direction
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
    dim = host_int(dim)
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
    normal.select(-1, 0).zero_()
    return normal, _row_norm(normal)


def _row_norm(rows: torch.Tensor) -> torch.Tensor:
    """|rows| along the last dimension: one operation, or for short rows the BLAS product of ``row_dot`` (torch's
    reductions over a short last dimension are slower per element on CPUs)."""
    if rows.shape[-1] > SHORT_ROW:
        return torch.linalg.vector_norm(rows, dim=-1)
    return _row_dot(rows, rows).sqrt()


def _expand(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``tensor.expand(shape)``, without an operation where the shape is already that (always the operation under
    jit.trace, which records sizes as values)."""
    return tensor if not torch.jit.is_tracing() and tensor.shape == shape else tensor.expand(shape)


def _work(tensor: torch.Tensor) -> torch.Tensor:
    """Promote to float64 (float32 on MPS, which has none) for terms that cancel, e.g. KL at small kappa."""
    return tensor.to(work_dtype(tensor.device))


# Below kappa = SERIES_REACH * sqrt(2 (v + 1)) the log-partition S(kappa) is summed from its power series (which
# is exact there to rounding in SERIES_TERMS terms); above it comes from log I_v. At small kappa the KL to the
# uniform is kappa^2 / (2 d), far below the rounding of log I_v - v log(kappa / 2) formed from the Bessel terms.
SERIES_REACH = math.sqrt(2.0)
SERIES_TERMS = 18


def _log_partition_series(order: float, kappa: torch.Tensor) -> torch.Tensor:
    """S(kappa) = log(Gamma(v + 1) (2 / kappa)^v I_v(kappa)) = log sum_k (kappa^2 / 4)^k / (k! (v + 1)_k).

    Term k + 1 is term k times kappa^2 / (4 (k + 1) (v + k + 1)) <= 1 / (k + 1) where this is used, so
    SERIES_TERMS terms reach float64 rounding. Differentiable to every order by autograd.
    """
    factors = (kappa * kappa).unsqueeze(-1) * cached_constant(_series_coefficients, order, kappa.dtype, kappa.device)
    return torch.log1p(torch.cumprod(factors, dim=-1).sum(-1))


@cache
def _series_coefficients(order: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1 / (4 k (v + k)) for k = 1 .. SERIES_TERMS: term k of the series is term k - 1 times kappa^2 times this."""
    steps = torch.arange(1, SERIES_TERMS + 1, dtype=torch.float64)
    return (0.25 / (steps * (steps + order))).to(dtype=dtype, device=device)


def _log_partition_values(dim: int, kappa: torch.Tensor, log_bessel: torch.Tensor) -> torch.Tensor:
    """S(kappa) from log I_v(kappa) (from the series where kappa is small), without a graph; dtype of kappa."""
    order = 0.5 * dim - 1.0
    log_partition = torch.add(log_bessel, torch.log(kappa), alpha=-order).add_(
        order * math.log(2.0) + math.lgamma(order + 1.0)
    )
    small = kappa <= SERIES_REACH * math.sqrt(2.0 * (order + 1.0))
    if not eager_on_cpu(kappa) or small.any():
        # no graph here: where kappa is large the series may overflow to inf, which the selection discards
        log_partition = torch.where(small, _log_partition_series(order, kappa), log_partition)
    return log_partition


class _LogPartition(torch.autograd.Function):
    """(S(kappa), A_d(kappa)) from Bessel values evaluated beforehand; differentiable in kappa to every order.

    S' = A and A' = 1 - A^2 - (d - 1) A / kappa (the Riccati equation of the Bessel ratio). The backward writes
    these with the saved output A, which stays attached to the graph, so differentiating the backward applies the
    same equation again: second and higher derivatives are exact. One node for what would otherwise be a chain of
    small ones (at VAE batch sizes their number is the cost).
    """

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, dim: int, log_bessel: torch.Tensor, ratio: torch.Tensor):
        ctx.set_materialize_grads(False)  # an output without a gradient is skipped, not multiplied by zeros
        log_partition = _log_partition_values(dim, kappa, log_bessel)
        mean_length = ratio.to(dtype=kappa.dtype, copy=True)
        ctx.dim = dim
        ctx.save_for_backward(kappa, mean_length)
        return log_partition.to(kappa.dtype), mean_length

    @staticmethod
    def backward(ctx, grad_log_partition: torch.Tensor | None, grad_mean_length: torch.Tensor | None):
        if grad_log_partition is None and grad_mean_length is None:
            return None, None, None, None
        kappa, mean_length = ctx.saved_tensors
        grad = grad_log_partition * mean_length if grad_log_partition is not None else None
        if grad_mean_length is not None:
            slope = 1.0 - mean_length * mean_length - (ctx.dim - 1.0) * _ratio_over_x(mean_length, kappa)
            grad = grad_mean_length * slope if grad is None else grad + grad_mean_length * slope
        return grad, None, None, None


def _ratio_over_x(ratio: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """A_d(kappa) / kappa, kappa > 0 (the distributions' concentrations are positive)."""
    return ratio / kappa


def _log_partition(dim: int, kappa: torch.Tensor, values: tuple[torch.Tensor, torch.Tensor]):
    """(S(kappa), A_d(kappa)) in the work dtype, differentiable in kappa to every order; shapes of kappa.

    S(kappa) = log I_v(kappa) - v log(kappa / 2) + log Gamma(v + 1), v = d/2 - 1, is the log-partition function
    of the vMF relative to the uniform: log C_d(kappa) = -log |S^{d-1}| - S(kappa), S' = A_d, S'' = A_d' > 0.
    Every closed form below is written with S, which is 0 at kappa = 0 and needs no cancellation of large terms:
    below kappa = SERIES_REACH sqrt(2 (v + 1)) it is summed from its power series.
    """
    dim = host_int(dim)
    log_bessel, mean_length = values
    if not kappa.requires_grad:
        return _LogPartition.forward(_NoContext(), kappa, dim, log_bessel, mean_length)
    if torch.jit.is_tracing():  # jit.trace fails on a two-output autograd function with an unused output
        return _log_partition_autograd(dim, kappa, values)
    return _LogPartition.apply(kappa, dim, log_bessel, mean_length)


def _log_partition_autograd(dim: int, kappa: torch.Tensor, values: tuple[torch.Tensor, torch.Tensor]):
    """``_log_partition`` from single-output autograd functions and plain operations (same values, derivatives)."""
    order = 0.5 * dim - 1.0
    log_bessel, mean_length = log_bessel_iv_and_ratio(order, kappa, values=values)
    from_bessel = log_bessel - order * torch.log(0.5 * kappa) + math.lgamma(order + 1.0)
    small = kappa <= SERIES_REACH * math.sqrt(2.0 * (order + 1.0))
    from_series = _log_partition_series(order, torch.where(small, kappa, 0.0))
    return torch.where(small, from_series, from_bessel), mean_length


class _NoContext:
    """Stands in for autograd's context when nothing needs a gradient (no node is recorded)."""

    def save_for_backward(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


class _KLToUniform(torch.autograd.Function):
    """kappa A - S as one node: dKL/dkappa = A + kappa A' - S' = kappa A' = kappa (1 - A^2) - (d - 1) A.

    The backward is written with A, the graph-attached output of ``_LogPartition``, so a second backward gets
    A' + kappa A'' exactly. ``log_partition`` and ``mean_length`` are functions of kappa: their gradient is the
    total one returned for kappa, not passed on.
    """

    @staticmethod
    def forward(ctx, kappa, log_partition, mean_length, dim):
        ctx.dim = dim
        ctx.save_for_backward(kappa, mean_length)
        return kappa * mean_length - log_partition

    @staticmethod
    def backward(ctx, grad_kl):
        kappa, mean_length = ctx.saved_tensors
        derivative = kappa * (1.0 - mean_length * mean_length) - (ctx.dim - 1.0) * mean_length
        return grad_kl * derivative, None, None, None


def _eager() -> bool:
    """Whether custom autograd nodes with hand-written backwards may be used: not under ``torch.compile``,
    ``torch.export`` or ``torch.jit.trace``, which record the plain operations instead."""
    return not (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing())


def _loc_norm(loc: torch.Tensor) -> torch.Tensor:
    """|loc| along the last dimension (keepdim), recorded for autograd only where ``_normalize`` needs it to be."""
    if loc.requires_grad and torch.is_grad_enabled() and _eager():
        with torch.no_grad():  # _Normalize's backward differentiates the normalization itself
            return loc.norm(dim=-1, keepdim=True)
    return loc.norm(dim=-1, keepdim=True)


def _normalize(loc: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """loc / |loc|, ``norm`` from ``_loc_norm(loc)``."""
    if loc.requires_grad and torch.is_grad_enabled() and _eager():
        return _Normalize.apply(loc, norm)
    return loc / norm


class _Normalize(torch.autograd.Function):
    """y = x / |x| along the last dimension as one node: dL/dx = (g - y (y . g)) / |x|.

    Autograd's own backward of ``x / x.norm()`` is a dozen small operations (the division's two inputs, the norm's
    backward, their sum); this is six. With ``create_graph=True`` the backward differentiates the plain operations
    instead, so derivatives of every order stay exact. ``norm`` is |x|, computed without a graph by the caller.
    """

    @staticmethod
    def forward(ctx, loc, norm):
        ctx.save_for_backward(loc, norm)  # not the output: saving an output costs two more operations
        return loc / norm

    @staticmethod
    def backward(ctx, grad):
        loc, norm = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain operations, to every order
            plain = loc / loc.norm(dim=-1, keepdim=True)
            return torch.autograd.grad(plain, loc, grad, create_graph=True)[0], None
        unit = loc / norm
        along = _row_dot(grad, unit).unsqueeze(-1)
        return torch.addcmul(grad, unit, along, value=-1.0).div_(norm), None


class _KLToUniformFromValues(torch.autograd.Function):
    """KL(p || uniform) = kappa A - S from the Bessel values as one node, in ``dtype``, for a concentration that
    requires grad (eager only).

    Forward in the work dtype from ``kappa`` (the concentration cast to it, without a graph); backward
    dKL/dconcentration = kappa A' = kappa (1 - A^2) - (d - 1) A, as ``_KLToUniform`` writes it. With
    ``create_graph=True`` the backward differentiates ``_LogPartition`` and ``_KLToUniform`` instead, whose
    derivatives are exact to every order.
    """

    @staticmethod
    def forward(ctx, concentration, kappa, dim, log_bessel, mean_length, dtype):
        ctx.dim, ctx.values = dim, (log_bessel, mean_length)
        ctx.save_for_backward(concentration, kappa, mean_length)
        return torch.addcmul(_log_partition_values(dim, kappa, log_bessel).neg_(), kappa, mean_length).to(dtype)

    @staticmethod
    def backward(ctx, grad):
        concentration, kappa, mean_length = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: through the nodes whose derivatives are exact to every order
            kappa_graph = _work(concentration)
            log_partition, mean_graph = _log_partition(ctx.dim, kappa_graph, ctx.values)
            kl = _KLToUniform.apply(kappa_graph, log_partition, mean_graph, ctx.dim)
            return torch.autograd.grad(kl, concentration, grad, create_graph=True)[0], None, None, None, None, None
        slope = torch.add(kappa * (1.0 - mean_length * mean_length), mean_length, alpha=1.0 - ctx.dim)
        return (grad * slope).to(concentration.dtype), None, None, None, None, None


def _unit_in_work(loc: torch.Tensor) -> torch.Tensor:
    """loc in the work dtype, normalized there (the distribution's model is the unit vector loc / |loc|)."""
    loc = _work(loc)
    return loc / loc.norm(dim=-1, keepdim=True)


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
    """``rsample`` is reparameterized: gradients reach ``loc`` and ``concentration`` through the draws."""
    # Derived values, set by ``_set_parameters`` (or ``expand``/``select``) and filled in on first use.
    _bessel: tuple[torch.Tensor, torch.Tensor] | None
    _bessel_source: tuple[VonMisesFisher, torch.Tensor] | None
    _kappa_work: torch.Tensor | None

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
        norm = _loc_norm(loc)  # shared by the check and the normalization
        if self._validate_args:
            self._check_parameters(loc, concentration, norm)
        self._set_parameters(loc, concentration, norm)

    def _set_parameters(self, loc: torch.Tensor, concentration: torch.Tensor, norm: torch.Tensor | None = None) -> None:
        """Store the caller's tensors and derive what every method uses from them.

        ``loc`` is normalized here, once: validation accepts vectors within UNIT_NORM_TOLERANCE of unit norm, and
        every method (log_prob, the KLs, rsample, mean) then sees the same unit vector. The caller's tensors are
        kept as given so that ``copy.deepcopy`` and pickling copy leaves (see ``__getstate__``). ``norm``: the
        result of ``_loc_norm(loc)``, if the caller has it.
        """
        self._given_loc, self._given_concentration = loc, concentration
        loc = _normalize(loc, _loc_norm(loc) if norm is None else norm)
        shape = self.batch_shape + self.event_shape
        self.loc = _expand(loc, shape)
        self.concentration = _expand(concentration, self.batch_shape)
        self._bessel = None
        self._bessel_source = None
        self._kappa_work = None

    def _check_parameters(
        self, loc: torch.Tensor, concentration: torch.Tensor, norm: torch.Tensor | None = None
    ) -> None:
        """The ``arg_constraints`` checks, with messages that name the worst entry instead of printing the tensor.

        First one host read of the extremes of |loc| and of the concentration (a few tensor operations); only when
        that finds a value outside the constraints are the entries examined one by one for the message.
        """
        if norm is not None and norm.numel() and concentration.numel() and norm.device == concentration.device:
            with torch.no_grad():
                low, high, kappa_low, kappa_high = torch.stack(
                    [*torch.aminmax(norm), *torch.aminmax(concentration)]
                ).tolist()
            # the same tests as below (nan fails every comparison): |norm - 1| <= tolerance, 0 < kappa < inf
            if (
                abs(low - 1.0) <= UNIT_NORM_TOLERANCE
                and abs(high - 1.0) <= UNIT_NORM_TOLERANCE
                and kappa_low > 0.0
                and kappa_high < math.inf
            ):
                return
        message = off_sphere_message(loc, "loc")
        if message is not None:
            raise ValueError(message)
        bad = ~positive_finite.check(concentration.detach())
        if bool(bad.any()):
            first = tuple(int(i) for i in torch.nonzero(bad)[0]) if bad.dim() else ()
            value = float(concentration.detach()[first]) if first else float(concentration.detach())
            raise ValueError(
                f"concentration must be positive and finite; {int(bad.sum())} of {bad.numel()} values are "
                f"not, the first, at index {first}, is {value!r}"
            )

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
        for derived in ("loc", "concentration", "_bessel", "_bessel_source", "_kappa_work"):
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
        new._kappa_work = None
        return new

    def select(self, index: torch.Tensor) -> VonMisesFisher:
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
        new._kappa_work = None
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
                self._bessel = cast(
                    "tuple[torch.Tensor, torch.Tensor]", tuple(values[index] for values in source._bessel_values())
                )
            else:
                self._bessel = bessel_values(0.5 * self.dim - 1.0, self._kappa_value())
        return self._bessel

    def _kappa_value(self) -> torch.Tensor:
        """The concentration in the work dtype, without a graph (kept with the Bessel terms)."""
        if self._kappa_work is None:
            with torch.no_grad():
                kappa = _work(self.concentration)
            self._kappa_work = kappa.detach() if kappa.requires_grad else kappa
        return self._kappa_work

    def _log_partition(self, kappa: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(S(kappa), A_d(kappa)) of ``_log_partition``: work dtype, batch_shape, differentiable in kappa.

        ``kappa``: the concentration already cast to the work dtype by the caller. A caller that uses kappa in
        several terms casts it once: the gradients of terms that cancel (A - S' in the KL) then add up in the
        work dtype, not after a cast back to float32 each.
        """
        kappa = _work(self.concentration) if kappa is None else kappa
        return _log_partition(self.dim, kappa, self._bessel_values())

    def _normalizer_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log C_d(kappa), A_d(kappa)) in the work dtype, differentiable in the concentration.

        log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa) = -log |S^{d-1}| - S(kappa).
        """
        log_partition, mean_length = self._log_partition()
        # tensor - number (not number - tensor, which jit.trace records with a float32 constant when tracing grads)
        return log_partition.neg() - log_sphere_area(self.dim), mean_length

    @property
    def mean(self) -> torch.Tensor:
        """E[z] = A_d(kappa) mu, shape batch_shape + (d,)."""
        return self._log_partition()[1].to(self.loc.dtype).unsqueeze(-1) * self.loc

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
            mean_length = _expand(self._bessel_values()[1], batch)
        kappa_work = _expand(self._kappa_value(), batch) if self._kappa_work is not None else None  # cast already
        w, tangent_length = sample_radial(
            _expand(self.concentration, batch), self.dim, mean_length, kappa_work
        )  # (S..., B...)

        # Around e_1 the sample is w e_1 + sqrt(1 - w^2) g / |g| with g isotropic orthogonal to e_1; a
        # reflection that maps e_1 to loc takes it there (see ``reflection``).
        normal, normal_length = _tangent_directions(shape, dtype, loc.device)
        return reflect_to_mean_direction(w, tangent_length, normal, normal_length, loc)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log density w.r.t. the surface measure on S^{d-1}; value (..., d) -> (...).

        The result has torch's promoted dtype of ``value`` and the parameters (a float64 value on a float32
        distribution gives float64).
        """
        if self._validate_args:
            self._validate_sample(value)
        alignment = _row_dot(value, self.loc)  # promoted dtype
        dtype = torch.promote_types(alignment.dtype, self.concentration.dtype)
        log_normalizer = self._normalizer_terms()[0].to(dtype)
        return log_normalizer + self.concentration.to(dtype) * alignment.to(dtype)

    def entropy(self) -> torch.Tensor:
        """H = -log C_d(kappa) - kappa A_d(kappa) = log |S^{d-1}| - KL(p || uniform), shape batch_shape."""
        return self._entropy_work().to(self.concentration.dtype)

    def _entropy_work(self) -> torch.Tensor:
        return self._kl_to_uniform_work().neg() + log_sphere_area(self.dim)

    def _kl_to_uniform_work(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """KL(p || U(S^{d-1})) = kappa A_d(kappa) - S(kappa) >= 0 in the work dtype (kappa^2 / (2 d) at small kappa),
        or in ``dtype``."""
        if self.concentration.requires_grad and torch.is_grad_enabled() and _eager():
            log_bessel, mean_length = self._bessel_values()
            return _KLToUniformFromValues.apply(
                self.concentration,
                self._kappa_value(),
                self.dim,
                log_bessel,
                mean_length,
                dtype or work_dtype(self.concentration.device),
            )
        kappa = _work(self.concentration)
        log_partition, mean_length = self._log_partition(kappa)
        if not kappa.requires_grad:
            kl = kappa * mean_length - log_partition
        else:
            kl = _KLToUniform.apply(kappa, log_partition, mean_length, self.dim)
        return kl if dtype is None else kl.to(dtype)


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
    """The uniform distribution has no parameters to differentiate; ``sample`` draws without gradients."""

    def __init__(self, dim: int, batch_shape=(), dtype: torch.dtype | None = None, device=None, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2 (the ambient dimension), got {dim!r}")
        self._dim = dim
        self._dtype = dtype or torch.get_default_dtype()
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    @property
    def dim(self) -> int:
        """Ambient dimension d of the sphere S^{d-1}."""
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
    """KL(vMF(mu, kappa) || U(S^{d-1})) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}| = kappa A_d - S(kappa).

    Differentiable in kappa to every order (its second derivative is A_d + kappa A_d'').
    """
    _check_same_dim(p.event_shape[0], q.event_shape[0])  # not q.dim: s-vae's uniform counts the sphere's own
    kl = p._kl_to_uniform_work(p.concentration.dtype)
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return _expand(kl, shape)


@register_kl(VonMisesFisher, VonMisesFisher)
def _kl_vmf_vmf(p: VonMisesFisher, q: VonMisesFisher) -> torch.Tensor:
    """KL(vMF(mu_p, kappa_p) || vMF(mu_q, kappa_q)), closed form, >= 0 and exactly 0 for p = q.

    E_p[log p - log q] = log C(kappa_p) - log C(kappa_q) + kappa_p A(kappa_p) - kappa_q A(kappa_p) mu_q^T mu_p,
    using E_p[z] = A(kappa_p) mu_p. With log C = -log |S^{d-1}| - S and 1 - mu_q^T mu_p = |mu_p - mu_q|^2 / 2
    (unit vectors, formed in float64), it splits into two terms that are each >= 0:

        KL = [S(kappa_q) - S(kappa_p) - A(kappa_p) (kappa_q - kappa_p)] + kappa_q A(kappa_p) |mu_p - mu_q|^2 / 2.

    The first is the Bregman divergence of the convex S (S' = A), zero for kappa_p = kappa_q; rounding can make
    it a few ulps of S negative, which is clamped to 0. The second has no cancellation at all.
    """
    _check_same_dim(p.dim, q.dim)
    kappa_p, kappa_q = _work(p.concentration), _work(q.concentration)
    log_partition_p, mean_length_p = p._log_partition(kappa_p)
    log_partition_q, _ = q._log_partition(kappa_q)
    bregman = (log_partition_q - log_partition_p - mean_length_p * (kappa_q - kappa_p)).clamp(min=0.0)
    difference = _unit_in_work(p.loc) - _unit_in_work(q.loc)
    half_distance_sq = 0.5 * _row_dot(difference, difference)
    kl = bregman + kappa_q * mean_length_p * half_distance_sq
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
