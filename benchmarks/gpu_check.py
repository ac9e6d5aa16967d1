"""Helpers of benchmarks/gpu_check.sh: the environment, stand-in data, IS/FID throughput, and the report.

    python -m benchmarks.gpu_check environment OUT.json
    python -m benchmarks.gpu_check synthetic-data OUT.npz [--train 10000 --test 2000]
    python -m benchmarks.gpu_check fidelity-speed OUT.json (--inception-weights PATH | --toy) [--num-samples 5000]
    python -m benchmarks.gpu_check report DIR [--out BENCHMARKS.md]

``report`` turns the folder that gpu_check.sh wrote (steps.jsonl, one output file per step, the JSON files
above) into the markdown section ``gpu-check``: each step's command, exit status and time, and its numbers.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common.cli import ArgumentParser, UserError, run_cli

SECTION = "gpu-check"


def environment(path: Path) -> dict:
    """Write (and return) what the machine is: torch, CUDA, the GPU, CPU cores, package versions."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": torch.multiprocessing.cpu_count(),
        "machine": platform.machine(),
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
        )
    for package in ("accelerate", "torch_fidelity", "torchvision", "vmfprior"):
        try:
            info[package] = getattr(__import__(package), "__version__", "installed")
        except ImportError as error:
            info[package] = f"missing ({error})"
    path.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return info


def synthetic_data(path: Path, train: int, test: int) -> None:
    """A CIFAR-10-shaped .npz of uniform random pixels and balanced labels (step times do not depend on pixels)."""
    generator = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        arrays[f"x_{split}"] = generator.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        arrays[f"y_{split}"] = (np.arange(count) % 10).astype(np.int64)
    np.savez(path, **arrays)
    print(f"wrote {path}: random pixels, {train} training and {test} test images (a stand-in, not CIFAR-10)")


