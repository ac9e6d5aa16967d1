"""Demo: the vMF model hidden in an MNIST classifier's last layer (the paper's Figure 1, and class affinity).

    python -m vmfprior.demo [--data PATH.npz] [--feature-dim 2] [--epochs 2] [--out runs/demo]

Trains a small MLP classifier on MNIST (about a minute on a laptop CPU; torchvision download, or a local
.npz such as ../shared/data/mnist.npz offline), turns its final layer into a ``VMFPrior``, fits one
concentration per class to the normalized test activations, and writes ``vmf_prior_demo.png``:

* with a 2-D penultimate layer, the angles of the normalized activations of each class against the vMF
  densities the final layer defines (Seo, Lee & Kwak, Figure 1);
* the class-affinity matrix p_T(y | i) of class-wise distillation (their Eq. 7), computed from the layer alone.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import VMFPrior
from .data import load_mnist

class MLPClassifier(nn.Module):
    """784 -> 256 -> 128 -> d (linear penultimate layer) -> head; ``features`` gives the penultimate activations."""

    def __init__(self, feature_dim: int, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, feature_dim)
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(images) / batch_size)
    progress = tqdm(total=steps, desc="training classifier", unit="step")
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            batch = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            progress.update()
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()


def _plot(path: Path, prior: VMFPrior, directions: torch.Tensor, labels: torch.Tensor, affinity: torch.Tensor) -> None:
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
        axis.set(xlabel="angle of the normalized activation (rad)", ylabel="density",
                 title="normalized test activations (histograms)\nvs vMF(w_y/|w_y|, kappa_y) from the last layer (lines)")
        axis.legend(title="class", ncol=2, fontsize=8)
    axis = axes[0, -1]
    image = axis.imshow(affinity.numpy(), cmap="viridis", vmin=0, vmax=1)
    axis.set(xlabel="predicted class y", ylabel="sampled class i", title="class affinity p_T(y | i) (Eq. 7)")
    axis.set_xticks(range(prior.num_classes))
    axis.set_yticks(range(prior.num_classes))
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="MNIST .npz (e.g. ../shared/data/mnist.npz); default: torchvision download")
    parser.add_argument("--feature-dim", type=int, default=2, help="penultimate width d (2 draws the circle figure)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs over the 60,000 training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--affinity-samples", type=int, default=2000, help="Monte Carlo samples per class for Eq. 7")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/demo", help="folder for the figure and a JSON summary")
    args = parser.parse_args(argv)
    if args.feature_dim < 2:
        parser.error(f"--feature-dim must be >= 2, got {args.feature_dim}")

    torch.manual_seed(args.seed)
    started = time.time()
    data = load_mnist(args.data)
    to_float = lambda images: images.float().div_(255.0)  # noqa: E731
    model = MLPClassifier(args.feature_dim, data.num_classes)
    _train(model, to_float(data.x_train), data.y_train, args.epochs, args.batch_size, args.seed)

    model.eval()
    with torch.no_grad():
        test_images = to_float(data.x_test)
        features = model.features(test_images)
        accuracy = (model.head(features).argmax(1) == data.y_test).float().mean().item()
    directions = nn.functional.normalize(features, dim=1)

    # The final layer gives the mean directions; fit each class's kappa to its test activations.
    unit_prior = VMFPrior.from_linear(model.head, concentration=1.0)
    concentration = unit_prior.fit_concentration(features, data.y_test, per_class=True).float()
    prior = VMFPrior.from_linear(model.head, concentration=concentration)
    affinity = prior.class_affinity(n_samples=args.affinity_samples, activation_norm=features.norm(dim=1).mean().item())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure_path = out / "vmf_prior_demo.png"
    _plot(figure_path, prior, directions, data.y_test, affinity)
    summary = {
        "test_accuracy": accuracy,
        "feature_dim": args.feature_dim,
        "concentration_per_class": [round(v, 3) for v in concentration.tolist()],
        "affinity_diagonal": [round(v, 4) for v in affinity.diagonal().tolist()],
        "figure": str(figure_path),
        "seconds": round(time.time() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
