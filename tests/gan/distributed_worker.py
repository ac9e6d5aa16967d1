"""Run by tests/gan/test_distributed.py on 2 CPU processes (torchrun, gloo); not a test module itself.

    PYTHONPATH=. python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        -m tests.gan.distributed_worker OUT DATA

1. Synchronized batch norm: the generator gan/train.py builds for 2 processes, fed half of a global batch on each
   process, must give the outputs, running statistics and (DDP-averaged) gradients of one generator on the whole
   batch. Each process writes OUT/sync_bn_<rank>.json with the largest deviations.
2. Training runs through gan.train.main: OUT/straight (4 iterations), OUT/interrupted (stopped at 2, copied to
   OUT/copy-at-2 for the process-count test, then resumed to 4).
"""

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from gan.config import GANConfig
from gan.train import build_generator, main
from tests.gan.helpers import tiny_args

GLOBAL_BATCH = 6


def check_sync_batch_norm(out: Path) -> None:
    accelerator = Accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    config = GANConfig(latent_dim=8, g_channels=8)
    torch.manual_seed(0)
    generator = build_generator(config, world)
    reference = build_generator(config, num_processes=1)  # plain batch norm, fed the whole batch
    reference.load_state_dict(generator.state_dict())
    unsynchronized = build_generator(config, num_processes=1)  # plain batch norm on this process's half only
    unsynchronized.load_state_dict(generator.state_dict())
    generator = accelerator.prepare(generator)
    torch.manual_seed(1)  # the same global batch on both processes
    z, labels = torch.randn(GLOBAL_BATCH, 8), torch.arange(GLOBAL_BATCH) % 10
    weights = torch.randn(GLOBAL_BATCH, 3, 32, 32)
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)

    local = generator(z[rows], labels[rows])
    # Each process's loss is its share of one global sum: DDP averages gradients, so world * grad is the total.
    (local * weights[rows]).sum().backward()
    whole = reference(z, labels)
    (whole * weights).sum().backward()
    raw = accelerator.unwrap_model(generator)
    # relative to the largest gradient entry: biases of convolutions followed by batch norm have zero gradient
    scale = max(b.grad.abs().max().item() for b in reference.parameters())
    gradient_error = max(
        (world * a.grad - b.grad).abs().max().item() / scale for a, b in zip(raw.parameters(), reference.parameters())
    )
    statistics_error = max(
        (a - b).abs().max().item()
        for (name, a), b in zip(raw.state_dict().items(), reference.state_dict().values())
        if "running" in name
    )
    result = {
        "output_error": (local - whole[rows]).abs().max().item(),
        "gradient_error": gradient_error,
        "statistics_error": statistics_error,
        "unsynchronized_output_error": (unsynchronized(z[rows], labels[rows]) - whole[rows]).abs().max().item(),
        "gradient_scale": scale,
    }
    (out / f"sync_bn_{rank}.json").write_text(json.dumps(result))


def main_worker(out: Path, data: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Several runs share these two processes (starting processes costs more than the runs): keep the process
    # group that end_training() would destroy at the end of each run. A real run ends there.
    Accelerator.end_training = lambda self: [tracker.finish() for tracker in self.trackers]
    check_sync_batch_norm(out)
    args = ("--iterations", "4", "--checkpoint-every", "2", "--ema-decay", "0.5")
    main(tiny_args(data, out / "straight", *args))
    main(tiny_args(data, out / "interrupted", *args, "--stop-after", "2"))
    accelerator = Accelerator()
    if accelerator.is_main_process:
        shutil.copytree(out / "interrupted", out / "copy-at-2")
    accelerator.wait_for_everyone()
    main(tiny_args(data, out / "interrupted", *args, "--resume"))


if __name__ == "__main__":
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    main_worker(Path(sys.argv[1]), sys.argv[2])
