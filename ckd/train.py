"""Train one student (or, through ``ckd.teacher``, one teacher) with the label, label-smoothing, KD, CKD or CKD+KD loss.

    python -m ckd.train --teacher runs/ckd-mnist/teacher --student mnist-conv-half --loss ckd \
        [--shift photometric:0.6 | --shift downsample:0.5] --dataset mnist --data data/mnist.npz --out runs/student

The shift (``ckd.shifts``) defines the student's domain: its training images (and the ``--validation`` images
held out from them) are shifted once with the run's seed; the teacher was trained on clean images and KD
queries it on the student's (shifted) batch. After the last epoch the student is scored twice: on the clean
test images (``test_accuracy``) and on the test images of its own domain (``domain_test_accuracy``: the same
shift drawn with the fixed :data:`TEST_SHIFT_SEED`, so every student of a shift sees the same test images);
with ``--validation N`` also on its N shifted held-out images (``validation_accuracy``).

CKD's targets are ``VMFPrior.class_affinity`` of the teacher's final layer (Eq. 7) at concentration kappa
(``--concentration``; default the teacher's maximum-likelihood kappa) with the sampled activations scaled to
``--activation-norm`` (default the teacher's mean |a|); ``ckd.teacher`` measured both on clean training images
and stored them in its checkpoint. The affinity is computed once with a fixed seed and stored with the run.
``label-smoothing`` puts ``--smoothing`` eps off the label, evenly; without ``--smoothing`` eps is the mean
off-diagonal mass of that same affinity (the control with CKD's amount of soft mass and none of its structure).

The run folder gets config.json, metrics.jsonl (one line per epoch, then the test accuracy), ``last.pt``
(model, optimizer, epoch, RNG state; written atomically every epoch) and ``model.pt`` (the final weights, the
architecture and the test accuracy: a checkpoint ``ckd.train --teacher`` and ``VMFPrior.from_checkpoint`` read).
``--resume`` continues from ``last.pt`` exactly; a different config is refused. Plain ``python`` runs on the
CPU; ``accelerate launch`` on GPUs.
"""
from __future__ import annotations

import inspect
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from common.cli import ArgumentParser, run_cli, set_threads
from common.runs import (METRICS_FILE, MetricsLog, add_dataclass_arguments, atomic_save, check_same_config,
                         apply_preset, config_from_args, epoch_order, load_checkpoint, open_last_checkpoint,
                         rng_state, set_rng_state, write_config)
from ckd.losses import (KD_TEMPERATURE, KD_WEIGHT, LOSSES, NEEDS_AFFINITY, NEEDS_TEACHER_LOGITS, distillation_loss,
                        off_diagonal_mass)
from ckd.models import build_model, check_architecture, feature_dim_of
from ckd.shifts import apply_shift, parse_shift
from vmfprior import VMFPrior

__all__ = ["TrainConfig", "PRESETS", "train", "load_model", "load_dataset", "teacher_affinity", "accuracy",
           "features_of", "evaluate", "teacher_head_statistics", "NonFiniteLossError", "DATASETS", "MODEL_CHECKPOINT",
           "LAST_CHECKPOINT", "AFFINITY_SEED", "TEST_SHIFT_SEED"]

DATASETS = ("mnist", "cifar10", "cifar100")
MODEL_CHECKPOINT = "model.pt"
LAST_CHECKPOINT = "last.pt"
AFFINITY_SEED = 0
"""The Monte Carlo draws of the class affinity use this seed (the same targets for every student)."""
TEST_SHIFT_SEED = 1_000_000
"""Seeds the shift of the test images (domain scores, the teacher on shifted images); no student uses it."""
PRESETS = {
    # The CRD code base's CIFAR-100 protocol (Tian et al. 2020), which the paper's Table 2 numbers follow.
    "cifar": {"epochs": 240, "batch_size": 64, "optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9,
              "weight_decay": 5e-4, "schedule": "step", "milestones": (150, 180, 210), "augment": True},
}
"""Option sets chosen with ``--preset NAME`` (explicit options still win)."""


