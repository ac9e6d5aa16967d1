"""Importance-weighted log-likelihood of a latent-variable model (Burda et al. 2016).

``log p(x) ~= logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K`` with ``z_k ~ q(z | x)``. Samples are drawn
in chunks and folded into a running ``logaddexp`` per example, so memory does not grow with ``K``; the test
set is streamed in batches.

The model is anything with:

* ``proposal(x, y)`` -> a distribution over ``z`` with batch shape ``(B,)``: ``sample((S,))`` and ``log_prob``;
* ``log_joint(x, y, z (S, B, d))`` -> a dict of named ``(S, B)`` log joint densities, e.g.
  ``{"log_px": log p(x, z)}`` or, for label-aware models, also ``"log_pxy"`` (log p(x, y, z)) and
  ``"log_px_given_y"`` (log p(x, z | y)); every entry becomes an estimate of the same name;
* ``elbo(x, y)`` -> terms with an ``elbo`` field ``(B,)`` (reported next to the estimates).

When the proposal depends on the label (``model.proposal_uses_label``, e.g. an encoder ``q(z | x, y)``), the
label cannot be summed out inside one importance weight. Then every label ``c`` gets its own estimate of
``log p(x, y = c)`` from its own proposal ``q(z | x, c)`` (``log_joint(..., marginal=False)``), and
``log p(x) = logsumexp_c log p(x, y = c)``: ``C`` times the work.

``vae.models.HypersphericalVAE`` is one; ``python -m vae.loglik --run RUN`` scores a trained run.
"""

from __future__ import annotations

import math

import torch

from eval.settings import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE

__all__ = ["importance_weighted_log_likelihood", "evaluate_test_set", "DEFAULT_BATCH_SIZE", "DEFAULT_CHUNK_SIZE"]


@torch.no_grad()
def importance_weighted_log_likelihood(
    model, x: torch.Tensor, y: torch.Tensor | None = None, num_samples: int = 500, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> dict:
    """IWAE estimates of a batch's log-likelihoods, streaming over ``num_samples`` in chunks.

    Args:
        model: see the module docstring (evaluated as is; call ``.eval()`` first if needed).
        x: ``(B, ...)`` inputs in the form ``model.proposal`` and ``model.log_joint`` take.
        y: ``(B,)`` labels, or None for models that do not use them.
        num_samples: ``K``, samples from the proposal per example (>= 1).
        chunk_size: samples drawn at once; bounds memory.

    Returns:
        dict of ``(B,)`` float64 tensors, one per entry of ``model.log_joint``.
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    if getattr(model, "proposal_uses_label", False):
        return _sum_labels_out(model, x, y, int(num_samples), int(chunk_size))
    return _estimate(model, x, y, int(num_samples), int(chunk_size))


def _estimate(model, x, y, num_samples: int, chunk_size: int, **joint_options) -> dict:
    """One IWAE estimate per entry of ``model.log_joint``, with the proposal ``model.proposal(x, y)``."""
    proposal = model.proposal(x, y)
    totals: dict[str, torch.Tensor] = {}
    remaining = int(num_samples)
    while remaining > 0:
        count = min(int(chunk_size), remaining)
        remaining -= count
        z = proposal.sample((count,))  # (S, B, d)
        log_q = proposal.log_prob(z)  # (S, B)
        for name, log_joint in model.log_joint(x, y, z, **joint_options).items():
            chunk_total = torch.logsumexp((log_joint - log_q).double(), dim=0)  # (B,)
            totals[name] = chunk_total if name not in totals else torch.logaddexp(totals[name], chunk_total)
    return {name: total - math.log(num_samples) for name, total in totals.items()}


def _sum_labels_out(model, x, y, num_samples: int, chunk_size: int) -> dict:
    """Estimates for a label-dependent proposal: each label with its own proposal, ``log p(x)`` by a sum over labels."""
    per_label = []
    for label in range(model.num_classes):
        labels = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
        per_label.append(_estimate(model, x, labels, num_samples, chunk_size, marginal=False))
    stacked = {name: torch.stack([estimate[name] for estimate in per_label], dim=-1) for name in per_label[0]}  # (B, C)
    index = torch.as_tensor(y, device=x.device).long().view(-1, 1)
    result = {name: values.gather(-1, index).squeeze(-1) for name, values in stacked.items()}
    result["log_px"] = torch.logsumexp(stacked["log_pxy"], dim=-1)
    return result


@torch.no_grad()
def evaluate_test_set(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_samples: int = 500,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> dict:
    """Mean IWAE log-likelihood(s) and mean ELBO over a test set.

    Args:
        model: see the module docstring; its parameters' device is where batches go.
        images: ``(N, ...)`` inputs (e.g. MNIST binarized once, ``(N, 1, 28, 28)``).
        labels: ``(N,)`` labels.
        num_samples: ``K`` importance samples per example.
        batch_size: test examples per batch.
        chunk_size: importance samples per chunk.
        progress: show a tqdm bar.

    Returns:
        flat dict: ``num_examples``, ``num_samples``, ``elbo`` and the mean of every estimate, in nats.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels disagree in length: {images.shape[0]} vs {labels.shape[0]}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    starts = range(0, images.shape[0], int(batch_size))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"log-likelihood K={num_samples}", leave=False)
    for start in starts:
        x = images[start : start + batch_size].to(device).flatten(1).float()
        y = labels[start : start + batch_size].to(device)
        estimates = importance_weighted_log_likelihood(model, x, y, num_samples, chunk_size)
        estimates["elbo"] = model.elbo(x, y).elbo.double()
        for name, values in estimates.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    count = images.shape[0]
    result = {"num_examples": count, "num_samples": int(num_samples)}
    result.update({name: total / count for name, total in sorted(sums.items())})
    return result
