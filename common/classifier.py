"""One trainer for the classifiers whose final layer becomes a vMF prior (vae.classifier, gan.classifier,
ckd.teacher): training on a run folder, accuracy, penultimate features, the head statistics and one checkpoint.

A classifier here is any ``nn.Module`` whose ``forward(x)`` gives logits ``(B, C)`` from images in [0, 1], whose
final layer is the submodule ``head`` (a ``vmfprior.heads`` layer with ``weight (C, d)``), and which gives its
penultimate activations ``(B, d)`` through ``penultimate(x)`` (or ``features(x)``). A command picks the
architecture and the dataset and calls :func:`train_classifier` with a config that has the fields of
:class:`ClassifierSettings` (it may add its own).

The run folder gets config.json, metrics.jsonl (one line per epoch), ``last.pt`` (for ``--resume``, see
:mod:`common.run`) and, when training ends, ``classifier.pt``::

    {"format": 2, "kind": ..., "model": state_dict, "config": {...}, "num_classes": C, "feature_dim": d,
     "validation_accuracy": float or None, "test_accuracy": float,
     "kappa_mle": float, "mean_activation_norm": float, "stats_images": int}

``kappa_mle`` is the maximum-likelihood concentration of the normalized penultimate activations of the first
``stats_images`` clean training images around the head's directions (``VMFPrior.fit_concentration``), and
``mean_activation_norm`` their mean norm |a|: what ``VMFPrior.from_checkpoint`` and ``class_affinity`` need.
:func:`head_statistics_of` also reads the older key names (``concentration_mle``, ``activation_norm``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.classifier_config import OPTIMIZERS, ClassifierSettings, head_option
from common.config import ConfigError, check_choice, check_positive, flag
from common.run import (
    SCHEDULES,
    RunFolder,
    all_finite,
    atomic_save,
    epoch_order,
    learning_rate_factor,
    load_checkpoint,
    load_state,
    set_learning_rate,
)
from vmfprior import VMFPrior
from vmfprior.heads import HEAD_KINDS

__all__ = [
    "CHECKPOINT_NAME",
    "OPTIMIZERS",
    "ClassifierSettings",
    "accuracy",
    "check_settings",
    "check_training",
    "features_of",
    "head_statistics",
    "head_option",
    "head_statistics_of",
    "load_classifier_checkpoint",
    "penultimate",
    "train_classifier",
]

CHECKPOINT_NAME = "classifier.pt"


def check_training(config) -> None:
    """Raise :class:`ConfigError` naming the flag of the first bad optimization setting (epochs, batch_size,
    learning_rate, optimizer, momentum, weight_decay, schedule, num_validation, train_subset, stop_after): the
    checks of every trainer with these fields (this module's, and ``ckd.train``'s students)."""
    check_positive(config, "epochs", "batch_size", "learning_rate")
    check_positive(config, "train_subset", "stop_after", allow_none=True)
    check_choice(config, "optimizer", OPTIMIZERS)
    check_choice(config, "schedule", SCHEDULES)
    if config.num_validation < 0:
        raise ConfigError(f"{flag('num_validation')} must be >= 0, got {config.num_validation}")
    if config.weight_decay < 0 or not 0 <= config.momentum < 1:
        raise ConfigError(f"{flag('weight_decay')} must be >= 0 and {flag('momentum')} in [0, 1)")


def check_settings(config) -> None:
    """Raise :class:`ConfigError` naming the flag of the first bad setting of a classifier config."""
    check_training(config)
    check_positive(config, "stats_images")
    if hasattr(config, "head"):  # commands whose architecture fixes the head (ckd.teacher) have no --head
        check_choice(config, "head", HEAD_KINDS)


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The penultimate activations ``(B, d)`` of images ``x`` in [0, 1]."""
    # getattr, not model.features: nn.Module types its attributes as Tensor | Module, which a call cannot take
    extract = getattr(model, "penultimate", None) or getattr(model, "features")  # noqa: B009
    return extract(x)


def head_weight(model: nn.Module) -> torch.Tensor:
    """The final layer's weight ``(C, d)``: every prior-source classifier names its final layer ``head``."""
    weight = model.get_submodule("head").weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(model).__name__}.head has no weight tensor")
    return weight


@torch.no_grad()
def features_of(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate activations ``(N, d)`` of uint8 images ``(N, ...)``, in eval mode, returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        penultimate(model, images[start : start + batch_size].to(device).float() / 255.0).float().cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, head_weight(model).shape[1])


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, accelerator=None, batch_size: int = 1000
) -> float:
    """Top-1 accuracy (eval mode) on uint8 images ``(N, ...)`` with labels ``(N,)``, sharded over processes.

    Args:
        model: the classifier.
        images, labels: the evaluation set.
        accelerator: with several processes each scores its share and the counts are summed (None: one process).
        batch_size: images per forward pass.
    """
    model.eval()
    device = next(model.parameters()).device
    rank, size = (0, 1) if accelerator is None else (accelerator.process_index, accelerator.num_processes)
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # (correct, seen) on this process
    for start in range(rank * batch_size, images.shape[0], size * batch_size):
        x = images[start : start + batch_size].to(device).float() / 255.0
        y = labels[start : start + batch_size].to(device)
        counts[0] += (model(x).argmax(dim=-1) == y).sum()
        counts[1] += y.shape[0]
    if size > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    return float(counts[0] / counts[1].clamp(min=1))


