"""Speed of the hyperspherical VAE: an HVAE-L training step against the same network with a Gaussian latent,
and the 500-sample importance-weighted log-likelihood on the MNIST test set.

    python -m benchmarks.vae_speed --data PATH/mnist.npz [--latent-dim 5] [--steps 100] [--num-test 500]

A timed step is what an epoch of ``vae.train`` repeats: gather the batch, binarize it afresh, forward,
backward, Adam. Prints one JSON object: milliseconds per step for both latents, the implied seconds per
50,000-image epoch and their ratio; seconds for K=500 importance samples on ``--num-test`` test images,
extrapolated to the 10,000-image test set; and the process's peak resident memory.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.cli import ArgumentParser, UserError, run_cli, set_threads
from common.config import GLOSSARY
from common.data import binarize, binarize_fixed, load_mnist
from eval.loglik import evaluate_test_set
from vae.models import HypersphericalVAE
from vmfprior import VMFPrior

EPOCH_IMAGES = 50_000
WARMUP_STEPS = 10


class GaussianVAE(nn.Module):
    """The HVAE's encoder/decoder with a Gaussian latent: q(z|x) = N(mu, diag sigma^2), prior N(0, I)."""

    def __init__(self, latent_dim: int, input_dim: int = 784):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_dim, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.mean_layer = nn.Linear(128, latent_dim)
        self.log_variance_layer = nn.Linear(128, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, input_dim)
        )

    def elbo(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """``(B, 784)`` binary images -> ``(B,)`` one-sample ELBO with the closed-form Gaussian KL."""
        hidden = self.encoder(x)
        mean, log_variance = self.mean_layer(hidden), self.log_variance_layer(hidden)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)
        reconstruction = -F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mean.pow(2) + log_variance.exp() - 1.0 - log_variance).sum(-1)
        return reconstruction - kl


def time_training_steps(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int
) -> float:
    """Seconds per training step on dynamically binarized batches (after a warm-up)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(images.shape[0])
    elapsed = 0.0
    for step in range(WARMUP_STEPS + steps):
        began = time.perf_counter()
        start = (step * batch_size) % (images.shape[0] - batch_size)
        index = order[start : start + batch_size]
        x = binarize(images[index]).view(batch_size, -1)
        output = model.elbo(x, labels[index])
        loss = -(output.elbo if hasattr(output, "elbo") else output).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= WARMUP_STEPS:
            elapsed += time.perf_counter() - began
    return elapsed / steps


# Above this 1-minute load average another process competes for this 2-core machine's CPU: not an idle run.
IDLE_LOAD_AVERAGE = 1.0


def _load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def main(argv=None) -> dict:
    """Run the benchmark and print the JSON record."""
    parser = ArgumentParser(prog="python -m benchmarks.vae_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="MNIST .npz (default: torchvision download)")
    parser.add_argument("--latent-dim", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (the paper's: 64)")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per model")
    parser.add_argument("--num-test", type=int, default=500, help="test images for the log-likelihood timing")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help=GLOSSARY["threads"])
    args = parser.parse_args(argv)
    for name in ("latent_dim", "batch_size", "steps", "num_test", "num_samples"):
        if getattr(args, name) < (2 if name == "latent_dim" else 1):
            raise UserError(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    set_threads(args.threads)
    load_before = _load_average()
    torch.manual_seed(0)
    data = load_mnist(args.data)
    images, labels = data.x_train, data.y_train
    prior = VMFPrior.from_weight(torch.randn(data.num_classes, args.latent_dim), 5.0)

    hvae_l = HypersphericalVAE("hvae-l", args.latent_dim, class_prior=prior)
    gaussian = GaussianVAE(args.latent_dim)
    # Interleave the two timings twice so a change in background load hits both alike.
    hvae_l_seconds = gaussian_seconds = 0.0
    for _ in range(2):
        gaussian_seconds += time_training_steps(gaussian, images, labels, args.steps, args.batch_size) / 2
        hvae_l_seconds += time_training_steps(hvae_l, images, labels, args.steps, args.batch_size) / 2

    test_images = binarize_fixed(data.x_test[: args.num_test])
    began = time.perf_counter()
    scores = evaluate_test_set(hvae_l.eval(), test_images, data.y_test[: args.num_test], num_samples=args.num_samples)
    loglik_seconds = time.perf_counter() - began
    record = {
        "latent_dim": args.latent_dim,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "gaussian_ms_per_step": round(1000 * gaussian_seconds, 2),
        "hvae_l_ms_per_step": round(1000 * hvae_l_seconds, 2),
        "gaussian_s_per_epoch": round(gaussian_seconds * math.ceil(EPOCH_IMAGES / args.batch_size), 1),
        "hvae_l_s_per_epoch": round(hvae_l_seconds * math.ceil(EPOCH_IMAGES / args.batch_size), 1),
        "hvae_l_over_gaussian": round(hvae_l_seconds / gaussian_seconds, 2),
        "loglik_num_samples": args.num_samples,
        "loglik_num_test": args.num_test,
        "loglik_seconds": round(loglik_seconds, 1),
        "loglik_seconds_10k_extrapolated": round(loglik_seconds * 10_000 / args.num_test, 0),
        "loglik_log_px_untrained": round(scores["log_px"], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "load_average_before": load_before,
        "load_average_after": _load_average(),
    }
    print(json.dumps(record, indent=2))
    busiest = max(
        (v for v in (record["load_average_before"], record["load_average_after"]) if v is not None), default=0.0
    )
    if busiest > IDLE_LOAD_AVERAGE:
        print(
            f"warning: load average {busiest:.2f} > {IDLE_LOAD_AVERAGE:g} on a {os.cpu_count()}-core machine: other "
            "processes shared the CPU, so these are not idle-machine figures",
            file=sys.stderr,
        )
    return record


if __name__ == "__main__":
    sys.exit(run_cli(main))
