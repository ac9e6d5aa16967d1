"""Importance-weighted log-likelihood of a trained VAE run on the MNIST test set binarized once with seed 0.

    python -m vae.loglik --run RUN [--num-samples 500] [--data PATH.npz] [--num-test N] [--cpu]

Writes ``RUN/loglik-K<K>-n<N>.json`` (or ``--out``) with ``log_px`` and, for HVAE-C / HVAE-L, ``log_pxy``
(log p(x, y), including log p(y) = log 1/10) and ``log_px_given_y``, plus the ELBO; nats, means over the test
images. The estimator is :mod:`eval.loglik` (K samples of q(z|x) per image).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from common.cli import ArgumentParser, UserError, run_cli, select_device, set_threads
from common.data import TEST_BINARIZATION_SEED, binarize_fixed, load_mnist
from common.runs import atomic_write_text
from eval.loglik import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, evaluate_test_set
from vae.checkpoints import load_model

__all__ = ["score_run", "main"]


def score_run(run_dir, images: torch.Tensor, labels: torch.Tensor, num_samples: int = 500, seed: int = 0,
              device="cpu", batch_size: int = DEFAULT_BATCH_SIZE, chunk_size: int = DEFAULT_CHUNK_SIZE,
              progress: bool = False) -> dict:
    """Score the best checkpoint of a run on binarized test images.

    Args:
        run_dir: a ``vae.train`` run folder.
        images: ``(N, 1, 28, 28)`` binary test images; labels: ``(N,)``.
        num_samples: importance samples K per image.
        seed: seed of the importance samples.
        device: where the model runs.

    Returns:
        the flat result dict of :func:`eval.loglik.evaluate_test_set` plus model, latent_dim, seconds.
    """
    model = load_model(run_dir, device=device)
    torch.manual_seed(seed)
    started = time.perf_counter()
    result = evaluate_test_set(model, images, labels, num_samples, batch_size, chunk_size, progress=progress)
    result.update(model=model.kind, latent_dim=model.latent_dim, run=str(run_dir), seed=seed,
                  binarization_seed=TEST_BINARIZATION_SEED, seconds=round(time.perf_counter() - started, 2))
    return result


def main(argv=None) -> dict:
    """Command-line entry point: prints the result and writes it as JSON."""
    parser = ArgumentParser(prog="python -m vae.loglik", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by vae.train")
    parser.add_argument("--num-samples", type=int, default=500, help="importance samples K per test image")
    parser.add_argument("--data", default=None, help="MNIST .npz (default: torchvision download)")
    parser.add_argument("--out", default=None, help="JSON output (default: RUN/loglik-K<K>-n<N>.json)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="test images per batch")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="importance samples per chunk")
    parser.add_argument("--num-test", type=int, default=None, help="score only the first N test images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    for name in ("num_samples", "batch_size", "chunk_size", "num_test"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    set_threads(args.threads)
    device = select_device(args.cpu)
    load_model(args.run)  # a bad run folder fails before the data is loaded
    data = load_mnist(args.data)
    images, labels = binarize_fixed(data.x_test, seed=TEST_BINARIZATION_SEED), data.y_test
    if args.num_test is not None:
        images, labels = images[: args.num_test], labels[: args.num_test]
    result = score_run(args.run, images, labels, args.num_samples, args.seed, device, args.batch_size,
                       args.chunk_size, progress=sys.stderr.isatty())
    out = Path(args.out) if args.out else Path(args.run) / f"loglik-K{args.num_samples}-n{images.shape[0]}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
