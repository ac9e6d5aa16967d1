"""The paper's Figure 2 with its controls: the teacher, a CKD student and a label-only student side by side.

    python -m ckd.figures --teacher runs/ckd-mnist-table3/teacher \
        --student runs/ckd-mnist-table3/students/mnist-conv-half_clean_ckd_s0 \
        --label-student runs/ckd-mnist-table3/students/mnist-conv-half_clean_label_s0 \
        --data data/mnist.npz --out docs/ckd_figure2.png

Top row, one panel per model, the clean test images' normalized penultimate activations against the vMF model of
that model's own final layer, with kappa fitted (maximum likelihood, mean directions w_i/|w_i| held fixed) to
exactly the plotted activations. With d = 2: the angle of a/|a| per class (histograms), the vMF densities, and
the mean directions as vertical lines. With d > 2: the histogram of cos(a, w_y/|w_y|) against the density of
that cosine under vMF(kappa) on S^{d-1}, f(t) ∝ exp(kappa t) (1 - t^2)^{(d-3)/2}. Bottom row: each model's
mean directions as the matrix of their cosines w_i/|w_i| . w_j/|w_j|, and log p_T(j | i), the teacher's class
affinity (Eq. 7) the CKD student learned from. The paper says CKD students are "more concentrated" than their
teacher; the printout and ``--json`` compare each student's fitted kappa with the teacher's (same d).
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from ckd.config import FiguresConfig
    from common.config import answer_early

    answer_early(FiguresConfig, prog="python -m ckd.figures", description=__doc__.split("\n\n")[0], config_file=False)

import json
import math
import sys

import torch

from ckd.config import FiguresConfig
from ckd.train import features_of, load_dataset, load_model, teacher_affinity, teacher_head_statistics
from common.cli import run_cli, set_threads
from common.config import parse_config
from common.run import atomic_write_text
from vmfprior import VMFPrior

__all__ = ["cyclic_order", "same_cyclic_order", "figure_data", "cosine_density", "main"]


def cyclic_order(weight: torch.Tensor) -> list[int]:
    """Classes sorted by the angle of their 2-D direction w_i, starting from class 0.

    Args:
        weight: (C, 2) final-layer weight.

    Returns:
        a list of the C class indices.
    """
    if weight.dim() != 2 or weight.shape[1] != 2:
        raise ValueError(f"weight must be (C, 2), got {tuple(weight.shape)}")
    angles = torch.atan2(weight[:, 1], weight[:, 0])
    order = torch.argsort(angles).tolist()
    start = order.index(0)
    return order[start:] + order[:start]


def same_cyclic_order(first: list[int], second: list[int]) -> bool:
    """Whether two cyclic orders agree up to rotation and direction (clockwise or counter-clockwise)."""
    if sorted(first) != sorted(second):
        return False
    doubled = second + second
    reverse = list(reversed(second))
    return any(doubled[i : i + len(first)] == first for i in range(len(second))) or any(
        (reverse + reverse)[i : i + len(first)] == first for i in range(len(second))
    )


def figure_data(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """What one panel shows: the activations, kappa fitted to them, the mean directions.

    Returns:
        {"dim", "unit" (N, d) normalized activations, "cosines" (N,) cos(a, w_y), "angles" (N,) for d = 2,
         "kappa" (one MLE for all the plotted activations), "kappa_per_class" (C,), "directions" (C, d),
         "order" (the cyclic order of the directions, d = 2 only), "prior_per_class"}.
    """
    features = features_of(model, images)
    head = model.head.cpu()
    prior = VMFPrior.from_linear(head, 1.0)
    unit = torch.nn.functional.normalize(features, dim=1)
    directions = prior.mean_directions.detach()
    kappa = float(prior.fit_concentration(features, labels))
    per_class = prior.fit_concentration(features, labels, per_class=True)
    data = {
        "dim": features.shape[1],
        "unit": unit,
        "cosines": (unit * directions[labels]).sum(dim=1),
        "kappa": kappa,
        "kappa_per_class": per_class.tolist(),
        "directions": directions,
        "prior_per_class": VMFPrior.from_linear(head, per_class.float()),
    }
    if features.shape[1] == 2:
        data["angles"] = torch.atan2(unit[:, 1], unit[:, 0])
        data["order"] = cyclic_order(head.weight.detach())
    return data


def cosine_density(t: torch.Tensor, kappa: float, dim: int) -> torch.Tensor:
    """Density of t = mu . z for z ~ vMF(mu, kappa) on S^{dim-1}: c exp(kappa t) (1 - t^2)^((dim-3)/2) on (-1, 1).

    Normalized numerically on a fine grid (float64), so no Bessel function is needed.
    """
    grid = torch.linspace(-1, 1, 200_001, dtype=torch.float64)[1:-1]

    def log_unnormalized(x):
        return kappa * (x - 1) + (dim - 3) / 2 * torch.log1p(-x * x)

    log_norm = torch.logsumexp(log_unnormalized(grid), 0) + math.log(float(grid[1] - grid[0]))
    return torch.exp(log_unnormalized(t.double()) - log_norm)


def _plot(path: str, panels: list[tuple[str, dict]], labels: torch.Tensor, log_affinity: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(panels)
    figure, axes = plt.subplots(2, count + 1, figsize=(5.4 * (count + 1), 9.2), layout="constrained")
    colors = plt.get_cmap("tab10")
    for axis, (title, data) in zip(axes[0], panels):
        if data["dim"] == 2:
            grid = torch.linspace(-math.pi, math.pi, 720, dtype=torch.float64)
            points = torch.stack([grid.cos(), grid.sin()], dim=1).float()
            densities = data["prior_per_class"].class_log_probs(points).exp()
            for label in range(densities.shape[1]):
                axis.hist(
                    data["angles"][labels == label].numpy(),
                    bins=180,
                    range=(-math.pi, math.pi),
                    density=True,
                    alpha=0.35,
                    color=colors(label),
                )
                axis.plot(grid.numpy(), densities[:, label].numpy(), color=colors(label), lw=1.5, label=str(label))
                direction = data["directions"][label]
                axis.axvline(math.atan2(float(direction[1]), float(direction[0])), color=colors(label), ls=":")
            axis.set(xlabel="angle of a/|a| (rad); dotted: mean directions w_i/|w_i|", ylabel="density")
            axis.legend(title="class", ncol=2, fontsize=7)
        else:
            t = torch.linspace(-0.2, 0.9999, 1000, dtype=torch.float64)
            axis.hist(
                data["cosines"].numpy(),
                bins=120,
                range=(-0.2, 1.0),
                density=True,
                alpha=0.5,
                label="clean test activations",
            )
            axis.plot(
                t.numpy(),
                cosine_density(t, data["kappa"], data["dim"]).numpy(),
                "k-",
                lw=1.5,
                label=f"vMF(w_y/|w_y|, κ = {data['kappa']:.1f}) on S^{data['dim'] - 1}",
            )
            axis.set(
                xlabel="cos(a, w_y/|w_y|): each activation against its class's mean direction",
                ylabel="density",
                xlim=(-0.2, 1.0),
            )
            axis.legend(fontsize=8, loc="upper left")
        axis.set_title(f"{title}\nκ fitted to these activations: {data['kappa']:.1f}", fontsize=10)
    for axis, (title, data) in zip(axes[1], panels):
        directions = data["directions"]
        image = axis.imshow((directions @ directions.T).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        axis.set(
            title=f"mean directions of the final layer:\nw_i/|w_i| . w_j/|w_j| ({title.split(' (')[0]})",
            xlabel="class j",
            ylabel="class i",
            xticks=range(directions.shape[0]),
            yticks=range(directions.shape[0]),
        )
        figure.colorbar(image, ax=axis, fraction=0.046)
    axes[0][-1].axis("off")
    axes[0][-1].text(
        0.0,
        0.5,
        "\n".join(f"{title.split(' (')[0]}: κ = {data['kappa']:.1f}" for title, data in panels)
        + "\n\n(κ: maximum likelihood on the\nplotted clean test activations,"
        "\nmean directions held fixed)",
        fontsize=11,
        va="center",
    )
    image = axes[1][-1].imshow(log_affinity.numpy(), cmap="viridis")
    axes[1][-1].set(
        xlabel="class j",
        ylabel="class i",
        title="log p_T(j | i): the teacher's class affinity\n(Eq. 7) the CKD student learned from",
        xticks=range(log_affinity.shape[0]),
        yticks=range(log_affinity.shape[0]),
    )
    figure.colorbar(image, ax=axes[1][-1], fraction=0.046)
    figure.suptitle(
        "Figure 2 with its controls: clean test activations of the teacher, a CKD student and a label-only student"
    )
    figure.supxlabel(
        "Top: each model's normalized penultimate activations of the clean test images against the vMF "
        "model of its own final layer, with κ the maximum-likelihood fit to exactly these activations "
        "(mean directions held fixed).\nA histogram wider than its line means the activations spread "
        "more than one κ describes. Bottom: cosines between the mean directions w_i/|w_i| of each final "
        "layer, and the teacher's affinity the CKD student was trained on.",
        fontsize=9,
    )
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv=None) -> dict:
    """Command-line entry point."""
    args = parse_config(
        FiguresConfig, argv, prog="python -m ckd.figures", description=__doc__.split("\n\n")[0], config_file=False
    )
    set_threads(args.threads)
    teacher, teacher_checkpoint = load_model(args.teacher)
    data = load_dataset(teacher_checkpoint.get("dataset", "mnist"), args.data)
    models = [("teacher", args.teacher, teacher, teacher_checkpoint)]
    for role, path in (("CKD student", args.student), ("label-only student", args.label_student)):
        if path is not None:
            model, checkpoint = load_model(path)
            models.append((role, path, model, checkpoint))
    panels = []
    for role, _, model, checkpoint in models:
        title = f"{role} {checkpoint['architecture']} (clean test accuracy {100 * checkpoint['test_accuracy']:.1f} %)"
        panels.append((title, figure_data(model, data.x_test, data.y_test)))
    dims = {panel["dim"] for _, panel in panels}
    if len(dims) != 1:
        raise ValueError(f"the models' penultimate dimensions differ ({sorted(dims)}): kappa is not comparable")
    _, student_checkpoint = models[1][2], models[1][3]
    if "affinity" in student_checkpoint:
        affinity = student_checkpoint["affinity"]
    else:
        kappa, norm = teacher_head_statistics(teacher_checkpoint)
        affinity = teacher_affinity(teacher, kappa, norm, 10_000)
    _plot(args.out, panels, data.y_test, affinity.clamp_min(1e-12).log())
    teacher_kappa = panels[0][1]["kappa"]
    summary = {
        "dim": dims.pop(),
        "teacher_test_accuracy": teacher_checkpoint["test_accuracy"],
        "affinity_diagonal": affinity.diagonal().tolist(),
        "models": {},
    }
    for (role, path, _, checkpoint), (_, panel) in zip(models, panels):
        summary["models"][role] = {
            "path": str(path),
            "kappa": panel["kappa"],
            "kappa_per_class": panel["kappa_per_class"],
            "test_accuracy": checkpoint["test_accuracy"],
            "more_concentrated_than_teacher": panel["kappa"] > teacher_kappa,
        }
        if "order" in panel:
            summary["models"][role]["order"] = panel["order"]
    lines = [f"wrote {args.out}"]
    for role, entry in summary["models"].items():
        comparison = (
            ""
            if role == "teacher"
            else (f" ({'more' if entry['more_concentrated_than_teacher'] else 'less'} concentrated than the teacher)")
        )
        lines.append(f"{role}: kappa fitted to its clean test activations {entry['kappa']:.1f}{comparison}")
    if "order" in panels[0][1]:
        for role, entry in list(summary["models"].items())[1:]:
            entry["same_cyclic_order"] = same_cyclic_order(summary["models"]["teacher"]["order"], entry["order"])
            lines.append(f"{role}: same cyclic order of classes as the teacher: {entry['same_cyclic_order']}")
    print("\n".join(lines))
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
