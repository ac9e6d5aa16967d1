"""Torch CPU thread count against machine load: the measurement behind ``common.cli.set_threads``'s default.

    python -m benchmarks.threads [--steps 150] [--repeats 3] [--threads 1 2] [--out BENCHMARKS.md]

Two workloads a user's program runs, each with every thread count in ``--threads`` and with the machine as it
is ("idle") and with one busy-looping Python process per spare core started by this script ("loaded"):

* a ``vae.train`` epoch-like workload: HVAE-L training steps at d = 10, batch 64 (gather, binarize afresh,
  forward, backward, Adam), reported as milliseconds per step and seconds per 50,000-image epoch;
* one ``VonMisesFisher.rsample()`` with 65,536 mean directions in d = 10 (concentrations spread over 1..100).

Thread counts are interleaved within each repeat so that a change in background load hits all of them alike;
each figure is the median over repeats. The record includes ``uptime``'s load averages before and after,
because the machine may be shared.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

from common.cli import ArgumentParser, UserError, run_cli
from common.data import binarize
from vae.models import HypersphericalVAE
from vmfprior import VMFPrior, VonMisesFisher

EPOCH_IMAGES = 50_000
BATCH_SIZE = 64
LATENT_DIM = 10
RSAMPLE_BATCH = 65_536


def _uptime() -> str:
    """``uptime``'s line (load averages over 1, 5 and 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def _train_steps(steps: int) -> float:
    """Seconds per HVAE-L training step on random MNIST-shaped images (fresh model, after 5 warm-up steps)."""
    torch.manual_seed(0)
    prior = VMFPrior.from_weight(torch.randn(10, LATENT_DIM), 20.0)
    model = HypersphericalVAE("hvae-l", LATENT_DIM, class_prior=prior)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (4096, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (4096,))
    elapsed = 0.0
    for step in range(5 + steps):
        began = time.perf_counter()
        index = torch.randint(0, images.shape[0], (BATCH_SIZE,))
        x = binarize(images[index]).view(BATCH_SIZE, -1)
        loss = -model.elbo(x, labels[index]).elbo.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 5:
            elapsed += time.perf_counter() - began
    return elapsed / steps


def _rsample() -> float:
    """Seconds for one rsample of 65,536 x 10 (fresh distribution object, as a training step builds it)."""
    generator = torch.Generator().manual_seed(1)
    loc = torch.nn.functional.normalize(torch.randn(RSAMPLE_BATCH, LATENT_DIM, generator=generator), dim=-1)
    concentration = 1.0 + 99.0 * torch.rand(RSAMPLE_BATCH, generator=generator)
    began = time.perf_counter()
    VonMisesFisher(loc, concentration).rsample()
    return time.perf_counter() - began


def _measure(threads: list[int], steps: int, repeats: int) -> dict:
    """Median ms/step and rsample ms for each thread count, interleaved over ``repeats``."""
    train = {count: [] for count in threads}
    sample = {count: [] for count in threads}
    for _ in range(repeats):
        for count in threads:
            torch.set_num_threads(count)
            _rsample()  # warm-up: the first call pays one-time costs
            sample[count].append(min(_rsample() for _ in range(3)))
            train[count].append(_train_steps(steps))
    return {
        str(count): {
            "train_ms_per_step": round(1000 * statistics.median(train[count]), 2),
            "train_s_per_epoch": round(statistics.median(train[count]) * math.ceil(EPOCH_IMAGES / BATCH_SIZE), 1),
            "rsample_ms": round(1000 * statistics.median(sample[count]), 1),
        }
        for count in threads
    }


def main(argv=None) -> dict:
    """Measure idle and loaded, print one JSON record, optionally append it to a markdown file."""
    parser = ArgumentParser(prog="python -m benchmarks.threads", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="timed training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; each figure is their median")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to compare")
    parser.add_argument(
        "--load-processes",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="busy-looping processes started for the loaded measurement (default: cores - 1)",
    )
    parser.add_argument("--out", default=None, help="append the record as a JSON block to this markdown file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or min(args.threads) < 1 or args.load_processes < 0:
        raise UserError("--steps, --repeats, --threads must be positive and --load-processes non-negative")
    record = {"cpu_count": os.cpu_count(), "torch_default_threads": torch.get_num_threads(), "uptime_before": _uptime()}
    record["idle"] = _measure(args.threads, args.steps, args.repeats)
    record["uptime_before_loaded"] = _uptime()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load_processes)]
    try:
        time.sleep(1.0)
        record["loaded"] = _measure(args.threads, args.steps, args.repeats)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    record["uptime_after"] = _uptime()
    record["load_processes"] = args.load_processes
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write(f"\n```json\n{text}\n```\n")
    return record


if __name__ == "__main__":
    sys.exit(run_cli(main))
