"""Seconds per generator iteration (n_dis D updates + 1 G update) of gan/train.py on this machine.

    OMP_NUM_THREADS=1 python benchmarks/gan_speed.py --preset tiny --data ../shared/data/cifar10-jpeg-q75-subset.npz
    python benchmarks/gan_speed.py --preset full --iterations 30 --mixed-precision bf16     # on a GPU

Runs the real training loop (gan.train.main) in a temporary folder with one metrics line per iteration, drops
the first ``--warmup`` iterations (allocator and kernel warm-up) and prints the median and the mean of the rest
as JSON. ``full`` is the reference configuration; on a CPU one full iteration takes over a minute.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from gan.train import main as train_main  # noqa: E402
from common.runs import read_metrics  # noqa: E402


def measure(preset: str, iterations: int, warmup: int, data: str | None, mixed_precision: str) -> dict:
    """Train ``warmup + iterations`` iterations and time them.

    Returns:
        {"preset", "device", "iterations", "median_s", "mean_s", ...} with seconds per generator iteration.
    """
    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0, got {iterations}, {warmup}")
    total = warmup + iterations
    with tempfile.TemporaryDirectory() as folder:
        args = ["--out", folder, "--iterations", str(total), "--log-every", "1", "--checkpoint-every", str(total),
                "--sample-every", str(total), "--mixed-precision", mixed_precision]
        args += ["--preset", "tiny"] if preset == "tiny" else []
        args += ["--data", data] if data else []
        train_main(args)
        seconds = [record["seconds"] for record in read_metrics(Path(folder) / "metrics.jsonl")]
    per_iteration = [later - earlier for earlier, later in zip(seconds, seconds[1:])][max(warmup - 1, 0):]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.machine()}, " \
        f"{torch.get_num_threads()} threads)"
    return {"preset": preset, "device": device, "mixed_precision": mixed_precision, "iterations": len(per_iteration),
            "median_s": statistics.median(per_iteration), "mean_s": statistics.fmean(per_iteration)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data", default=None, help="CIFAR-10 .npz (offline) or none to download")
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    args = parser.parse_args(argv)
    result = measure(args.preset, args.iterations, args.warmup, args.data, args.mixed_precision)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
