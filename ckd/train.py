"""Train one student with the label, label-smoothing, KD, CKD or CKD+KD loss.

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

The run folder (:mod:`common.run`) gets config.json, metrics.jsonl (one line per epoch, then the scores),
``last.pt`` (model, optimizer, epoch, RNG state and the soft targets; written atomically every epoch) and
``model.pt`` (the final weights, the architecture, the scores and the soft targets' facts: a checkpoint
``ckd.figures``, ``ckd.analysis`` and ``VMFPrior.from_checkpoint`` read). ``--resume`` continues from ``last.pt``
exactly; a different config is refused. A non-finite loss stops every process with one ``error:`` line and keeps
the last checkpoint. Plain ``python`` runs on the CPU; ``accelerate launch`` on GPUs.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from ckd.config import PRESETS, TrainConfig
    from common.config import answer_early

    answer_early(TrainConfig, prog="python -m ckd.train", description=__doc__.split("\n\n")[0], presets=PRESETS)

import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ckd.config import DATASETS, LOSSES, PRESETS, TrainConfig
from ckd.losses import NEEDS_AFFINITY, NEEDS_TEACHER_LOGITS, distillation_loss, off_diagonal_mass
from ckd.models import build_model, check_architecture, feature_dim_of
from ckd.shifts import apply_shift, parse_shift
from common.classifier import accuracy as classifier_accuracy
from common.classifier import check_training, features_of, head_statistics_of
from common.cli import run_cli, set_threads
from common.config import ConfigError, check_choice, check_positive, flag, parse_config
from common.run import (
    RunFolder,
    all_finite,
    atomic_save,
    atomic_write_text,
    epoch_order,
    learning_rate_factor,
    load_checkpoint,
    load_state,
    read_json,
    report_non_finite,
    set_learning_rate,
)
from vmfprior import VMFPrior

__all__ = [
    "TrainConfig",
    "PRESETS",
    "train",
    "load_model",
    "load_dataset",
    "teacher_affinity",
    "accuracy",
    "features_of",
    "evaluate",
    "teacher_head_statistics",
    "read_student_result",
    "DATASETS",
    "IMAGE_SHAPES",
    "MODEL_CHECKPOINT",
    "RESULT_FILE",
    "TEACHER_CHECKPOINT",
    "AFFINITY_SEED",
    "TEST_SHIFT_SEED",
]

IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
MODEL_CHECKPOINT = "model.pt"
RESULT_FILE = "result.json"
"""A finished student's scores and soft-target facts, small enough to keep under version control without its
model.pt: ``ckd.experiment`` counts a folder holding either as finished."""
"""A student's final checkpoint."""
TEACHER_CHECKPOINT = "classifier.pt"
"""A teacher's final checkpoint (``common.classifier``)."""
AFFINITY_SEED = 0
"""The Monte Carlo draws of the class affinity use this seed (the same targets for every student)."""
TEST_SHIFT_SEED = 1_000_000
"""Seeds the shift of the test images (domain scores, the teacher on shifted images); no student uses it."""


def check_config(config: TrainConfig) -> None:
    """Raise ``ConfigError`` naming the flag of the first bad setting."""
    check_choice(config, "loss", LOSSES)
    check_choice(config, "dataset", DATASETS)
    check_training(config)  # epochs, batch size, optimizer, schedule, validation: as for every classifier
    if config.loss not in ("label", "label-smoothing") and not config.teacher:
        raise ConfigError(f"--loss {config.loss} needs --teacher (a ckd.teacher run folder or its classifier.pt)")
    if config.loss == "label-smoothing" and config.smoothing is None and not config.teacher:
        raise ConfigError("--loss label-smoothing needs --smoothing EPS, or --teacher to match eps to its CKD affinity")
    if config.teacher and not Path(config.teacher).exists():
        raise ConfigError(f"--teacher {config.teacher!r} does not exist")
    parse_shift(config.shift)
    check_positive(config, "affinity_samples", "temperature")
    check_positive(config, "concentration", "activation_norm", allow_none=True)
    for name in ("concentration", "activation_norm"):
        if getattr(config, name) is not None and not math.isfinite(getattr(config, name)):
            raise ConfigError(f"{flag(name)} must be a positive number, got {getattr(config, name)}")
    if config.smoothing is not None and not (math.isfinite(config.smoothing) and 0 <= config.smoothing < 1):
        raise ConfigError(f"--smoothing must lie in [0, 1), got {config.smoothing}")
    if not 0 <= config.kd_weight <= 1:
        raise ConfigError(f"--kd-weight must lie in [0, 1], got {config.kd_weight}")


