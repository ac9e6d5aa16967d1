"""The paper's claims about the final layer, measured on this project's classifiers.

    python -m ckd.analysis activations --data data/mnist.npz --out runs/ckd-activations --epochs 1 2 4 8
    python -m ckd.analysis activations --recipe runs/ckd-teacher/config.json --epochs 1 2 4 8 16 --data ... --out ...
    python -m ckd.analysis similarity --teachers runs/t0 runs/t1 runs/t2 [runs/wrn ...] --data data/mnist.npz \\
        --figure docs/ckd_affinity_similarity.png
    python -m ckd.analysis pair --checkpoints runs/t0 runs/t1 runs/t2 --data data/mnist.npz

* ``activations`` (the UAI paper's Figure 2 over training): one teacher trained with checkpoints after the given
  epochs (Adam at a constant step by default; ``--recipe`` trains it like a given ``ckd.teacher`` run, its schedule
  spanning the last epoch asked for); at each, on the clean test images, the cosine of every normalized activation
  with its class's mean direction w_y/|w_y|, the kappa fitted to those activations, the mean |a| and the accuracy
  with and without normalizing a and w_i, and the kappa and mean cosine of as many clean training images. A figure
  shows the cosine histograms by epoch and kappa and |a| against the epoch. Each stop's model is kept as
  ``OUT/run/stop-EPOCH.pt``: a rerun into the same ``--out`` reads it back instead of training (so the figure and
  JSON can be redrawn), and a run already past a stop whose file is missing is refused, not measured at the wrong
  epoch.
* ``similarity`` (the ICLR paper's Figure 3): the class affinities (Eq. 7) of independently trained teachers
  (seeds, or architectures of the same dataset), each at its own stored kappa_MLE and mean |a| (``--kappa mle``)
  or at kappa = |a| (``--kappa norm``: more mass off the diagonal, where the structure is); the Pearson
  correlation of their off-diagonal log-affinities for every pair (the diagonal is excluded: it would make any
  two affinities look alike).
* ``pair`` (Eq. 6): the generative model's class posterior ``softmax(kappa w_i/|w_i| . a/|a|)`` against the
  network's own ``softmax(W a + b)`` on the clean test images, at the kappa_MLE stored with the teacher: the
  fraction of images where both predict the same class, both accuracies, and the mean KL(network || vMF pair).
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from ckd.config import analysis_parser
    from common.config import answer_early

    answer_early(analysis_parser("python -m ckd.analysis", __doc__.split("\n\n")[0]))

import dataclasses
import functools
import json
import sys
import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F

from ckd.config import TeacherConfig, analysis_parser
from ckd.normalization_check import normalized_accuracy
from ckd.train import AFFINITY_SEED, features_of, load_dataset, load_model, teacher_affinity, teacher_head_statistics
from common.cli import run_cli, set_threads
from common.config import config_from_dict, read_config_file
from common.run import LAST_CHECKPOINT, atomic_save, atomic_write_text, config_differences, load_checkpoint
from vmfprior import VMFPrior

__all__ = ["cosine_statistics", "affinity_correlations", "generative_pair", "activations_over_training", "main"]

LOG_FLOOR = 1e-30
"""Affinity entries are clamped here before the log (a float32 softmax can underflow to 0)."""


def cosine_statistics(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> dict:
    """How the normalized activations gather around their class's mean direction.

    Args:
        features: (N, d) activations a; labels: (N,); weight: (C, d) final-layer weight.

    Returns:
        {"cosines": (N,) float64 cos(a, w_y), "mean_cosine", "kappa" (the MLE with the directions held fixed),
         "mean_norm"}.
    """
    prior = VMFPrior.from_weight(weight.detach().float(), 1.0)
    unit = F.normalize(features.float(), dim=1)
    cosines = (unit * prior.mean_directions[labels]).sum(dim=1).double()
    return {
        "cosines": cosines,
        "mean_cosine": float(cosines.mean()),
        "kappa": float(prior.fit_concentration(features.float(), labels)),
        "mean_norm": float(features.norm(dim=1).mean()),
    }


def affinity_correlations(affinities: list[torch.Tensor]) -> torch.Tensor:
    """Pearson correlation of the off-diagonal log-affinities of every pair.

    Args:
        affinities: K (C, C) row-stochastic matrices.

    Returns:
        (K, K) float64 correlation matrix.
    """
    if len(affinities) < 2:
        raise ValueError("affinity similarity needs at least two affinities")
    classes = affinities[0].shape[0]
    off = ~torch.eye(classes, dtype=torch.bool)
    vectors = torch.stack([a.double().clamp_min(LOG_FLOOR).log()[off] for a in affinities])  # (K, C(C-1))
    return torch.corrcoef(vectors)


def generative_pair(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kappa: float
) -> dict:
    """The network's p(y | a) against the vMF pair's softmax(kappa w_i/|w_i| . a/|a|) (equal class priors).

    Args:
        features: (N, d); labels: (N,); weight: (C, d); bias: (C,) or None; kappa: the pair's concentration.

    Returns:
        {"agreement": fraction with the same argmax, "network_accuracy", "pair_accuracy",
         "mean_kl": mean KL(p_network || p_pair) in nats}.
    """
    features, weight = features.double(), weight.double()
    network = features @ weight.T + (0 if bias is None else bias.double())
    pair = kappa * F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T
    log_network, log_pair = F.log_softmax(network, dim=1), F.log_softmax(pair, dim=1)
    kl = (log_network.exp() * (log_network - log_pair)).sum(dim=1)
    return {
        "agreement": float((network.argmax(1) == pair.argmax(1)).double().mean()),
        "network_accuracy": float((network.argmax(1) == labels).double().mean()),
        "pair_accuracy": float((pair.argmax(1) == labels).double().mean()),
        "mean_kl": float(kl.mean()),
    }


def activations_over_training(
    recipe: dict, data, data_path: str | None, out: Path, epochs: list[int], seed: int, log=print
) -> list[dict]:
    """Train one teacher, stopping after each of ``epochs``; measure the activations at every stop.

    Args:
        recipe: ``ckd.config.TeacherConfig`` keys it trains with (architecture, optimizer, schedule, augment, ...);
            its epochs (``max(epochs)``), seed, data and run folder (``out/run``) are set here.
        data: the loaded dataset; data_path: its .npz (recorded in the run's config).
        out: the measurement's folder.
        epochs: increasing epochs after which to measure.
        seed: the teacher's seed.

    Returns:
        one dict per epoch: "epoch", "dim", "accuracy", "normalized_accuracy", "kappa", "mean_norm", "mean_cosine",
        "cosines" (list), all of the clean test images; and "train_kappa", "train_mean_cosine" of as many clean
        training images (the first ones, unaugmented), which separate fitting from generalizing.
    """
    from ckd.models import build_model
    from ckd.teacher import train_teacher

    records = []
    count = data.x_test.shape[0]
    for epoch in epochs:
        config = config_from_dict(
            TeacherConfig,
            {
                **recipe,
                "data": data_path,
                "out": str(out / "run"),
                "epochs": max(epochs),
                "stop_after": epoch,
                "seed": seed,
                "resume": (out / "run" / LAST_CHECKPOINT).is_file(),
                "progress": False,
            },
        )
        state = _stop_state(config, out / "run", epoch, functools.partial(train_teacher, config, data=data, log=log))
        model = build_model(config.architecture, data.num_classes, data.image_shape, config.feature_dim)
        model.load_state_dict(state)
        features = features_of(model, data.x_test)
        head = model.head
        stats = cosine_statistics(features, data.y_test, head.weight)
        train_stats = cosine_statistics(features_of(model, data.x_train[:count]), data.y_train[:count], head.weight)
        scores = normalized_accuracy(
            features, data.y_test, head.weight.detach(), None if head.bias is None else head.bias.detach()
        )
        records.append(
            {
                "epoch": epoch,
                "dim": features.shape[1],
                "accuracy": scores["accuracy"],
                "normalized_accuracy": scores["normalized_accuracy"],
                "kappa": stats["kappa"],
                "mean_norm": stats["mean_norm"],
                "mean_cosine": stats["mean_cosine"],
                "train_kappa": train_stats["kappa"],
                "train_mean_cosine": train_stats["mean_cosine"],
                "cosines": stats["cosines"].tolist(),
            }
        )
        log(
            f"epoch {epoch}: accuracy {scores['accuracy']:.4f} (normalized {scores['normalized_accuracy']:.4f}), "
            f"kappa {stats['kappa']:.1f} (training images {train_stats['kappa']:.1f}), "
            f"mean |a| {stats['mean_norm']:.1f}, mean cos {stats['mean_cosine']:.3f}"
        )
    return records


def _stop_state(config, run: Path, epoch: int, train) -> dict:
    """The model state after ``epoch``: from its stop file ``run/stop-EPOCH.pt`` when an earlier call saved one with
    the same settings, else trained by ``train()`` (resuming ``run/last.pt``) and then saved there.

    Raises:
        ValueError: a stop file of other settings, or a run already past ``epoch`` with no stop file for it (its
            model at ``epoch`` is gone; measuring ``last.pt`` would silently measure a later epoch).
    """
    path = run / f"stop-{epoch}.pt"
    if path.is_file():
        saved = load_checkpoint(path, ("config", "model"), what="activations stop checkpoint")
        differences = config_differences(saved["config"], config)
        if differences:
            raise ValueError(
                f"--out: {path} was trained with other settings ({'; '.join(differences)}); choose a new --out"
            )
        return saved["model"]
    last = run / LAST_CHECKPOINT
    if last.is_file() and load_checkpoint(last, ("step",), what="ckd checkpoint")["step"] > epoch:
        raise ValueError(f"--out: {run} is already past epoch {epoch} and has no {path.name}; choose a new --out")
    train()
    state = load_checkpoint(last, ("model",), what="ckd checkpoint")["model"]
    atomic_save({"config": dataclasses.asdict(config), "model": state}, path)
    return state


def _plot_activations(path: str, records: list[dict], dim: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    colors = plt.get_cmap("viridis")
    lowest = min(-0.2, min(min(record["cosines"]) for record in records))  # every cosine is drawn
    bins = min(100, max(20, len(records[0]["cosines"]) // 40))
    for index, record in enumerate(records):
        left.hist(
            record["cosines"],
            bins=bins,
            range=(lowest, 1.0),
            density=True,
            histtype="step",
            lw=1.5,
            color=colors(index / max(len(records) - 1, 1)),
            label=f"epoch {record['epoch']}",
        )
    left.set(
        xlabel="cos(a, w_y/|w_y|) of each clean test image",
        ylabel="density",
        title=f"Cosine with the class direction, by epoch (d = {dim})",
    )
    left.legend()
    epochs = [record["epoch"] for record in records]
    right.plot(epochs, [record["kappa"] for record in records], "o-", label="kappa fitted to the test activations")
    right.plot(
        epochs, [record["train_kappa"] for record in records], "o:", label="kappa fitted to training activations"
    )
    right.plot(epochs, [record["mean_norm"] for record in records], "s--", label="mean |a|")
    right.set(xscale="log", xlabel="epoch", ylabel="value", title="Concentration and activation norm over training")
    right.set_xticks(epochs, [str(e) for e in epochs])
    right.xaxis.set_minor_formatter(NullFormatter())  # only the measured epochs are labelled
    right.legend()
    figure.suptitle("Penultimate activations over training (UAI Figure 2 analogue); histograms: clean test images")
    figure.supxlabel(
        "One teacher stopped after each epoch shown. Left: cosine of each clean test image's activation "
        "with its class's mean direction w_y/|w_y|.\nRight: the maximum-likelihood κ of those "
        "activations and of as many clean training images' (directions held fixed), and the test activations' "
        "mean norm |a|.",
        fontsize=9,
    )
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_similarity(
    path: str, names: list[str], affinities: list[torch.Tensor], correlations: torch.Tensor, setting: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(affinities)
    figure, axes = plt.subplots(1, count + 1, figsize=(3.4 * (count + 1), 3.6), layout="constrained")
    for axis, name, affinity in zip(axes, names, affinities):
        image = axis.imshow(affinity.double().clamp_min(LOG_FLOOR).log10().numpy(), cmap="viridis")
        axis.set(title=name, xlabel="class j", ylabel="class i")
        figure.colorbar(image, ax=axis, fraction=0.046, label="log10 p_T(j | i)")
    image = axes[-1].imshow(correlations.numpy(), cmap="magma", vmin=min(0.0, float(correlations.min())), vmax=1)
    for i in range(count):
        for j in range(count):
            axes[-1].text(
                j,
                i,
                f"{float(correlations[i, j]):.2f}",
                ha="center",
                va="center",
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0},
            )
    axes[-1].set(
        title="correlation of off-diagonal log-affinities",
        xlabel="teacher",
        ylabel="teacher",
        xticks=range(count),
        yticks=range(count),
    )
    figure.colorbar(image, ax=axes[-1], fraction=0.046)
    figure.suptitle(f"Class affinities (Eq. 7) of independently trained teachers, {setting}")
    figure.supxlabel(
        textwrap.fill(
            "Each teacher's p_T(j | i) from its final layer alone (Monte Carlo, fixed seed); "
            "right: Pearson correlation of the log-affinities off the diagonal for every pair "
            "of teachers.",
            40 * (count + 1),
        ),
        fontsize=9,
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _affinity_setting(checkpoint: dict, kappa_rule: str, path: str) -> tuple[float, float]:
    kappa, norm = teacher_head_statistics(checkpoint)
    if kappa is None or norm is None:
        raise ValueError(f"{path} stores no kappa_mle / mean_activation_norm (not a ckd.teacher model)")
    return (kappa if kappa_rule == "mle" else norm), norm


def main(argv=None) -> dict:
    """Command-line entry point."""
    args = analysis_parser("python -m ckd.analysis", __doc__.split("\n\n")[0]).parse_args(argv)
    set_threads(args.threads)
    if args.command == "activations":
        if sorted(set(args.epochs)) != args.epochs or args.epochs[0] < 1:
            raise ValueError(f"--epochs must be increasing positive integers, got {args.epochs}")
        out = Path(args.out)
        recipe = read_config_file(args.recipe, TeacherConfig, name="--recipe") if args.recipe else {}
        for key in ("architecture", "feature_dim", "learning_rate"):
            if getattr(args, key) is not None:
                recipe[key] = getattr(args, key)
        architecture = recipe.setdefault("architecture", "mnist-conv")
        if "dataset" not in recipe:
            recipe["dataset"] = "mnist" if architecture.startswith("mnist") else "cifar10"
        data = load_dataset(recipe["dataset"], args.data)
        records = activations_over_training(recipe, data, args.data, out, args.epochs, args.seed)
        _plot_activations(str(out / "activations.png"), records, records[-1]["dim"])
        result = {
            "epochs": [{k: v for k, v in r.items() if k != "cosines"} for r in records],
            "figure": str(out / "activations.png"),
        }
    elif args.command == "similarity":
        if len(args.teachers) < 2:
            raise ValueError("--teachers needs at least two run folders")
        names, affinities, settings = [], [], []
        for path in args.teachers:
            model, checkpoint = load_model(path)
            kappa, norm = _affinity_setting(checkpoint, args.kappa, path)
            affinities.append(teacher_affinity(model, kappa, norm, args.samples, seed=AFFINITY_SEED))
            names.append(f"{Path(path).name} ({checkpoint['architecture']})")
            settings.append(
                {
                    "teacher": path,
                    "kappa": kappa,
                    "activation_norm": norm,
                    "off_diagonal_mass": float(1 - affinities[-1].diagonal().double().mean()),
                }
            )
        correlations = affinity_correlations(affinities)
        if args.figure:
            setting = "each at kappa_MLE" if args.kappa == "mle" else "each at kappa = its mean |a|"
            _plot_similarity(args.figure, names, affinities, correlations, setting)
        off = ~torch.eye(len(affinities), dtype=torch.bool)
        result = {
            "teachers": settings,
            "correlations": correlations.tolist(),
            "mean_pairwise_correlation": float(correlations[off].mean()),
        }
        print(f"mean pairwise correlation of off-diagonal log-affinities: {result['mean_pairwise_correlation']:.3f}")
    else:
        result = {}
        for path in args.checkpoints:
            model, checkpoint = load_model(path)
            kappa, _ = teacher_head_statistics(checkpoint)
            if kappa is None:
                raise ValueError(f"{path} stores no kappa_mle (not a ckd.teacher model)")
            data = load_dataset(checkpoint.get("dataset", "mnist"), args.data)
            head = model.head
            result[path] = {
                "kappa_mle": kappa,
                **generative_pair(
                    features_of(model, data.x_test),
                    data.y_test,
                    head.weight.detach(),
                    None if head.bias is None else head.bias.detach(),
                    kappa,
                ),
            }
            entry = result[path]
            print(
                f"{path}: argmax agreement {100 * entry['agreement']:.2f} %, "
                f"network {100 * entry['network_accuracy']:.2f}"
                f" %, vMF pair {100 * entry['pair_accuracy']:.2f} %, mean KL(network || pair) {entry['mean_kl']:.4f} "
                f"nats at kappa_MLE {kappa:.1f}"
            )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main))