def head_statistics(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """kappa's MLE around the head's directions and the mean activation norm |a|, from clean images.

    Args:
        model: the trained classifier.
        images: ``(N, ...)`` uint8 clean images.
        labels: ``(N,)`` their classes.

    Returns:
        ``{"kappa_mle": float, "mean_activation_norm": float}``.
    """
    features = features_of(model, images)  # (N, d)
    weight = head_weight(model).detach().float().cpu()  # (C, d)
    kappa = VMFPrior.from_weight(weight, 1.0).fit_concentration(features, labels.cpu())
    return {"kappa_mle": float(kappa), "mean_activation_norm": float(features.norm(dim=1).mean())}


def head_statistics_of(checkpoint: dict) -> dict:
    """``{"kappa_mle", "mean_activation_norm"}`` stored in a classifier checkpoint (older key names accepted);
    a missing value is None."""
    kappa = checkpoint.get("kappa_mle", checkpoint.get("concentration_mle"))
    norm = checkpoint.get("mean_activation_norm", checkpoint.get("activation_norm"))
    return {
        "kappa_mle": None if kappa is None else float(kappa),
        "mean_activation_norm": None if norm is None else float(norm),
    }


def _optimizer(config, parameters) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    return torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def train_classifier(
    config, model: nn.Module, data, kind: str, augment: Callable | None = None, log=None, accelerator=None
) -> dict:
    """Train (or resume) a classifier on a run folder and write ``OUT/classifier.pt``.

    One epoch: the training images in :func:`common.run.epoch_order` (shared out over processes), a batch of
    ``batch_size / processes`` images per process and step, ``augment`` applied to each batch in [0, 1],
    cross-entropy, one optimizer step with the learning rate of ``config.schedule``.

    Args:
        config: the command's config, with the fields of :class:`ClassifierSettings`.
        model: the freshly built classifier (seeded by the caller with ``config.seed``).
        data: a ``common.data.ImageData`` (uint8 images).
        kind: the run's kind, e.g. "vae-classifier".
        augment: ``f(x (B, ...) in [0, 1]) -> x`` applied to training batches (None: none).
        log: progress lines (default: the accelerator's print).
        accelerator: an ``Accelerator`` (None: one is made with ``cpu=config.cpu``).

    Returns:
        ``{"checkpoint", "epochs", "validation_accuracy", "test_accuracy", "kappa_mle", "mean_activation_norm",
        "seconds", "stopped"}``; ``stopped`` is "epochs", "stop_after", "non-finite loss" or "already finished".
    """
    from accelerate import Accelerator

    check_settings(config)
    accelerator = accelerator or Accelerator(cpu=config.cpu)
    log = log or accelerator.print
    if config.batch_size % accelerator.num_processes:
        raise ConfigError(
            f"{flag('batch_size')} {config.batch_size} must divide by the {accelerator.num_processes} processes"
        )
    out = Path(config.out)
    x_train, y_train = data.x_train, data.y_train
    x_val = y_val = None
    if config.num_validation:
        if config.num_validation >= x_train.shape[0]:
            raise ConfigError(f"{flag('num_validation')} {config.num_validation} leaves no training images")
        x_val, y_val = x_train[-config.num_validation :], y_train[-config.num_validation :]
        x_train, y_train = x_train[: -config.num_validation], y_train[: -config.num_validation]
    if config.train_subset is not None:
        x_train, y_train = x_train[: config.train_subset], y_train[: config.train_subset]
    per_process = config.batch_size // accelerator.num_processes
    steps_per_epoch = x_train.shape[0] // accelerator.num_processes // per_process
    steps_per_epoch = max(steps_per_epoch, 1 if x_train.shape[0] >= accelerator.num_processes else 0)
    if steps_per_epoch == 0:
        raise ConfigError(f"{flag('batch_size')} {config.batch_size} exceeds the {x_train.shape[0]} training images")
    device = accelerator.device
    started = time.perf_counter()
    with RunFolder.open(
        out,
        config,
        kind,
        resume=config.resume,
        accelerator=accelerator,
        may_change=("epochs", "stats_images"),
        step_key="epoch",
    ) as run:
        optimizer = _optimizer(config, [p for p in model.parameters() if p.requires_grad])
        if run.checkpoint is not None:
            load_state(model, run.checkpoint["model"], out / "last.pt")
            load_state(optimizer, run.checkpoint["optimizer"], out / "last.pt")
        model, optimizer = accelerator.prepare(model.to(device), optimizer)
        raw = accelerator.unwrap_model(model)
        run.begin()
        run.restore_rng()
        stopped = "epochs"
        last_epoch = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
        if run.step >= config.epochs and (out / CHECKPOINT_NAME).is_file():
            log(f"{out}: already trained for {run.step} epochs; nothing to do")
            return {
                **_result(out / CHECKPOINT_NAME),
                "stopped": "already finished",
                "seconds": round(time.perf_counter() - started, 2),
            }
        for epoch in range(run.step + 1, last_epoch + 1):
            model.train()
            order = epoch_order(x_train.shape[0], config.seed, epoch)[
                accelerator.process_index :: accelerator.num_processes
            ]
            total = torch.zeros(2, dtype=torch.float64)
            for step in range(steps_per_epoch):
                factor = learning_rate_factor(
                    config.schedule,
                    (epoch - 1) * steps_per_epoch + step,
                    config.epochs * steps_per_epoch,
                    epoch,
                    config.milestones,
                )
                set_learning_rate(optimizer, config.learning_rate * factor)
                index = order[step * per_process : (step + 1) * per_process]
                x = x_train[index].to(device).float() / 255.0
                if augment is not None:
                    x = augment(x)
                loss = F.cross_entropy(model(x), y_train[index].to(device))
                if not all_finite(loss, accelerator):
                    log(
                        f"non-finite loss at epoch {epoch}, step {step}: stopping; the last checkpoint "
                        f"({out / 'last.pt'}, epoch {run.step}) is kept"
                    )
                    return {
                        "stopped": "non-finite loss",
                        "epochs": run.step,
                        "checkpoint": None,
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                total += torch.tensor([float(loss.detach()) * index.shape[0], index.shape[0]], dtype=torch.float64)
            record = {"train_loss": float(total[0] / total[1]), "learning_rate": optimizer.param_groups[0]["lr"]}
            if x_val is not None and y_val is not None:
                record["validation_accuracy"] = accuracy(raw, x_val, y_val, accelerator)
            run.save(epoch, model=raw, optimizer=optimizer, metrics=record)
            log(
                f"{kind} epoch {epoch}: train loss {record['train_loss']:.4f}"
                + (f", validation accuracy {record['validation_accuracy']:.4f}" if x_val is not None else "")
            )
        if run.step < config.epochs:
            stopped = "stop_after"
            return {
                "stopped": stopped,
                "epochs": run.step,
                "checkpoint": None,
                "seconds": round(time.perf_counter() - started, 2),
            }
        result = {
            "validation_accuracy": (
                accuracy(raw, x_val, y_val, accelerator) if x_val is not None and y_val is not None else None
            ),
            "test_accuracy": accuracy(raw, data.x_test, data.y_test, accelerator),
        }
        if accelerator.is_main_process:
            count = min(config.stats_images, data.x_train.shape[0])
            result.update(head_statistics(raw, data.x_train[:count], data.y_train[:count]))
            path = out / CHECKPOINT_NAME
            atomic_save(
                {
                    "format": 2,
                    "kind": kind,
                    "model": raw.state_dict(),
                    "config": run.config_dict(),
                    "num_classes": int(head_weight(raw).shape[0]),
                    "feature_dim": int(head_weight(raw).shape[1]),
                    "stats_images": count,
                    **result,
                },
                path,
            )
            run.log({"epoch": run.step, **result})
            log(
                f"{kind}: test accuracy {result['test_accuracy']:.4f}, kappa MLE {result['kappa_mle']:.2f}, "
                f"mean |a| {result['mean_activation_norm']:.3f} -> {path}"
            )
        accelerator.wait_for_everyone()
    return {**_result(out / CHECKPOINT_NAME), "stopped": stopped, "seconds": round(time.perf_counter() - started, 2)}


def _result(path: Path) -> dict:
    checkpoint = load_checkpoint(path, ("model",), what="classifier checkpoint")
    return {
        "checkpoint": str(path),
        "epochs": checkpoint.get("config", {}).get("epochs"),
        "validation_accuracy": checkpoint.get("validation_accuracy"),
        "test_accuracy": checkpoint.get("test_accuracy"),
        **head_statistics_of(checkpoint),
    }


def load_classifier_checkpoint(path: str | Path, build: Callable[[dict, dict], nn.Module], what: str) -> tuple:
    """Rebuild a classifier from ``classifier.pt`` (or a run folder holding it), in eval mode on the CPU.

    Args:
        path: the file or its run folder.
        build: ``f(config dict, checkpoint) -> model`` making the architecture the config describes.
        what: the file's kind for messages, e.g. "vae.classifier checkpoint".

    Returns:
        ``(model, checkpoint)``; an architecture that does not fit the weights is a CheckpointError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    checkpoint = load_checkpoint(path, ("model", "config"), what=what)
    model = build(checkpoint["config"], checkpoint)
    load_state(model, checkpoint["model"], path)
    return model.eval(), checkpoint