RESUME_MAY_CHANGE = ("resume", "stop_after", "progress", "cpu", "threads")
SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    """Settings of one student run (saved in config.json and every checkpoint)."""

    student: str = "mnist-conv-half"  # architecture: mnist-conv, mnist-conv-half, mnist-conv-W, wrn-D-K
    loss: str = "label"  # label, label-smoothing, kd, ckd or ckd+kd
    teacher: Optional[str] = None  # teacher run folder or model.pt (kd, ckd, ckd+kd; label-smoothing without eps)
    feature_dim: Optional[int] = None  # penultimate dimension d of an mnist-conv student (None: 64; WRNs: their own)
    shift: Optional[str] = None  # photometric:DEGREE or downsample:FACTOR on the training images (None: clean)
    dataset: str = "mnist"  # mnist, cifar10 or cifar100
    data: Optional[str] = None  # the dataset's .npz (None: download with torchvision)
    out: str = "runs/ckd-student"  # run folder
    concentration: Optional[float] = None  # kappa of the CKD affinity (None: the teacher's MLE)
    activation_norm: Optional[float] = None  # |a| of the sampled activations (None: the teacher's mean feature norm)
    smoothing: Optional[float] = None  # label smoothing's eps (None: the CKD affinity's mean off-diagonal mass)
    affinity_samples: int = 10_000  # Monte Carlo samples per class for the affinity (Eq. 7)
    temperature: float = KD_TEMPERATURE  # KD temperature T
    kd_weight: float = KD_WEIGHT  # KD's weight alpha on the soft term
    epochs: int = 5  # training epochs
    batch_size: int = 128  # global batch size
    optimizer: str = "adam"  # adam or sgd (nesterov momentum)
    learning_rate: float = 1e-3  # initial step size
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # L2 weight decay
    schedule: str = "constant"  # constant, cosine (per step, to 0) or step (x0.1 at each milestone epoch)
    milestones: tuple[int, ...] = ()  # epochs after which the step schedule multiplies the rate by 0.1
    augment: bool = False  # random crop (pad 4) and horizontal flip per batch (CIFAR)
    validation: int = 0  # hold out the last N training images (shifted like the rest) and score the student on them
    train_subset: Optional[int] = None  # use only the first N training images (after the validation hold-out)
    seed: int = 0  # seeds initialization, shuffling, augmentation and the shift
    resume: bool = False  # continue OUT/last.pt exactly; refuses a different config
    stop_after: Optional[int] = None  # stop after this epoch (continue later with --resume)
    progress: bool = True  # tqdm bar
    cpu: bool = False  # force the CPU even when a GPU is present
    threads: Optional[int] = None  # torch CPU threads (None: torch's default; 1 suits a busy shared CPU)


