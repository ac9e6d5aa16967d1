"""The paper's Figure 2 for a teacher and its CKD student with 2-D penultimate layers, and the affinity matrix.

    python -m ckd.figures --teacher runs/ckd-mnist/teacher \
        --student runs/ckd-mnist/students/mnist-conv-half_clean_ckd_s0 --data PATH/mnist.npz --out docs/ckd_figure2.png

Three panels: for the teacher and for the student, the angles of the normalized penultimate activations of
the clean test images (histograms per class) against the vMF densities of the model's own final layer
(vMF(w_i/|w_i|, kappa_i), one maximum-likelihood kappa per class fitted to those activations); then
log p_T(j | i), the class affinity (Eq. 7) the student was trained on. Prints the classes in the order of
their directions ``w_i`` around the circle for both models (does the student keep the teacher's cyclic order?)
and the fitted concentrations (are the student's clusters tighter?); ``--json`` also writes them to a file.
"""
from __future__ import annotations

import json
import math
import sys

import torch

from common.cli import ArgumentParser, run_cli, set_threads
from common.runs import atomic_write_text
from ckd.train import features_of, load_dataset, load_model, teacher_affinity
from vmfprior import VMFPrior

__all__ = ["cyclic_order", "same_cyclic_order", "figure_data", "main"]


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
    return any(doubled[i:i + len(first)] == first for i in range(len(second))) or \
        any((reverse + reverse)[i:i + len(first)] == first for i in range(len(second)))


def figure_data(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The normalized activations' angles, the prior with per-class MLE concentrations, and the cyclic order."""
    features = features_of(model, images)
    if features.shape[1] != 2:
        raise ValueError(f"Figure 2 needs a 2-D penultimate layer; this model's is {features.shape[1]}-D")
    head = model.head.cpu()
    kappa = VMFPrior.from_linear(head, 1.0).fit_concentration(features, labels, per_class=True)
    prior = VMFPrior.from_linear(head, kappa.float())
    unit = torch.nn.functional.normalize(features, dim=1)
    return {"angles": torch.atan2(unit[:, 1], unit[:, 0]), "prior": prior, "concentration": kappa.tolist(),
            "order": cyclic_order(head.weight.detach())}


def _plot(path: str, panels: list[tuple[str, dict]], labels: torch.Tensor, log_affinity: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(19, 5.2), gridspec_kw={"width_ratios": [1.25, 1.25, 1]},
                                layout="constrained")
    colors = plt.get_cmap("tab10")
    grid = torch.linspace(-math.pi, math.pi, 720, dtype=torch.float64)
    points = torch.stack([grid.cos(), grid.sin()], dim=1).float()
    for axis, (title, data) in zip(axes, panels):
        densities = data["prior"].class_log_probs(points).exp()  # (720, C), density per unit arc length
        for label in range(densities.shape[1]):
            chosen = data["angles"][labels == label].numpy()
            axis.hist(chosen, bins=180, range=(-math.pi, math.pi), density=True, alpha=0.35, color=colors(label))
            axis.plot(grid.numpy(), densities[:, label].numpy(), color=colors(label), lw=1.5, label=str(label))
        mean_kappa = sum(data["concentration"]) / len(data["concentration"])
        axis.set(xlabel="angle of the normalized activation a/|a| (rad)", ylabel="density",
                 title=f"{title}\nhistograms: clean test activations; lines: vMF(w_i/|w_i|, κ_i), mean κ {mean_kappa:.1f}")
        axis.legend(title="class", ncol=2, fontsize=7)
    image = axes[2].imshow(log_affinity.numpy(), cmap="viridis")
    axes[2].set(xlabel="class j", ylabel="class i", title="log p_T(j | i): the teacher's class affinity (Eq. 7)")
    axes[2].set_xticks(range(log_affinity.shape[0]))
    axes[2].set_yticks(range(log_affinity.shape[0]))
    figure.colorbar(image, ax=axes[2], fraction=0.046)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> dict:
    """Command-line entry point."""
    parser = ArgumentParser(prog="python -m ckd.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="the teacher's run folder or model.pt")
    parser.add_argument("--student", required=True, help="the CKD student's run folder or model.pt")
    parser.add_argument("--data", default=None, help="the dataset's .npz (default: download with torchvision)")
    parser.add_argument("--out", default="ckd_figure2.png", help="the PNG to write")
    parser.add_argument("--json", default=None, help="also write the orders and concentrations to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    teacher, teacher_checkpoint = load_model(args.teacher)
    student, student_checkpoint = load_model(args.student)
    data = load_dataset(teacher_checkpoint.get("dataset", "mnist"), args.data)
    panels = [(f"teacher {teacher_checkpoint['architecture']} (test accuracy {100 * teacher_checkpoint['test_accuracy']:.1f} %)",
               figure_data(teacher, data.x_test, data.y_test)),
              (f"CKD student {student_checkpoint['architecture']} (test accuracy "
               f"{100 * student_checkpoint['test_accuracy']:.1f} %)", figure_data(student, data.x_test, data.y_test))]
    if "affinity" in student_checkpoint:
        affinity = student_checkpoint["affinity"]
    else:
        affinity = teacher_affinity(teacher, teacher_checkpoint["concentration_mle"], teacher_checkpoint["activation_norm"],
                                    10_000)
    _plot(args.out, panels, data.y_test, affinity.clamp_min(1e-12).log())
    summary = {
        "teacher_order": panels[0][1]["order"], "student_order": panels[1][1]["order"],
        "same_cyclic_order": same_cyclic_order(panels[0][1]["order"], panels[1][1]["order"]),
        "teacher_concentration": panels[0][1]["concentration"], "student_concentration": panels[1][1]["concentration"],
        "teacher_test_accuracy": teacher_checkpoint["test_accuracy"],
        "student_test_accuracy": student_checkpoint["test_accuracy"],
        "affinity_diagonal": affinity.diagonal().tolist(),
    }
    print(f"wrote {args.out}\nclasses around the circle: teacher {summary['teacher_order']}, student "
          f"{summary['student_order']} (same cyclic order up to direction: {summary['same_cyclic_order']})\n"
          "per-class MLE concentration: teacher "
          + " ".join(f"{k:.1f}" for k in summary["teacher_concentration"]) + "; student "
          + " ".join(f"{k:.1f}" for k in summary["student_concentration"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
