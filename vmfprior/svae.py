"""A drop-in for the distributions of the s-vae reference package (``hyperspherical_vae.distributions``).

Code written for s-vae (Davidson et al. 2018) changes one import line::

    from hyperspherical_vae.distributions import VonMisesFisher, HypersphericalUniform   # before
    from vmfprior.svae import VonMisesFisher, HypersphericalUniform                      # after

and gets exact samples and unbiased gradients in the concentration (s-vae differentiates through the accepted
proposals of its rejection sampler and switches to an approximate envelope at large concentrations). The
constructors keep s-vae's conventions:

* ``VonMisesFisher(loc (..., m), scale (..., 1))``: the concentration carries a trailing axis of size 1;
* ``HypersphericalUniform(dim)``: ``dim`` is the sphere's own dimension, samples live in ``R^(dim + 1)``.

``rsample``, ``sample``, ``log_prob``, ``entropy``, ``mean`` and ``kl_divergence`` return s-vae's shapes:
``rsample(n)`` gives ``(n, ..., m)``, ``log_prob`` and ``entropy`` drop the last axis, the uniform's
``entropy()`` has shape ``(1,)``. One difference is deliberate: ``batch_shape`` is ``loc.shape[:-1]`` with event
shape ``(m,)``, as for every torch distribution (s-vae reports ``loc.shape`` as the batch shape), so
``Independent``, ``expand`` and torch's KL registry behave as documented.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence, register_kl

from . import distributions as _core

__all__ = ["VonMisesFisher", "HypersphericalUniform"]


def _sample_shape(shape) -> torch.Size:
    """s-vae accepts an int as the sample shape."""
    return torch.Size([shape]) if isinstance(shape, int) else torch.Size(shape)


def _squeezed(scale: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """s-vae's (..., 1) concentration as the library's (...)."""
    return scale.squeeze(-1) if scale.dim() == loc.dim() and scale.shape[-1] == 1 else scale


class VonMisesFisher(_core.VonMisesFisher):
    """vMF with s-vae's constructor: ``loc`` ``(..., m)`` unit vectors and ``scale`` ``(..., 1)`` concentrations.

    Args:
        loc: ``(..., m)`` mean directions.
        scale: ``(..., 1)`` positive concentrations (a ``(...)`` tensor is accepted as well).
        validate_args: as for torch distributions.
        k: s-vae's number of proposals per rejection round; accepted for compatibility and unused (the sampler
            chooses its own).
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None, k: int = 1):
        if not isinstance(loc, torch.Tensor):
            raise _core.ParameterTypeError(
                f"loc must be a floating-point tensor of shape (..., m), got {type(loc).__name__}"
            )
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        super().__init__(loc, _squeezed(scale, loc), validate_args=validate_args)
        self._given_scale = scale  # as given (a leaf when the caller's is), for deepcopy and pickle

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_given_concentration", None)  # the squeezed view of _given_scale, rebuilt on load
        return state

    def __setstate__(self, state: dict) -> None:
        state["_given_concentration"] = _squeezed(state["_given_scale"], state["_given_loc"])
        super().__setstate__(state)

    @property
    def scale(self) -> torch.Tensor:
        """The concentration with s-vae's trailing axis: ``(..., 1)``."""
        return self.concentration.unsqueeze(-1)

    @property
    def stddev(self) -> torch.Tensor:
        """s-vae's ``stddev`` is its ``scale`` (the concentration), ``(..., 1)``."""
        return self.scale

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, self._get_checked_instance(VonMisesFisher, _instance))
        new._given_scale = self._given_scale
        return new

    def rsample(self, shape=torch.Size()) -> torch.Tensor:
        return super().rsample(_sample_shape(shape))

    def sample(self, shape=torch.Size()) -> torch.Tensor:
        return super().sample(_sample_shape(shape))


class HypersphericalUniform(_core.HypersphericalUniform):
    """The uniform distribution on ``S^dim``, with s-vae's constructor: samples are ``(..., dim + 1)``.

    Args:
        dim: the sphere's own dimension (s-vae's convention; ``vmfprior.HypersphericalUniform`` takes ``dim + 1``).
        validate_args: as for torch distributions.
        device: of the samples.
    """

    def __init__(self, dim: int, validate_args: bool | None = None, device="cpu"):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(
                f"dim must be an integer >= 1 (the sphere's own dimension, s-vae's convention), got {dim!r}"
            )
        super().__init__(dim + 1, validate_args=validate_args, device=device)

    @property
    def dim(self) -> int:
        """The sphere's own dimension, as in s-vae (the ambient dimension is ``dim + 1``)."""
        return self._dim - 1

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, self._get_checked_instance(HypersphericalUniform, _instance))

    def sample(self, shape=torch.Size()) -> torch.Tensor:
        return super().sample(_sample_shape(shape))

    def entropy(self) -> torch.Tensor:
        """``log |S^dim|``, shaped ``(1,)`` without a batch shape, as in s-vae."""
        entropy = super().entropy()
        return entropy.reshape(1) if entropy.dim() == 0 else entropy


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(p: VonMisesFisher, q: HypersphericalUniform) -> torch.Tensor:
    """KL to the uniform distribution on ``S^q.dim``: the library's closed form, in the ambient dimension."""
    ambient = _core.HypersphericalUniform(q.dim + 1, batch_shape=q.batch_shape, device=q._device)
    return kl_divergence(p, ambient)
