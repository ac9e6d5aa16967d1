"""The vMF model hidden in an MNIST classifier's last layer: the paper's Figure 1, and the class affinity.

    python -m examples.figure1_demo [--data data/mnist.npz] [--latent-dim 2] [--epochs 10] [--out runs/demo]

Trains ``vae.classifier``'s MNIST classifier (the prior source of HVAE-L) with a 2-D penultimate layer (a
short CPU run; torchvision download, or offline the ``data/mnist.npz`` that
``python -m common.data mnist`` builds), turns its final layer into
a ``VMFPrior``, fits one concentration per class to the normalized test activations, and writes
``vmf_prior_demo.png``:

* with a 2-D penultimate layer, the angles of the normalized activations of each class against the vMF
  densities the final layer defines (Seo, Lee & Kwak, Figure 1);
* the class-affinity matrix p_T(y | i) of class-wise distillation (their Eq. 7), computed from the layer alone.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from common.cli import ArgumentParser, UserError, run_cli, set_threads
from common.data import load_mnist
from common.run import atomic_write_text
from vae.classifier import ClassifierConfig, MNISTClassifier, train_classifier
from vmfprior import VMFPrior


def _plot(
    path: Path,
    prior: VMFPrior,
    directions: torch.Tensor,
    labels: torch.Tensor,
    affinity: torch.Tensor,
    caption: str = "",
) -> None:
    """Draw the angle histograms against the vMF densities (d = 2 only) and the class-affinity matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    circle = prior.dim == 2
    figure, axes = plt.subplots(1, 2 if circle else 1, figsize=(13 if circle else 6.5, 5.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    if circle:
        axis = axes[0, 0]
        angles = torch.atan2(directions[:, 1], directions[:, 0])
        grid = torch.linspace(-math.pi, math.pi, 720, dtype=torch.float64)
        points = torch.stack([grid.cos(), grid.sin()], dim=1).to(prior.mean_directions.dtype)
        densities = prior.class_log_probs(points).exp()  # (720, C), density w.r.t. arc length
        for label in range(prior.num_classes):
            chosen = angles[labels == label].numpy()
            axis.hist(chosen, bins=180, range=(-math.pi, math.pi), density=True, alpha=0.35, color=colors(label))
            axis.plot(grid.numpy(), densities[:, label].numpy(), color=colors(label), lw=1.6, label=str(label))
        axis.set(
            xlabel="angle of the normalized activation (rad)",
            ylabel="density",
            title="normalized test activations (histograms)\nvs vMF(w_y/|w_y|, kappa_y) from the last layer (lines)",
        )
        axis.legend(title="class", ncol=2, fontsize=8)
    axis = axes[0, -1]
    image = axis.imshow(affinity.numpy(), cmap="viridis", vmin=0, vmax=1)
    axis.set(xlabel="predicted class y", ylabel="sampled class i", title="class affinity p_T(y | i) (Eq. 7)")
    axis.set_xticks(range(prior.num_classes))
    axis.set_yticks(range(prior.num_classes))
    figure.colorbar(image, ax=axis, fraction=0.046, label="probability")
    figure.suptitle(
        "The vMF model in an MNIST classifier's last layer (Seo, Lee & Kwak 2021, Figure 1 and Eq. 7)", fontsize=12
    )
    if caption:
        figure.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=9, wrap=True)
    figure.tight_layout(rect=(0, 0.025 * (caption.count("\n") + 1) + 0.02 if caption else 0, 1, 0.96))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    """Train, fit, draw; returns the summary also written to OUT/summary.json."""
    parser = ArgumentParser(prog="python -m examples.figure1_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default=None,
        help="MNIST .npz, e.g. data/mnist.npz from `python -m common.data mnist` (default: torchvision download)",
    )
    parser.add_argument("--latent-dim", type=int, default=2, help="penultimate width d (2 draws the circle figure)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs")
    parser.add_argument("--affinity-samples", type=int, default=2000, help="Monte Carlo samples per class for Eq. 7")
    parser.add_argument("--seed", type=int, default=0, help="seed of the classifier's initialization and batches")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1, or OMP_NUM_THREADS when set; see BENCHMARKS.md)",
    )
    parser.add_argument("--out", default="runs/demo", help="folder for the classifier, the figure and a JSON summary")
    args = parser.parse_args(argv)
    if args.latent_dim < 2 or args.epochs < 1 or args.affinity_samples < 1:
        raise UserError("--latent-dim must be >= 2, --epochs and --affinity-samples >= 1")

    set_threads(args.threads)
    started = time.time()
    data = load_mnist(args.data)
    trained = train_classifier(
        ClassifierConfig(
            latent_dim=args.latent_dim,
            epochs=args.epochs,
            seed=args.seed,
            out=args.out,
            num_validation=min(10_000, len(data.x_train) // 6),
        ),
        data=data,
    )
    model = MNISTClassifier(args.latent_dim, num_classes=data.num_classes)
    model.load_state_dict(torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)["model"])
    model.eval()
    with torch.no_grad():
        features = model.penultimate(data.x_test.float() / 255.0)  # (N, d)
    directions = nn.functional.normalize(features, dim=1)

    # The final layer gives the mean directions; fit each class's kappa to its test activations.
    unit_prior = VMFPrior.from_linear(model.head, concentration=1.0)
    concentration = unit_prior.fit_concentration(features, data.y_test, per_class=True).float()
    prior = VMFPrior.from_linear(model.head, concentration=concentration)
    affinity = prior.class_affinity(args.affinity_samples, activation_norm=features.norm(dim=1).mean().item())

    out = Path(args.out)
    figure_path = out / "vmf_prior_demo.png"
    caption = (
        f"{len(data.x_train):,} training images, {args.epochs} epoch(s), d = {args.latent_dim}; "
        f"test accuracy {trained['test_accuracy']:.3f}; kappa fitted per class to {len(data.x_test):,} "
        f"test activations; affinity from {args.affinity_samples:,} samples per class.\n"
        f"command: python -m examples.figure1_demo {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    _plot(figure_path, prior, directions, data.y_test, affinity, caption=caption)
    summary = {
        "test_accuracy": trained["test_accuracy"],
        "latent_dim": args.latent_dim,
        "concentration_per_class": [round(v, 3) for v in concentration.tolist()],
        "affinity_diagonal": [round(v, 4) for v in affinity.diagonal().tolist()],
        "figure": str(figure_path),
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
