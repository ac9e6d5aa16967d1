"""Per-class sample grid and class-to-class interpolations of a GAN run folder.

    python -m gan.figures --run RUN [--out DIR] [--seed 0] [--per-class 10] [--steps 10] [--cpu]

Writes ``samples-seed<S>.png`` and ``interpolations-seed<S>.png`` (slerp for spherical noise, lerp for
Gaussian) into ``RUN/figures`` or ``--out``.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from gan.config import FiguresConfig

    answer_early(FiguresConfig, prog="python -m gan.figures", description=__doc__.split("\n\n")[0])

import os
import sys

import torch

from common.cli import UserError, run_cli, select_device
from common.config import parse_config
from common.run import read_config
from eval.grids import class_interpolation_grid, class_sample_grid, default_pairs
from gan.config import FiguresConfig
from gan.sampling import load_sampler


def main(argv=None) -> list[str]:
    """Draw the two grids; returns the paths written."""
    args = parse_config(FiguresConfig, argv, prog="python -m gan.figures", description=__doc__.split("\n\n")[0])
    if args.per_class < 1 or args.steps < 2:
        raise UserError(f"--per-class must be >= 1 and --steps >= 2, got {args.per_class} and {args.steps}")
    sampler = load_sampler(args.run, device=select_device(args.cpu))
    torch.manual_seed(args.seed)
    out_dir = args.out or os.path.join(args.run, "figures")
    paths = [
        os.path.join(out_dir, f"samples-seed{args.seed}.png"),
        os.path.join(out_dir, f"interpolations-seed{args.seed}.png"),
    ]
    config = read_config(args.run)[1]
    trained = f"{config.get('sampler', '?')} noise, {config.get('iterations', '?'):,} iterations"
    run = os.path.basename(os.path.normpath(args.run))
    class_sample_grid(
        sampler,
        paths[0],
        per_class=args.per_class,
        title=f"SNGAN samples ({trained}): one row per class",
        caption=f"run {run}, generator as saved, sampling seed {args.seed}",
    )
    path_kind = "great-circle (slerp)" if sampler.spherical else "straight-line (lerp)"
    class_interpolation_grid(
        sampler,
        paths[1],
        default_pairs(sampler.num_classes),
        steps=args.steps,
        title=f"SNGAN class-to-class interpolations ({trained})",
        caption=f"run {run}: {path_kind} paths between the noise of two classes, labels blended; seed {args.seed}",
    )
    print("\n".join(f"wrote {path}" for path in paths))
    return paths


if __name__ == "__main__":
    sys.exit(run_cli(main))