def load_dataset(name: str, path: str | None):
    """The ImageData of ``name`` ("mnist", "cifar10", "cifar100") from ``path`` (.npz) or a torchvision download."""
    from common import data

    loaders = {"mnist": data.load_mnist, "cifar10": data.load_cifar10, "cifar100": data.load_cifar100}
    return loaders[name](path)


def _resolve_model_path(path: str) -> Path:
    """A run folder means its model.pt (a student) or its classifier.pt (a teacher)."""
    path = Path(path)
    if path.is_dir():
        return path / MODEL_CHECKPOINT if (path / MODEL_CHECKPOINT).is_file() else path / TEACHER_CHECKPOINT
    return path


def load_model(path: str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a model saved by ``ckd.train`` or ``ckd.teacher`` (eval mode).

    Args:
        path: a run folder, its model.pt (a student) or its classifier.pt (a ckd.teacher).
        device: where to put the model.

    Returns:
        ``(model, checkpoint)``; the checkpoint dict holds "architecture", "num_classes", "image_shape",
        "dataset", "test_accuracy" and, for a teacher, "kappa_mle" and "mean_activation_norm" (older teachers:
        "concentration_mle" and "activation_norm"; :func:`teacher_head_statistics` reads either).
    """
    path = _resolve_model_path(path)
    what = "ckd model checkpoint (classifier.pt of ckd.teacher or model.pt of ckd.train)"
    checkpoint = load_checkpoint(path, ("model",), what=what)
    if "architecture" not in checkpoint:  # a ckd.teacher classifier.pt: the architecture is in its config
        config = checkpoint.get("config") or {}
        if "architecture" not in config or config.get("dataset") not in IMAGE_SHAPES:
            raise ValueError(f"{str(path)!r} is not a {what}: it names no architecture and dataset")
        checkpoint = {
            **checkpoint,
            "architecture": config["architecture"],
            "dataset": config["dataset"],
            "image_shape": list(IMAGE_SHAPES[config["dataset"]]),
        }
    for key in ("num_classes", "image_shape"):
        if key not in checkpoint:
            raise ValueError(f"{str(path)!r} is not a {what}: it lacks {key!r}")
    state = checkpoint["model"]
    feature_dim = feature_dim_of(state) if str(checkpoint["architecture"]).startswith("mnist") else None
    model = build_model(
        checkpoint["architecture"], int(checkpoint["num_classes"]), tuple(checkpoint["image_shape"]), feature_dim
    )
    load_state(model, state, path)
    return model.to(device).eval(), checkpoint


def teacher_head_statistics(checkpoint: dict) -> tuple[float | None, float | None]:
    """``(kappa_mle, mean_activation_norm)`` stored in a teacher's checkpoint (None where absent)."""
    statistics = head_statistics_of(checkpoint)
    return statistics["kappa_mle"], statistics["mean_activation_norm"]


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy (eval mode) on uint8 images ``(N, C, H, W)`` with labels ``(N,)``; one process."""
    return classifier_accuracy(model, images, labels, batch_size=batch_size)


def logits_of(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``(N, C)`` logits (eval mode, no gradient) of uint8 images ``(N, C, H, W)``, on the images' device."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch_size].float() / 255.0) for i in range(0, len(images), batch_size)])


def teacher_affinity(
    teacher: torch.nn.Module, concentration: float, activation_norm: float, num_samples: int, seed: int = AFFINITY_SEED
) -> torch.Tensor:
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        affinity = prior.class_affinity(int(num_samples), activation_norm=float(activation_norm))
    return affinity.float()


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


def _prepare_teacher(config: TrainConfig, device) -> tuple[torch.nn.Module | None, torch.Tensor | None, dict]:
    """Load the teacher and compute the soft targets; returns (teacher or None, affinity or None, facts).

    The facts (recorded in last.pt, model.pt and the result) hold the teacher's kappa_mle and mean |a|, the kappa
    and norm the affinity used, its mean off-diagonal mass, and label smoothing's eps.
    """
    loss = config.loss
    if loss == "label" or (loss == "label-smoothing" and config.smoothing is not None):
        return None, None, ({"smoothing": float(config.smoothing)} if loss == "label-smoothing" else {})
    teacher, checkpoint = load_model(config.teacher)
    if checkpoint.get("dataset") not in (None, config.dataset):
        raise ConfigError(
            f"--teacher {config.teacher!r} was trained on {checkpoint['dataset']}, but --dataset is {config.dataset}"
        )
    kappa_mle, mean_norm = teacher_head_statistics(checkpoint)
    facts = {"teacher_kappa_mle": kappa_mle, "teacher_mean_activation_norm": mean_norm}
    affinity = None
    if loss in NEEDS_AFFINITY or loss == "label-smoothing":
        kappa = config.concentration if config.concentration is not None else kappa_mle
        norm = config.activation_norm if config.activation_norm is not None else mean_norm
        if kappa is None or norm is None:
            raise ConfigError(
                f"--teacher {config.teacher!r} stores no kappa_mle / mean_activation_norm "
                "(not a ckd.teacher model): pass --concentration and --activation-norm"
            )
        affinity = teacher_affinity(teacher, kappa, norm, config.affinity_samples)
        facts.update(
            concentration=float(kappa),
            activation_norm=float(norm),
            affinity_off_diagonal_mass=off_diagonal_mass(affinity),
        )
        if loss == "label-smoothing":
            facts["smoothing"] = facts["affinity_off_diagonal_mass"]
            affinity = None  # only its off-diagonal mass is used
    teacher = teacher.to(device) if loss in NEEDS_TEACHER_LOGITS else None
    return teacher, affinity, facts


RESULT_KEYS = (
    "test_accuracy",
    "domain_test_accuracy",
    "validation_accuracy",
    "teacher_kappa_mle",
    "teacher_mean_activation_norm",
    "concentration",
    "activation_norm",
    "affinity_off_diagonal_mass",
    "smoothing",
)
"""What a finished student's ``result.json`` holds (and ``model.pt`` besides its weights)."""


def _result_of(final: dict) -> dict:
    return {key: final.get(key) for key in RESULT_KEYS if key in final or key.endswith("accuracy")}


def read_student_result(path: Path) -> dict:
    """The result of a finished run: its ``result.json``, or the same entries read from its ``model.pt``.

    Args:
        path: the run folder, or its model.pt. A folder without result.json (a run finished before it was
            written) gets one, from model.pt.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / RESULT_FILE).is_file():
        return read_json(folder / RESULT_FILE)
    result = _result_of(load_checkpoint(folder / MODEL_CHECKPOINT, ("test_accuracy",), what="ckd student model.pt"))
    atomic_write_text(folder / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    return result


def train(config: TrainConfig, data=None, log=None) -> dict:
    """Train (or resume) one student; see the module docstring.

    Args:
        config: the run's settings.
        data: an already loaded ``ImageData`` (None: load ``config.data``).
        log: function for progress lines (default: ``accelerator.print``).

    Returns:
        dict with ``test_accuracy`` (clean), ``domain_test_accuracy`` (the student's shift), ``validation_accuracy``
        (None without ``--num-validation``), ``epochs``, ``seconds`` (this invocation), ``run_dir``, the facts of
        the soft targets, and ``stopped``: "epochs", "stop_after", "non-finite loss" or "already finished".
    """
    from accelerate import Accelerator

    check_config(config)
    accelerator = Accelerator(cpu=config.cpu)
    log = log or accelerator.print
    out = Path(config.out)
    if config.batch_size % accelerator.num_processes:
        raise ConfigError(f"--batch-size {config.batch_size} must divide by the {accelerator.num_processes} processes")
    data = data if data is not None else load_dataset(config.dataset, config.data)
    check_architecture(config.student, data.image_shape)
    shift = parse_shift(config.shift)
    x_train, y_train = data.x_train, data.y_train
    held_out = config.num_validation
    if held_out >= x_train.shape[0]:
        raise ConfigError(f"--num-validation {held_out} leaves no training images (the data has {x_train.shape[0]})")
    x_val, y_val = x_train[x_train.shape[0] - held_out :], y_train[y_train.shape[0] - held_out :]
    x_train, y_train = x_train[: x_train.shape[0] - held_out], y_train[: y_train.shape[0] - held_out]
    if config.train_subset is not None:
        x_train, y_train = x_train[: config.train_subset], y_train[: config.train_subset]
    x_train = apply_shift(x_train, shift, seed=config.seed)
    x_val = apply_shift(x_val, shift, seed=config.seed)  # held out from the student's own domain
    device = accelerator.device
    # uint8 images live on the device (150 MB for CIFAR): no host-to-device copy per step.
    x_train, y_train = x_train.to(device), y_train.to(device)
    teacher, affinity, facts = _prepare_teacher(config, device)
    # Without augmentation the training images are fixed (shifted once): the KD teacher's logits on them are
    # computed once instead of on every batch. The same numbers up to float rounding, at a fraction of the cost.
    teacher_train_logits = logits_of(teacher, x_train) if teacher is not None and not config.augment else None
    torch.manual_seed(config.seed)
    model = build_model(config.student, data.num_classes, data.image_shape, config.feature_dim)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    started = time.perf_counter()
    with RunFolder.open(
        out,
        config,
        "ckd-student",
        resume=config.resume,
        accelerator=accelerator,
        may_change=("epochs",),
        step_key="epoch",
    ) as run:
        if run.checkpoint is not None:
            load_state(model, run.checkpoint["model"], out / "last.pt")
            load_state(optimizer, run.checkpoint["optimizer"], out / "last.pt")
            if "affinity" in run.checkpoint:
                affinity = run.checkpoint["affinity"]  # exactly the targets the run started with
        if affinity is not None:
            affinity = affinity.to(device)
        model, optimizer = accelerator.prepare(model, optimizer)
        raw_model = accelerator.unwrap_model(model)
        run.begin()
        run.restore_rng()
        if run.step >= config.epochs and (out / MODEL_CHECKPOINT).is_file():
            log(f"{out}: already finished ({run.step} epochs)")
            return {
                **read_student_result(out / MODEL_CHECKPOINT),
                "epochs": run.step,
                "seconds": 0.0,
                "run_dir": str(out),
                "stopped": "already finished",
            }
        per_process = config.batch_size // accelerator.num_processes
        num_local = len(range(accelerator.process_index, x_train.shape[0], accelerator.num_processes))
        steps_per_epoch = max(1, math.ceil(num_local / per_process))
        last_epoch = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
        from common.wrn import augment as crop_and_flip

        for epoch in range(run.step + 1, last_epoch + 1):
            model.train()
            order = epoch_order(x_train.shape[0], config.seed, epoch)
            order = order[accelerator.process_index :: accelerator.num_processes]
            total, seen = 0.0, 0
            epoch_started = time.perf_counter()
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"{out.name} epoch {epoch}/{config.epochs}",
                leave=False,
                disable=not (config.progress and accelerator.is_local_main_process),
            )
            for step in bar:
                index = order[step * per_process : (step + 1) * per_process].to(device)
                x = x_train[index].float() / 255.0
                y = y_train[index]
                if config.augment:
                    x = crop_and_flip(x)
                factor = learning_rate_factor(
                    config.schedule,
                    (epoch - 1) * steps_per_epoch + step,
                    config.epochs * steps_per_epoch,
                    epoch,
                    config.milestones,
                )
                set_learning_rate(optimizer, config.learning_rate * factor)
                teacher_logits = None
                if teacher_train_logits is not None:
                    teacher_logits = teacher_train_logits[index]  # the teacher on the student's (shifted) batch
                elif teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(x)  # the teacher sees the student's (shifted, augmented) batch
                logits = model(x)
                loss = distillation_loss(
                    config.loss,
                    logits,
                    y,
                    teacher_logits,
                    affinity,
                    config.temperature,
                    config.kd_weight,
                    facts.get("smoothing"),
                )
                if not all_finite(loss, accelerator):  # one collective: every process stops here together
                    bar.close()
                    log(
                        f"non-finite loss at epoch {epoch}, step {step} of {out}; {out / 'last.pt'} holds epoch "
                        f"{run.step}"
                    )
                    return {
                        "stopped": "non-finite loss",
                        "epochs": run.step,
                        "epoch": epoch,
                        "step": step,
                        "run_dir": str(out),
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                total += float(loss.detach()) * index.shape[0]
                seen += index.shape[0]
            bar.close()
            record = {
                "train_loss": total / max(seen, 1),
                "learning_rate": optimizer.param_groups[0]["lr"],
                "epoch_seconds": round(time.perf_counter() - epoch_started, 3),
            }
            extra = {"facts": facts} | ({"affinity": affinity.cpu()} if affinity is not None else {})
            run.save(epoch, model=raw_model, optimizer=optimizer, metrics=record, extra=extra)
            log(
                f"{out.name} epoch {epoch}/{config.epochs}: train loss {record['train_loss']:.4f}, "
                f"{record['epoch_seconds']:.1f}s"
            )
        if run.step < config.epochs:
            return {
                "test_accuracy": None,
                "epochs": run.step,
                "seconds": round(time.perf_counter() - started, 2),
                "run_dir": str(out),
                "stopped": "stop_after",
            }
        raw_model.eval()
        scores = evaluate(raw_model, data, shift)
        scores["validation_accuracy"] = accuracy(raw_model, x_val, y_val) if held_out else None
        if accelerator.is_main_process:
            final = {
                "format": 2,
                "kind": "ckd-student",
                "model": raw_model.state_dict(),
                "architecture": config.student,
                "num_classes": data.num_classes,
                "image_shape": list(data.image_shape),
                "dataset": config.dataset,
                "shift": config.shift,
                "feature_dim": int(raw_model.feature_dim),
                **scores,
                "config": run.config_dict(),
                **facts,
            }
            if affinity is not None:
                final["affinity"] = affinity.cpu()
            atomic_save(final, out / MODEL_CHECKPOINT)
            atomic_write_text(out / RESULT_FILE, json.dumps(_result_of(final), indent=2) + "\n")
            run.log({"epoch": run.step, "event": "test", **scores})
        log(
            f"{out.name}: clean test accuracy {scores['test_accuracy']:.4f}, own domain "
            f"{scores['domain_test_accuracy']:.4f}"
        )
        accelerator.wait_for_everyone()
    return {
        **scores,
        "epochs": run.step,
        "seconds": round(time.perf_counter() - started, 2),
        "run_dir": str(out),
        **facts,
        "stopped": "epochs",
    }


def main(argv=None) -> dict | int:
    """Command-line entry point."""
    config = parse_config(
        TrainConfig, argv, prog="python -m ckd.train", description=__doc__.split("\n\n")[0], presets=PRESETS
    )
    set_threads(config.threads)
    result = train(config)
    where = f"at epoch {result.get('epoch')}, step {result.get('step')} of {config.out}"
    where += f" (last.pt: epoch {result.get('epochs')})"
    return 1 if report_non_finite(result, where) else result


if __name__ == "__main__":
    sys.exit(run_cli(main))