def check_config(config) -> None:
    """Raise ``ValueError`` naming the first bad setting of a :class:`TrainConfig` (or a teacher's config)."""
    loss = getattr(config, "loss", "label")
    if loss not in LOSSES:
        raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if config.dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {config.dataset!r}")
    teacher = getattr(config, "teacher", None)
    smoothing = getattr(config, "smoothing", None)
    if loss not in ("label", "label-smoothing") and not teacher:
        raise ValueError(f"--loss {loss} needs --teacher (a ckd.teacher run folder or its model.pt)")
    if loss == "label-smoothing" and smoothing is None and not teacher:
        raise ValueError("--loss label-smoothing needs --smoothing EPS, or --teacher to match eps to its CKD affinity")
    if smoothing is not None and not (math.isfinite(smoothing) and 0 <= smoothing < 1):
        raise ValueError(f"--smoothing must lie in [0, 1), got {smoothing}")
    if getattr(config, "validation", 0) < 0:
        raise ValueError(f"--validation must be >= 0, got {config.validation}")
    if teacher and not Path(teacher).exists():
        raise ValueError(f"--teacher {teacher!r} does not exist")
    parse_shift(getattr(config, "shift", None))
    for name in ("epochs", "batch_size", "affinity_samples"):
        if getattr(config, name, 1) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(config, name)}")
    for name in ("learning_rate", "temperature"):
        if not getattr(config, name, 1.0) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")
    for name in ("concentration", "activation_norm"):
        value = getattr(config, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if not 0 <= getattr(config, "kd_weight", 0.0) <= 1:
        raise ValueError(f"--kd-weight must lie in [0, 1], got {config.kd_weight}")
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {config.schedule!r}")
    if config.weight_decay < 0 or not 0 <= config.momentum < 1:
        raise ValueError("--weight-decay must be >= 0 and --momentum in [0, 1)")
    for name in ("train_subset", "stop_after"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(config, name)}")


def load_dataset(name: str, path: str | None):
    """The ImageData of ``name`` ("mnist", "cifar10", "cifar100") from ``path`` (.npz) or a torchvision download."""
    from common import data

    loaders = {"mnist": data.load_mnist, "cifar10": data.load_cifar10, "cifar100": data.load_cifar100}
    return loaders[name](path)


def _resolve_model_path(path: str) -> Path:
    """A run folder means its model.pt."""
    path = Path(path)
    return path / MODEL_CHECKPOINT if path.is_dir() else path


def load_model(path: str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a model saved by ``ckd.train`` or ``ckd.teacher`` (eval mode).

    Args:
        path: a run folder or its model.pt.
        device: where to put the model.

    Returns:
        ``(model, checkpoint)``; the checkpoint dict holds "architecture", "num_classes", "image_shape",
        "dataset", "test_accuracy" and, for a teacher, "kappa_mle" and "mean_activation_norm" (older teachers:
        "concentration_mle" and "activation_norm"; :func:`teacher_head_statistics` reads either).
    """
    path = _resolve_model_path(path)
    what = "ckd model checkpoint (model.pt of ckd.teacher or ckd.train)"
    checkpoint = load_checkpoint(path, ("model", "architecture", "num_classes", "image_shape"), what=what)
    state = checkpoint["model"]
    feature_dim = feature_dim_of(state) if str(checkpoint["architecture"]).startswith("mnist") else None
    model = build_model(checkpoint["architecture"], int(checkpoint["num_classes"]), tuple(checkpoint["image_shape"]),
                        feature_dim)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: the weights do not fit a {checkpoint['architecture']} "
                         f"({str(error).splitlines()[0]})") from None
    return model.to(device).eval(), checkpoint


def teacher_head_statistics(checkpoint: dict) -> tuple[float | None, float | None]:
    """``(kappa_mle, mean_activation_norm)`` stored in a teacher's model.pt (None where absent)."""
    kappa = checkpoint.get("kappa_mle", checkpoint.get("concentration_mle"))
    norm = checkpoint.get("mean_activation_norm", checkpoint.get("activation_norm"))
    return (None if kappa is None else float(kappa)), (None if norm is None else float(norm))


@torch.no_grad()
def features_of(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate activations (N, d) of uint8 images (N, C, H, W), in eval mode, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [model.features(images[start:start + batch_size].to(device).float() / 255.0).cpu()
              for start in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, getattr(model, "feature_dim", 0))


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on uint8 images (N, C, H, W) with labels (N,)."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start:start + batch_size].to(device).float() / 255.0)
        correct += int((logits.argmax(dim=1).cpu() == labels[start:start + batch_size]).sum())
    return correct / max(images.shape[0], 1)


def teacher_affinity(teacher: torch.nn.Module, concentration: float, activation_norm: float,
                     num_samples: int, seed: int = AFFINITY_SEED) -> torch.Tensor:
    """The class affinity p_T(k | i) of the teacher's final layer (Eq. 7), drawn with a fixed seed.

    Args:
        teacher: a model with a linear ``head``.
        concentration: kappa of the class-conditional vMF.
        activation_norm: norm of the sampled activations.
        num_samples: Monte Carlo samples per class.
        seed: seeds the draws (the global RNG is restored afterwards).

    Returns:
        (C, C) float32 on the CPU, rows summing to 1.
    """
    prior = VMFPrior.from_linear(teacher.head.cpu(), float(concentration))
    # The library's argument is num_samples (formerly n_samples); pass the name this installed version takes.
    name = "num_samples" if "num_samples" in inspect.signature(prior.class_affinity).parameters else "n_samples"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        affinity = prior.class_affinity(**{name: int(num_samples)}, activation_norm=float(activation_norm))
    return affinity.float()


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; the run stops with its last checkpoint intact."""


def evaluate(model: torch.nn.Module, data, shift) -> dict:
    """The student's two test scores: clean test images, and test images of its own domain.

    Args:
        model: the trained model (eval mode is set by :func:`accuracy`).
        data: the ImageData (its clean ``x_test``, ``y_test``).
        shift: ``parse_shift``'s result for the student's domain, or None (then both scores are the same).

    Returns:
        {"test_accuracy": clean, "domain_test_accuracy": on ``apply_shift(x_test, shift, TEST_SHIFT_SEED)``}.
    """
    clean = accuracy(model, data.x_test, data.y_test)
    if shift is None:
        return {"test_accuracy": clean, "domain_test_accuracy": clean}
    shifted = apply_shift(data.x_test, shift, seed=TEST_SHIFT_SEED)
    return {"test_accuracy": clean, "domain_test_accuracy": accuracy(model, shifted, data.y_test)}


def _learning_rate(config, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The step size at 0-based ``step`` of 1-based ``epoch``."""
    if config.schedule == "cosine":
        done = ((epoch - 1) * steps_per_epoch + step) / (config.epochs * steps_per_epoch)
        return 0.5 * config.learning_rate * (1 + math.cos(math.pi * done))
    if config.schedule == "step":
        return config.learning_rate * 0.1 ** sum(epoch > milestone for milestone in config.milestones)
    return config.learning_rate


def _prepare_teacher(config, device) -> tuple[torch.nn.Module | None, torch.Tensor | None, dict]:
    """Load the teacher and compute the soft targets; returns (teacher or None, affinity or None, facts).

    The facts (recorded in metrics.jsonl and model.pt) hold the teacher's kappa_mle and mean |a|, the kappa and
    norm the affinity used, its mean off-diagonal mass, and label smoothing's eps.
    """
    loss = getattr(config, "loss", "label")
    smoothing = getattr(config, "smoothing", None)
    if loss == "label" or (loss == "label-smoothing" and smoothing is not None):
        return None, None, ({"smoothing": float(smoothing)} if loss == "label-smoothing" else {})
    teacher, checkpoint = load_model(config.teacher)
    if checkpoint.get("dataset") not in (None, config.dataset):
        raise ValueError(f"--teacher {config.teacher!r} was trained on {checkpoint['dataset']}, "
                         f"but --dataset is {config.dataset}")
    kappa_mle, mean_norm = teacher_head_statistics(checkpoint)
    facts = {"teacher_kappa_mle": kappa_mle, "teacher_mean_activation_norm": mean_norm}
    affinity = None
    if loss in NEEDS_AFFINITY or loss == "label-smoothing":
        kappa = config.concentration if config.concentration is not None else kappa_mle
        norm = config.activation_norm if config.activation_norm is not None else mean_norm
        if kappa is None or norm is None:
            raise ValueError(f"--teacher {config.teacher!r} stores no kappa_mle / mean_activation_norm "
                             "(not a ckd.teacher model): pass --concentration and --activation-norm")
        affinity = teacher_affinity(teacher, kappa, norm, config.affinity_samples)
        facts.update(concentration=float(kappa), activation_norm=float(norm),
                     affinity_off_diagonal_mass=off_diagonal_mass(affinity))
        if loss == "label-smoothing":
            facts["smoothing"] = facts["affinity_off_diagonal_mass"]
            affinity = None  # only its off-diagonal mass is used
    teacher = teacher.to(device) if loss in NEEDS_TEACHER_LOGITS else None
    return teacher, affinity, facts


def train(config, data=None, log=None, kind: str = "ckd-student", finish=None) -> dict:
    """Train (or resume) one run; see the module docstring.

    Args:
        config: a :class:`TrainConfig` (or ``ckd.teacher.TeacherConfig``: its ``architecture`` is the model).
        data: an already loaded ``ImageData`` (None: load ``config.data``).
        log: function for progress lines (default: ``accelerator.print``).
        kind: the run's kind in config.json.
        finish: optional ``finish(model, clean_train_images, train_labels) -> dict`` of numbers that join
            model.pt and the result (the teacher's statistics).

    Returns:
        dict with ``test_accuracy`` (clean), ``domain_test_accuracy`` (the student's shift), ``validation_accuracy``
        (None without ``--validation``), ``epochs``, ``seconds`` (this invocation), ``run_dir``, the facts of the
        soft targets, and, when the run stopped early on ``--stop-after``, ``stopped: "stop_after"``.
    """
    from accelerate import Accelerator

    check_config(config)
    architecture = getattr(config, "student", None) or config.architecture
    accelerator = Accelerator(cpu=config.cpu)
    log = log or accelerator.print
    out = Path(config.out)
    last_path = out / LAST_CHECKPOINT
    checkpoint = open_last_checkpoint(last_path, config.resume, ("model", "optimizer", "config", "epoch", "rng"),
                                      what="ckd checkpoint")
    if checkpoint is not None:
        check_same_config(checkpoint["config"], asdict(config), ignore=RESUME_MAY_CHANGE)

    data = data if data is not None else load_dataset(config.dataset, config.data)
    check_architecture(architecture, data.image_shape)
    shift = parse_shift(getattr(config, "shift", None))
    x_train, y_train = data.x_train, data.y_train
    validation = getattr(config, "validation", 0)
    if validation >= x_train.shape[0]:
        raise ValueError(f"--validation {validation} leaves no training images (the data has {x_train.shape[0]})")
    x_val, y_val = x_train[x_train.shape[0] - validation:], y_train[y_train.shape[0] - validation:]
    x_train, y_train = x_train[:x_train.shape[0] - validation], y_train[:y_train.shape[0] - validation]
    if config.train_subset is not None:
        x_train, y_train = x_train[:config.train_subset], y_train[:config.train_subset]
    clean_train, clean_labels = x_train, y_train  # on the CPU, for the teacher's statistics
    x_train = apply_shift(x_train, shift, seed=config.seed)
    x_val = apply_shift(x_val, shift, seed=config.seed)  # held out from the student's own domain
    device = accelerator.device
    # uint8 images live on the device (150 MB for CIFAR): no host-to-device copy per step.
    x_train, y_train = x_train.to(device), y_train.to(device)

    teacher, affinity, facts = _prepare_teacher(config, device)
    if checkpoint is not None and "affinity" in checkpoint:
        affinity = checkpoint["affinity"]  # exactly the targets the run started with
    if affinity is not None:
        affinity = affinity.to(device)

    torch.manual_seed(config.seed)
    model = build_model(architecture, data.num_classes, data.image_shape, getattr(config, "feature_dim", None))
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    epoch_done = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        epoch_done = int(checkpoint["epoch"])
    else:
        write_config(out, config, kind=kind)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    if checkpoint is not None:
        set_rng_state(checkpoint["rng"])
    metrics = MetricsLog(out / METRICS_FILE) if accelerator.is_main_process else None
    if metrics and checkpoint is None and facts:
        metrics.write({"event": "soft targets", **facts})
    started = time.perf_counter()
    if epoch_done >= config.epochs and (out / MODEL_CHECKPOINT).is_file():
        final = load_checkpoint(out / MODEL_CHECKPOINT, ("test_accuracy",), what="ckd model checkpoint")
        log(f"{out}: already finished ({epoch_done} epochs); test accuracy {final['test_accuracy']:.4f}")
        return {"test_accuracy": final["test_accuracy"], "domain_test_accuracy": final.get("domain_test_accuracy"),
                "validation_accuracy": final.get("validation_accuracy"), "epochs": epoch_done, "seconds": 0.0,
                "run_dir": str(out), **facts}

    per_process_batch = max(1, config.batch_size // accelerator.num_processes)
    num_local = len(range(accelerator.process_index, x_train.shape[0], accelerator.num_processes))
    steps_per_epoch = max(1, math.ceil(num_local / per_process_batch))
    last_epoch = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
    loss_name = getattr(config, "loss", "label")
    smoothing = facts.get("smoothing")
    from common.wrn import augment as crop_and_flip

    for epoch in range(epoch_done + 1, last_epoch + 1):
        model.train()
        order = epoch_order(x_train.shape[0], config.seed, epoch)[accelerator.process_index::accelerator.num_processes]
        total, seen = 0.0, 0
        epoch_started = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"{out.name} epoch {epoch}/{config.epochs}", leave=False,
                   disable=not (config.progress and accelerator.is_local_main_process))
        for step in bar:
            index = order[step * per_process_batch:(step + 1) * per_process_batch]
            index = index.to(device)
            x = x_train[index].float() / 255.0
            y = y_train[index]
            if config.augment:
                x = crop_and_flip(x)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, epoch, step, steps_per_epoch)
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)  # the teacher sees the student's (shifted, augmented) images
            logits = model(x)
            loss = distillation_loss(loss_name, logits, y, teacher_logits, affinity,
                                     getattr(config, "temperature", KD_TEMPERATURE),
                                     getattr(config, "kd_weight", KD_WEIGHT), smoothing)
            # One flag summed over the processes, so that every process stops together (none waits in a collective).
            bad = accelerator.reduce((~torch.isfinite(loss.detach())).float().reshape(1), reduction="sum")
            if float(bad) > 0:
                bar.close()
                raise NonFiniteLossError(f"non-finite training loss at epoch {epoch}, step {step} of {out}; "
                                         f"{last_path} holds epoch {epoch - 1} (lower --learning-rate, then --resume)")
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            total += float(loss.detach()) * index.shape[0]
            seen += index.shape[0]
        bar.close()
        record = {"epoch": epoch, "train_loss": total / max(seen, 1), "lr": optimizer.param_groups[0]["lr"],
                  "epoch_seconds": round(time.perf_counter() - epoch_started, 3)}
        if accelerator.is_main_process:
            payload = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                       "config": asdict(config), "rng": rng_state()}
            if affinity is not None:
                payload["affinity"] = affinity.cpu()
            atomic_save(payload, last_path)
            metrics.write(record)
        log(f"{out.name} epoch {epoch}/{config.epochs}: train loss {record['train_loss']:.4f}, "
            f"{record['epoch_seconds']:.1f}s")
        accelerator.wait_for_everyone()
    if last_epoch < config.epochs:
        return {"test_accuracy": None, "epochs": last_epoch, "seconds": round(time.perf_counter() - started, 2),
                "run_dir": str(out), "stopped": "stop_after"}

    raw_model.eval()
    scores = evaluate(raw_model, data, shift)
    scores["validation_accuracy"] = accuracy(raw_model, x_val, y_val) if validation else None
    extra = finish(raw_model, clean_train, clean_labels) if finish is not None else {}
    result = {**scores, "epochs": config.epochs, "seconds": round(time.perf_counter() - started, 2),
              "run_dir": str(out)}
    if accelerator.is_main_process:
        final = {"model": raw_model.state_dict(), "architecture": architecture, "num_classes": data.num_classes,
                 "image_shape": list(data.image_shape), "dataset": config.dataset,
                 "shift": getattr(config, "shift", None),
                 "feature_dim": int(raw_model.feature_dim), **scores, "config": asdict(config), **facts, **extra}
        if affinity is not None:
            final["affinity"] = affinity.cpu()
        atomic_save(final, out / MODEL_CHECKPOINT)
        metrics.write({"event": "test", **scores, **facts, **extra})
    log(f"{out.name}: clean test accuracy {scores['test_accuracy']:.4f}, own domain "
        f"{scores['domain_test_accuracy']:.4f}"
        + "".join(f", {key} {value:.4g}" for key, value in extra.items() if isinstance(value, float)))
    accelerator.end_training()
    return {**result, **facts, **extra}


def parse_config(config_cls, prog: str, description: str, argv=None):
    """A ``config_cls`` from the command line: ``--preset`` sets defaults, explicit flags override them."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="cifar: 240 epochs, SGD 0.05, x0.1 at 150/180/210, batch 64, wd 5e-4, crop+flip")
    add_dataclass_arguments(parser, config_cls)
    apply_preset(parser, PRESETS, argv)
    config = config_from_args(config_cls, parser.parse_args(argv))
    set_threads(config.threads)
    return config


def main(argv=None) -> dict:
    """Command-line entry point."""
    return train(parse_config(TrainConfig, "python -m ckd.train", __doc__.split("\n\n")[0], argv))


if __name__ == "__main__":
    sys.exit(run_cli(main))
