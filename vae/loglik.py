"""Importance-weighted log-likelihood of a trained VAE run on the MNIST test set binarized once with seed 0.

    python -m vae.loglik --run RUN [--num-samples 500] [--data PATH.npz] [--num-test N] [--cpu]

The data file is the run's own (its config's ``data``) unless ``--data`` names another.

Writes ``RUN/loglik-K<K>-n<N>.json`` (or ``--out``) with ``log_px`` and, for HVAE-C / HVAE-L, ``log_pxy``
(log p(x, y), including log p(y) = log 1/10) and ``log_px_given_y``, plus the ELBO; nats, means over the test
images. The estimator is :mod:`eval.loglik` (K samples of q(z|x) per image).
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from vae.config import LoglikConfig

    answer_early(LoglikConfig, prog="python -m vae.loglik", description=__doc__.split("\n\n")[0])

import json
import sys
import time
from pathlib import Path

import torch

from common.cli import run_cli, select_device, set_threads
from common.config import check_positive, parse_config
from common.data import TEST_BINARIZATION_SEED, binarize_fixed, load_mnist
from common.run import atomic_write_text, read_run
from eval.loglik import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, evaluate_test_set
from vae.checkpoints import load_model
from vae.config import LoglikConfig

__all__ = ["LoglikConfig", "main", "score_run"]


def score_run(
    run_dir,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_samples: int = 500,
    seed: int = 0,
    device="cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> dict:
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
    result.update(
        model=model.kind,
        latent_dim=model.latent_dim,
        run=str(run_dir),
        seed=seed,
        binarization_seed=TEST_BINARIZATION_SEED,
        seconds=round(time.perf_counter() - started, 2),
    )
    return result


def main(argv=None) -> dict:
    """Command-line entry point: prints the result and writes it as JSON."""
    args = parse_config(LoglikConfig, argv, prog="python -m vae.loglik", description=__doc__.split("\n\n")[0])
    check_positive(args, "num_samples", "batch_size", "chunk_size")
    check_positive(args, "num_test", allow_none=True)
    set_threads(args.threads)
    device = select_device(args.cpu)
    load_model(args.run)  # a bad run folder fails before the data is loaded
    data = load_mnist(args.data if args.data is not None else read_run(args.run, ("vae",))[1].get("data"))
    images, labels = binarize_fixed(data.x_test, seed=TEST_BINARIZATION_SEED), data.y_test
    if args.num_test is not None:
        images, labels = images[: args.num_test], labels[: args.num_test]
    result = score_run(
        args.run,
        images,
        labels,
        args.num_samples,
        args.seed,
        device,
        args.batch_size,
        args.chunk_size,
        progress=sys.stderr.isatty(),
    )
    out = Path(args.out) if args.out else Path(args.run) / f"loglik-K{args.num_samples}-n{images.shape[0]}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
