"""Figures of one trained VAE run: reconstructions, per-class samples, class-to-class slerp interpolations,
and the learning curves. Grids go through eval.grids; every figure has a title, labelled rows or axes and a
one-line caption saying how to read it.

    python -m vae.figures --run RUN [--data PATH.npz] [--seed 0]
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from vae.config import FiguresConfig

    answer_early(FiguresConfig, prog="python -m vae.figures", description=__doc__.split("\n\n")[0], config_file=False)

import sys
from pathlib import Path

import torch

from common.cli import run_cli
from common.config import parse_config
from common.data import binarize_fixed, load_mnist
from common.run import METRICS_FILE, read_metrics, read_run
from eval.grids import class_interpolation_grid, class_sample_grid, save_image_grid
from vae.config import FiguresConfig
from vae.models import IMAGE_SHAPE
from vae.sampling import load_sampler

INTERPOLATION_PAIRS = [(0, 1), (1, 7), (3, 8), (4, 9), (5, 6), (2, 3)]


def _model_name(sampler) -> str:
    """``HVAE-L, d = 5`` (and the encoder's label input, when it has one)."""
    model = sampler.model
    name = f"{model.kind.upper()}, d = {model.latent_dim}"
    return name + (", encoder sees y" if getattr(model, "encoder_sees_label", False) else "")


@torch.no_grad()
def reconstruction_grid(sampler, images: torch.Tensor, labels: torch.Tensor, path) -> Path:
    """Rows alternate: binarized inputs, then the Bernoulli means decoded from the posterior mean direction.

    Args:
        sampler: a ``vae.sampling.VAESampler``.
        images: ``(N, 1, 28, 28)`` binary test images (N a multiple of 10 is tidiest).
        labels: ``(N,)`` labels.
        path: PNG to write.
    """
    model = sampler.model
    x = images.to(sampler.device).float()
    mean_direction = model.encode(x, labels.to(sampler.device)).loc  # (N, d)
    label_probs = torch.nn.functional.one_hot(labels.to(sampler.device), model.num_classes).float()
    recon = sampler.decode(mean_direction, label_probs)
    rows, row_labels = [], []
    for start in range(0, x.shape[0], 10):
        rows += [x[start : start + 10], recon[start : start + 10]]
        row_labels += [f"input {start + 1}-{min(start + 10, x.shape[0])}", "output"]
    save_image_grid(
        torch.cat(rows).view(-1, *IMAGE_SHAPE).cpu(),
        str(path),
        nrow=10,
        title=f"Reconstructions of test images ({_model_name(sampler)})",
        row_labels=row_labels,
        xlabel="test image",
        ylabel="rows alternate: input, then its reconstruction",
        caption="Input rows: binarized test images (seed 0). Output rows: Bernoulli means decoded from "
        "the mean direction of q(z|x" + (", y)" if model.encoder_sees_label else ")") + ".",
    )
    return Path(path)


def learning_curve(run_dir, path) -> Path | None:
    """Train and validation ELBO per epoch from metrics.jsonl (None when there are no records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(Path(run_dir) / METRICS_FILE) if "validation_elbo" in r]
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(epochs, [r["train_elbo_kl_weight_1"] for r in records], marker="o", markersize=3, label="train ELBO")
    axis.plot(epochs, [r["validation_elbo"] for r in records], marker="o", markersize=3, label="validation ELBO")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axis.set_xlabel("epoch")
    axis.set_ylabel("ELBO per image (nats, higher is better)")
    axis.set_title(f"Learning curve: {Path(run_dir).name}")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.text(
        0.5,
        0.01,
        "Mean ELBO with KL weight 1 on the training batches of each epoch, and on the validation split after it.",
        ha="center",
        va="bottom",
        fontsize=8,
    )
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def make_run_figures(run_dir, data_path=None, data=None, seed: int = 0) -> list[Path]:
    """Write reconstructions.png, samples.png, interpolations.png and learning_curve.png into ``run_dir``.

    Args:
        run_dir: a vae.train run folder.
        data_path: MNIST .npz (or None: torchvision) when ``data`` is not given.
        data: an already loaded ImageData.
        seed: seed of the samples.

    Returns:
        the paths written.
    """
    run_dir = Path(run_dir)
    data = data if data is not None else load_mnist(data_path)
    sampler = load_sampler(run_dir)
    torch.manual_seed(seed)
    written = [
        reconstruction_grid(
            sampler, binarize_fixed(data.x_test[:50]), data.y_test[:50], run_dir / "reconstructions.png"
        )
    ]
    name = _model_name(sampler)
    if sampler.model.class_prior is not None:
        prior = "z ~ the classifier's vMF(w_y/|w_y|, kappa) of the row's class"
    else:
        prior = "z ~ uniform on the sphere"
    decoder = " and the class to the decoder" if sampler.model.kind == "hvae-c" else ""
    conditional = sampler.model.kind != "hvae"
    class_sample_grid(
        sampler,
        str(run_dir / "samples.png"),
        per_class=10,
        title=f"Samples per class ({name})"
        if conditional
        else f"Samples ({name}: unconditional, rows are not classes)",
        caption=f"Bernoulli means of p(x|z) with {prior}{decoder}."
        + ("" if conditional else " HVAE ignores the label: every row is unconditional."),
    )
    class_interpolation_grid(
        sampler,
        str(run_dir / "interpolations.png"),
        INTERPOLATION_PAIRS,
        steps=10,
        title=f"Interpolations between classes ({name})"
        if conditional
        else f"Interpolations between prior samples ({name}: the class pairs are not used)",
        caption="Each row joins a prior sample of the left class to one of the right along the great circle"
        + ("; the decoder's label blends linearly." if sampler.model.kind == "hvae-c" else ".")
        + ("" if conditional else " HVAE ignores the label: endpoints are uniform samples."),
    )
    written += [run_dir / "samples.png", run_dir / "interpolations.png"]
    curve = learning_curve(run_dir, run_dir / "learning_curve.png")
    if curve is not None:
        written.append(curve)
    return written


def main(argv=None) -> list[Path]:
    """Command-line entry point: write the figures of a run folder."""
    args = parse_config(
        FiguresConfig, argv, prog="python -m vae.figures", description=__doc__.split("\n\n")[0], config_file=False
    )
    load_sampler(args.run)  # a bad run folder fails before the data is loaded
    data_path = args.data if args.data is not None else read_run(args.run, ("vae",))[1].get("data")
    written = make_run_figures(args.run, data_path=data_path, seed=args.seed)
    print("\n".join(f"wrote {path}" for path in written))
    return written


if __name__ == "__main__":
    sys.exit(run_cli(main))