def fidelity_speed(
    path: Path, inception_weights: str | None, toy: bool, num_samples: int, batch_size: int, reference: str | None
) -> dict:
    """Seconds to generate ``num_samples`` images with a `chainer`-size generator (random weights) and to score
    IS and FID on them through torch-fidelity; with ``toy``, a tiny generator and a random-weight classifier
    stand in for SNGAN and Inception."""
    from eval.fidelity import INCEPTION, UInt8ImageDataset, compute_fidelity, load_reference
    from gan.latent import GaussianSampler
    from gan.models import Generator
    from gan.sampling import GANSampler

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    if toy:
        from eval.classifiers import build_classifier
        from eval.features import register_classifier_extractor

        generator = Generator(16, 8, 10)
        extractor = "gpu-check-toy"
        register_classifier_extractor(extractor, build_classifier("convnet-4", 10), replace=True)
    else:
        generator = Generator(128, 256, 10)
        extractor = INCEPTION
    sampler = GANSampler(generator.to(device).eval(), GaussianSampler(generator.latent_dim))
    if reference:
        dataset, _ = load_reference(reference, "test")
        source = reference
    else:
        pixels = torch.randint(0, 256, (num_samples, 3, 32, 32), dtype=torch.uint8)
        dataset, source = UInt8ImageDataset(pixels), "random pixels (no CIFAR file given)"
    labels = torch.arange(num_samples, device=device) % 10
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for start in range(0, num_samples, batch_size):
        batch = labels[start : start + batch_size]
        sampler.decode(sampler.sample_latent(batch), torch.nn.functional.one_hot(batch, 10).float())
    if device.type == "cuda":
        torch.cuda.synchronize()
    generation = time.perf_counter() - began
    began = time.perf_counter()
    metrics = compute_fidelity(
        sampler,
        dataset,
        num_samples=num_samples,
        feature_extractor=extractor,
        feature_extractor_weights_path=None if toy else inception_weights,
        batch_size=batch_size,
        device=device,
        cache=False,
    )
    scoring = time.perf_counter() - began
    result = {
        "device": str(device),
        "num_samples": num_samples,
        "batch_size": batch_size,
        "extractor": extractor,
        "reference": source,
        "reference_images": len(dataset),
        "generation_seconds": generation,
        "is_fid_seconds": scoring,
        "images_per_second": num_samples / scoring,
        "note": "scores of a random-weight generator: only the times mean anything",
        **metrics,
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def report(folder: Path) -> str:
    """Markdown of a gpu_check.sh output folder (see the module docstring)."""
    steps_path = folder / "steps.jsonl"
    if not steps_path.is_file():
        raise UserError(f"{folder} has no steps.jsonl: not a folder written by benchmarks/gpu_check.sh --out")
    steps = [json.loads(line) for line in steps_path.read_text().splitlines() if line.strip()]
    env = _read_json(folder / "environment.json") or {}
    header = (
        f"{env.get('gpu', 'no GPU')} ({env.get('gpu_memory_gib', '?')} GiB), torch {env.get('torch', '?')}, "
        f"CUDA {env.get('cuda', '–')}, {env.get('cpu_count', '?')} CPU cores"
    )
    dry = any(step.get("dry_run") for step in steps)
    lines = [
        "## GPU check",
        "",
        f"Machine: {header}." + (" **Dry run** (toy sizes on the CPU: the times mean nothing)." if dry else ""),
        f"Command: `{steps[0].get('script_command', 'benchmarks/gpu_check.sh')}`" if steps else "",
        "",
        "| step | exit | seconds | command |",
        "|---|---|---|---|",
    ]
    for step in steps:
        status = (
            "ok"
            if step["rc"] == 0
            else "timed out"
            if step["rc"] in (124, 137)
            else "skipped"
            if step["rc"] == -1
            else f"failed ({step['rc']})"
        )
        lines.append(f"| {step['step']} | {status} | {step['seconds']:.0f} | `{step['command']}` |")
    notes = list(dict.fromkeys(step["note"] for step in steps if step.get("note")))
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    speed = _read_json(folder / "gan_speed.json")
    if speed:
        lines += [
            "",
            f"GAN iteration time, preset `{speed['preset']}` on {speed['device']}"
            f" (data: {speed.get('data') or 'torchvision CIFAR-10'}):",
            "",
            "| noise | s / iteration (median) | mean | noise of one iteration (ms) |",
            "|---|---|---|---|",
        ]
        for noise, values in speed["results"].items():
            lines.append(f"| {noise} | {values['median_s']:.4f} | {values['mean_s']:.4f} | {values['noise_ms']:.2f} |")
    fidelity = _read_json(folder / "fidelity_speed.json")
    if fidelity:
        lines += [
            "",
            f"IS/FID throughput ({fidelity['extractor']}, {fidelity['device']}): "
            f"{fidelity['num_samples']} generated images in {fidelity['generation_seconds']:.1f} s; "
            f"IS + FID against {fidelity['reference_images']} reference images ({fidelity['reference']}) in "
            f"{fidelity['is_fid_seconds']:.1f} s ({fidelity['images_per_second']:.0f} generated images/s).",
        ]
    for name, title in (
        ("vmf_latent_eager", "vMF latent step, eager"),
        ("vmf_latent_compiled", "vMF latent step, compiled"),
        ("ckd_table2_cost", "ckd cifar100-table2 cost"),
        ("ckd_table3_cost", "ckd cifar100-table3 cost"),
    ):
        output = folder / f"{name}.out"
        if output.is_file() and output.read_text().strip():
            text = output.read_text().strip().splitlines()
            lines += ["", f"{title} (last lines of its output):", "", "```", *text[-15:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("environment", help="write the machine's description as JSON")
    command.add_argument("out")
    command = commands.add_parser("synthetic-data", help="write a CIFAR-10-shaped .npz of random pixels")
    command.add_argument("out")
    command.add_argument("--train", type=int, default=10_000, help="training images")
    command.add_argument("--test", type=int, default=2_000, help="test images")
    command = commands.add_parser("fidelity-speed", help="time IS/FID of generated images")
    command.add_argument("out")
    command.add_argument("--inception-weights", default=None, help="local copy of torch-fidelity's Inception weights")
    command.add_argument("--toy", action="store_true", help="tiny generator and random classifier (dry run)")
    command.add_argument("--num-samples", type=int, default=5000, help="generated images")
    command.add_argument("--batch-size", type=int, default=250, help="images per batch")
    command.add_argument("--reference", default=None, help="CIFAR-10 .npz whose test split is the FID reference")
    command = commands.add_parser("report", help="the BENCHMARKS.md section of a gpu_check.sh folder")
    command.add_argument("folder")
    command.add_argument("--out", default=None, help="markdown file whose gpu-check section is replaced")
    args = parser.parse_args(argv)
    if args.command == "environment":
        environment(Path(args.out))
    elif args.command == "synthetic-data":
        synthetic_data(Path(args.out), args.train, args.test)
    elif args.command == "fidelity-speed":
        if not args.toy and not args.inception_weights:
            raise UserError("fidelity-speed needs --inception-weights PATH (or --toy)")
        fidelity_speed(
            Path(args.out), args.inception_weights, args.toy, args.num_samples, args.batch_size, args.reference
        )
    else:
        text = report(Path(args.folder))
        print(text)
        if args.out:
            from common.markdown import write_section

            write_section(args.out, SECTION, text)
            print(f"wrote section {SECTION!r} of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
