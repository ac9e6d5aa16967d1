"""Importance-weighted log-likelihood of the hyperspherical VAEs on the fixed binarized MNIST test set.

``log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K`` with ``z_k ~ q(z|x)``
(Burda et al. 2016). Samples are drawn in chunks and folded into a running ``logaddexp`` per example, so
memory does not grow with ``K``; the test set is streamed in batches.

* hvae reports ``log p(x)``.
* hvae-c and hvae-l report ``log p(x, y)`` (with ``log p(y) = log(1/C)``) and ``log p(x)`` with the label
  summed out, from the same samples of ``q(z|x)``:
  hvae-l uses the class mixture prior ``p(z) = sum_y p(y) vMF(z; w_y, kappa)`` (``VMFPrior.mixture_log_prob``);
  hvae-c sums ``p(y) p(x|z,y)`` over all C labels inside the importance weight.

Command line::

    python -m eval.loglik --checkpoint RUN_DIR --num-samples 500 --data PATH.npz [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["log_importance_weights", "importance_weighted_log_likelihood", "evaluate_test_set", "main"]

DEFAULT_BATCH_SIZE = 100
DEFAULT_CHUNK_SIZE = 100


def log_importance_weights(model, x: torch.Tensor, y: torch.Tensor | None, z: torch.Tensor, log_q: torch.Tensor) -> dict:
    """Log importance weights for given samples of ``q(z|x)``.

    Args:
        model: a ``vae.models.HypersphericalVAE``.
        x: ``(B, 784)`` binary images.
        y: ``(B,)`` labels (required for hvae-c / hvae-l).
        z: ``(S, B, d)`` samples from ``q(z|x)``.
        log_q: ``(S, B)`` their log densities under ``q(z|x)``.

    Returns:
        dict with ``"log_px"`` ``(S, B)`` (label marginalized for the label-aware models) and, for hvae-c
        and hvae-l, ``"log_pxy"`` ``(S, B)``.
    """
    num_classes = model.num_classes
    log_label_prior = -math.log(num_classes)
    if model.kind == "hvae":
        return {"log_px": model.log_likelihood(x, z) + model.log_prior(z, None) - log_q}
    if model.kind == "hvae-l":
        log_lik = model.log_likelihood(x, z)  # (S, B)
        return {
            "log_pxy": log_lik + model.log_prior(z, y) + log_label_prior - log_q,
            "log_px": log_lik + model.log_marginal_prior(z) - log_q,
        }
    # hvae-c: decode every sample with every label; log p(x|z) = logsumexp_c [log p(c) + log p(x|z,c)].
    samples, batch = z.shape[0], z.shape[1]
    eye = torch.eye(num_classes, dtype=z.dtype, device=z.device)
    per_label = torch.stack(
        [model.log_likelihood(x, z, eye[label].expand(batch, num_classes)) for label in range(num_classes)], dim=-1
    )  # (S, B, C)
    log_prior = model.log_prior(z, None)  # (S, B)
    log_pxy_all = per_label + log_label_prior + (log_prior - log_q).unsqueeze(-1)  # (S, B, C)
    index = y.view(1, batch, 1).expand(samples, batch, 1)
    return {
        "log_pxy": log_pxy_all.gather(-1, index).squeeze(-1),
        "log_px": torch.logsumexp(log_pxy_all, dim=-1),
    }


@torch.no_grad()
def importance_weighted_log_likelihood(
    model, x: torch.Tensor, y: torch.Tensor | None = None, num_samples: int = 500, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> dict:
    """IWAE estimate of the log-likelihood of a batch, streaming over ``num_samples`` in chunks.

    Args:
        model: a ``vae.models.HypersphericalVAE`` (evaluated as is; call ``.eval()`` first if needed).
        x: ``(B, 784)`` or ``(B, 1, 28, 28)`` binary images.
        y: ``(B,)`` labels (required for hvae-c / hvae-l).
        num_samples: ``K``, samples from ``q(z|x)`` per example (>= 1).
        chunk_size: samples drawn at once; bounds memory at about ``chunk_size * B * 784`` floats
            (times C for hvae-c).

    Returns:
        dict of ``(B,)`` float64 tensors: ``"log_px"`` and, for hvae-c / hvae-l, ``"log_pxy"``.
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    x = model._flatten(x)
    y = model._check_labels(y, x.shape[0])
    posterior = model.encode(x)
    totals: dict[str, torch.Tensor] = {}
    remaining = int(num_samples)
    while remaining > 0:
        count = min(int(chunk_size), remaining)
        remaining -= count
        z = posterior.sample((count,))  # (S, B, d)
        log_q = posterior.log_prob(z)  # (S, B)
        for name, log_w in log_importance_weights(model, x, y, z, log_q).items():
            chunk_total = torch.logsumexp(log_w.double(), dim=0)  # (B,)
            totals[name] = chunk_total if name not in totals else torch.logaddexp(totals[name], chunk_total)
    return {name: total - math.log(num_samples) for name, total in totals.items()}


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
    """Mean IWAE log-likelihood(s) and mean ELBO over a (binarized) test set.

    Args:
        model: a ``vae.models.HypersphericalVAE``.
        images: ``(N, 784)`` or ``(N, 1, 28, 28)`` binary images (e.g. ``binarize_fixed(data.x_test)``).
        labels: ``(N,)`` labels.
        num_samples: ``K`` importance samples per example.
        batch_size: test examples per batch.
        chunk_size: importance samples per chunk.
        progress: show a tqdm bar.

    Returns:
        flat dict: ``num_examples``, ``num_samples``, ``elbo`` (bound on log p(x, y) for the label-aware
        models, on log p(x) for hvae), ``log_px``, and ``log_pxy`` for hvae-c / hvae-l; all means in nats.
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
        x = images[start : start + batch_size].to(device).reshape(-1, model.input_dim).float()
        y = labels[start : start + batch_size].to(device)
        estimates = importance_weighted_log_likelihood(model, x, y, num_samples, chunk_size)
        estimates["elbo"] = model.elbo(x, y).elbo.double()
        for name, values in estimates.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    count = images.shape[0]
    result = {"num_examples": count, "num_samples": int(num_samples)}
    result.update({name: total / count for name, total in sorted(sums.items())})
    return result


def _load_model(run_dir: Path, device: str):
    from vae.sampling import load_model

    return load_model(run_dir, device=device)


def main(argv=None) -> dict:
    """Command-line entry point: evaluate a trained VAE run folder; prints and writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="run folder written by vae.train")
    parser.add_argument("--num-samples", type=int, default=500, help="importance samples K per test image")
    parser.add_argument("--data", default=None, help="MNIST .npz (default: torchvision download)")
    parser.add_argument("--out", default=None, help="JSON output (default: RUN_DIR/loglik.json)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--num-test", type=int, default=None, help="evaluate only the first N test images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        parser.error(f"--num-samples must be positive, got {args.num_samples}")
    if args.num_test is not None and args.num_test < 1:
        parser.error(f"--num-test must be positive, got {args.num_test}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)

    from vmfprior.data import TEST_BINARIZATION_SEED, DataUnavailableError, binarize_fixed, load_mnist

    run_dir = Path(args.checkpoint)
    try:
        data = load_mnist(args.data)
    except DataUnavailableError as error:
        sys.exit(f"error: {error}")
    model = _load_model(run_dir, args.device)
    images = binarize_fixed(data.x_test, seed=TEST_BINARIZATION_SEED)
    labels = data.y_test
    if args.num_test is not None:
        images, labels = images[: args.num_test], labels[: args.num_test]
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    result = evaluate_test_set(
        model, images, labels, args.num_samples, args.batch_size, args.chunk_size, progress=sys.stderr.isatty()
    )
    result.update(
        {
            "model": model.kind,
            "z_dim": model.z_dim,
            "run_dir": str(run_dir),
            "binarization_seed": TEST_BINARIZATION_SEED,
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    out = Path(args.out) if args.out else run_dir / "loglik.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
