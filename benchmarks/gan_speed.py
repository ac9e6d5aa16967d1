"""Seconds per generator iteration of gan/train.py with Gaussian, vMF and sphere noise, timed interleaved.

    OMP_NUM_THREADS=1 python -m benchmarks.gan_speed --preset tiny --threads 1 \\
        --data data/cifar10-small.npz --out BENCHMARKS.md
    python -m benchmarks.gan_speed --preset chainer --iterations 30 --mixed-precision bf16 --out BENCHMARKS.md  # GPU

Each repeat trains ``--warmup + --iterations`` iterations of the real loop (gan.train.main, one metrics line per
iteration) once per sampler, cycling through the samplers, so a change of machine load hits all of them alike.
The first ``--warmup`` iterations of every run are dropped. Also timed alone: the noise of one iteration
(``n_dis`` draws of the D batch and one of the G batch). vMF noise needs a classifier's final layer: without
``--prior-checkpoint`` a random (10, latent_dim) head stands in (the draw's cost depends on d and κ only).
With ``--out``, the table and the exact command go into that markdown file's ``gan-speed`` section.

``--count-flops`` only counts the floating-point operations of one iteration of the preset (torch's
FlopCounterMode on the meta device: nothing is computed, so it is instant even for the full-size models).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.cli import ArgumentParser, UserError, run_cli, set_threads
from common.markdown import write_section
from common.run import read_metrics
from gan.config import PRESETS, parse_config
from gan.latent import SAMPLERS, build_latent_sampler
from gan.train import main as train_main

SECTION = "gan-speed"


def _sampler_args(sampler: str, prior_checkpoint: str, concentration: float) -> list[str]:
    if sampler == "vmf-orthogonal":
        return ["--sampler", sampler, "--concentration", str(concentration)]
    if sampler != "vmf":
        return ["--sampler", sampler]
    return ["--sampler", "vmf", "--prior-checkpoint", prior_checkpoint, "--concentration", str(concentration)]


def time_training(args, sampler: str, prior_checkpoint: str, folder: Path) -> list[float]:
    """Seconds of each timed iteration of one short training run (warm-up dropped)."""
    total = args.warmup + args.iterations
    run = [
        "--preset",
        args.preset,
        "--out",
        str(folder),
        "--iterations",
        str(total),
        "--log-every",
        "1",
        "--checkpoint-every",
        str(total),
        "--sample-every",
        str(total),
        "--schedule",
        "constant",
        *_sampler_args(sampler, prior_checkpoint, args.concentration),
    ]
    run += ["--data", args.data] if args.data else []
    run += ["--threads", str(args.threads)] if args.threads else []
    run += ["--mixed-precision", args.mixed_precision] if args.mixed_precision else []
    train_main(run)
    seconds = [0.0] + [record["seconds"] for record in read_metrics(folder / "metrics.jsonl")]
    return [later - earlier for earlier, later in zip(seconds, seconds[1:])][args.warmup :]


def time_noise(config, sampler: str, prior_checkpoint: str, concentration: float, repeats: int = 20) -> float:
    """Median seconds to draw one iteration's noise: n_dis D batches and one G batch."""
    latent = build_latent_sampler(
        sampler,
        config.latent_dim,
        config.num_classes,
        prior_checkpoint if sampler == "vmf" else None,
        concentration if sampler in ("vmf", "vmf-orthogonal") else None,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    latent = latent.to(device)
    sizes = [config.batch_size_d] * config.n_dis + [config.batch_size_g]
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for size in sizes:
            latent.sample(torch.randint(0, config.num_classes, (size,), device=device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def iteration_flops(config) -> int:
    """Floating-point operations of one training iteration of ``config`` (n_dis D steps and one G step), counted
    by FlopCounterMode on meta tensors (convolutions and matrix products; element-wise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from gan.losses import get_loss
    from gan.models import Discriminator, Generator

    with torch.device("meta"):
        generator = Generator(config.latent_dim, config.g_channels, config.num_classes, upsample=config.upsample)
        discriminator = Discriminator(config.d_channels, config.num_classes)
    loss = get_loss(config.loss)
    noise = lambda size: torch.randn(size, config.latent_dim, device="meta")  # noqa: E731
    with FlopCounterMode(display=False) as counter:
        for _ in range(config.n_dis):
            labels = torch.zeros(config.batch_size_d, dtype=torch.long, device="meta")
            with torch.no_grad():
                fake = generator(noise(config.batch_size_d), labels)
            real = torch.zeros(config.batch_size_d, 3, 32, 32, device="meta")
            logits = discriminator(torch.cat([real, fake]), torch.cat([labels, labels]))
            loss.discriminator(*logits.split([config.batch_size_d] * 2)).backward()
        labels = torch.zeros(config.batch_size_g, dtype=torch.long, device="meta")
        loss.generator(discriminator(generator(noise(config.batch_size_g), labels), labels)).backward()
    return counter.get_total_flops()


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m benchmarks.gan_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--sampler", nargs="+", choices=SAMPLERS, default=list(SAMPLERS), help="noises to time")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=2, help="dropped iterations at the start of every run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per sampler, interleaved")
    parser.add_argument("--data", default=None, help="CIFAR-10 .npz (offline) or none to download")
    parser.add_argument("--prior-checkpoint", default=None, help="gan.classifier checkpoint for vMF noise")
    parser.add_argument("--concentration", type=float, default=25.0, help="κ of the vMF noise")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument("--out", default=None, help=f"markdown file whose {SECTION!r} section gets the table")
    parser.add_argument("--count-flops", action="store_true", help="only count the FLOPs of one iteration")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Time the samplers; print and return {sampler: {...}} (and write the markdown section with --out)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.repeats < 1:
        raise UserError("--iterations and --repeats must be >= 1 and --warmup >= 0")
    set_threads(args.threads)
    config = parse_config(["--preset", args.preset])
    if args.count_flops:
        flops = iteration_flops(config)
        print(
            f"preset {args.preset}: {flops / 1e12:.3f} TFLOP per iteration, "
            f"{flops * config.iterations / 1e15:.3g} PFLOP for {config.iterations} iterations"
        )
        return {"preset": args.preset, "flops_per_iteration": flops, "iterations": config.iterations}
    per_sampler = {sampler: [] for sampler in args.sampler}
    loads = []  # the machine's 1-minute load average after each run: a shared machine slows every noise alike
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        prior_checkpoint = args.prior_checkpoint
        if prior_checkpoint is None and "vmf" in args.sampler:
            prior_checkpoint = str(scratch / "random-head.pt")
            head = torch.randn(config.num_classes, config.latent_dim, generator=torch.Generator().manual_seed(0))
            torch.save({"model": {"head.weight": head}}, prior_checkpoint)
        for repeat in range(args.repeats):
            for sampler in args.sampler:  # interleaved: every repeat visits every sampler
                per_sampler[sampler].append(
                    time_training(args, sampler, prior_checkpoint, scratch / f"{sampler}-{repeat}")
                )
                loads.append(os.getloadavg()[0])
        noise = {sampler: time_noise(config, sampler, prior_checkpoint, args.concentration) for sampler in args.sampler}
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} thread(s))"
    )
    results = {}
    for sampler, runs in per_sampler.items():
        pooled = [seconds for run in runs for seconds in run]
        results[sampler] = {
            "median_s": statistics.median(pooled),
            "mean_s": statistics.fmean(pooled),
            "run_medians_s": [statistics.median(run) for run in runs],
            "iterations": len(pooled),
            "noise_ms": 1000 * noise[sampler],
        }
    print(json.dumps({"preset": args.preset, "device": device, **results}, indent=2))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "preset": args.preset,
                    "device": device,
                    "data": args.data,
                    "command": shlex.join(["python", "-m", "benchmarks.gan_speed", *argv]),
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    if args.out:
        command = shlex.join(["python", "-m", "benchmarks.gan_speed", *argv])
        lines = [
            "## GAN training speed",
            "",
            f"Command: `{command}`",
            "",
            f"Preset `{args.preset}` (G width {config.g_channels}, D width {config.d_channels}, latent "
            f"{config.latent_dim}, n_dis {config.n_dis}, batches {config.batch_size_d}/{config.batch_size_g}) on "
            f"{device}; {args.repeats} interleaved run(s) per noise of {args.iterations} timed iterations "
            f"after {args.warmup} warm-up ones. One iteration of this preset is "
            f"{iteration_flops(config) / 1e9:.1f} GFLOP; one of the full-size `chainer` preset is "
            f"{iteration_flops(parse_config(['--preset', 'chainer'])) / 1e12:.2f} TFLOP (FlopCounterMode). "
            f"Load average of the machine ({os.cpu_count()} cores) during the runs: "
            f"{min(loads):.1f}–{max(loads):.1f}.",
            "",
            "| noise | s / iteration (median) | mean | median of each run | noise of one iteration (ms) |",
            "|---|---|---|---|---|",
        ]
        for sampler, result in results.items():
            lines.append(
                f"| {sampler} | {result['median_s']:.3f} | {result['mean_s']:.3f} | "
                + ", ".join(f"{value:.3f}" for value in result["run_medians_s"])
                + f" | {result['noise_ms']:.2f} |"
            )
        write_section(args.out, SECTION, "\n".join(lines))
        print(f"wrote section {SECTION!r} of {args.out}")
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
