"""Train one hyperspherical VAE (HVAE, HVAE-C or HVAE-L) on dynamically binarized MNIST.

    python -m vae.train --model hvae-l --latent-dim 5 --classifier runs/classifier-d5/classifier.pt \
        --data data/mnist.npz --out runs/hvae-l-d5

Adam, batch 64, early stopping on the validation ELBO (the last 10,000 training images, binarized once with
seed 1), optional linear KL warm-up. Runs with plain ``python`` on a CPU and with ``accelerate launch`` on GPUs.
The run folder (:mod:`common.run`) gets config.json, metrics.jsonl (one line per epoch), ``last.pt`` (model,
optimizer, early-stopping state, RNG states, config) and ``best.pt`` (the weights with the best validation ELBO).
``--resume`` continues exactly; a different config is refused (only ``--epochs`` and the invocation options may
change). A non-finite loss stops the run and keeps the last good checkpoint.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from vae.config import TrainConfig

    answer_early(TrainConfig, prog="python -m vae.train", description=__doc__.split("\n\n")[0])

import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from common.cli import run_cli, set_threads
from common.config import ConfigError, check_positive, flag, parse_config
from common.data import binarize, binarize_fixed, load_mnist, train_validation_split
from common.run import (
    LAST_CHECKPOINT,
    RunFolder,
    all_finite,
    atomic_save,
    close_process_group,
    epoch_order,
    load_state,
    report_non_finite,
)
from vae.checkpoints import BEST_CHECKPOINT, model_from_state, upgrade_checkpoint
from vae.config import MODEL_KINDS, TrainConfig
from vae.figures import make_run_figures
from vae.models import HypersphericalVAE
from vmfprior import VMFPrior
from vmfprior.prior import CheckpointFormatError

VALIDATION_BINARIZATION_SEED = 1
"""The validation split is binarized once with this seed (the test set uses seed 0, see common.data)."""


def check_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` naming the first bad setting."""
    if config.model not in MODEL_KINDS:
        raise ConfigError(f"--model must be one of {', '.join(MODEL_KINDS)}, got {config.model!r}")
    if config.latent_dim < 2:
        raise ConfigError(f"--latent-dim must be at least 2, got {config.latent_dim}")
    if config.encoder_sees_label and config.model == "hvae":
        raise ConfigError("--encoder-sees-label needs a label-aware model (hvae-c or hvae-l)")
    if config.model == "hvae-l" and not config.classifier:
        raise ConfigError("--model hvae-l needs --classifier PATH (a checkpoint written by vae.classifier)")
    check_positive(config, "batch_size", "epochs", "patience", "learning_rate", "prior_concentration", "num_validation")
    check_positive(config, "train_subset", "validation_subset", "stop_after", allow_none=True)
    if config.kl_warmup_epochs < 0:
        raise ConfigError(f"{flag('kl_warmup_epochs')} must be non-negative, got {config.kl_warmup_epochs}")


def build_model(config: TrainConfig, num_classes: int) -> HypersphericalVAE:
    """A fresh model for ``config``; HVAE-L's prior comes from the final layer of ``config.classifier``."""
    class_prior = None
    if config.model == "hvae-l":
        try:
            class_prior = VMFPrior.from_checkpoint(config.classifier, config.prior_concentration)
        except CheckpointFormatError as error:
            raise ValueError(f"--classifier: {error}") from error
        if class_prior.dim != config.latent_dim:
            raise ValueError(
                f"--classifier {config.classifier!r} has a {class_prior.dim}-dimensional penultimate "
                f"layer, but --latent-dim is {config.latent_dim}"
            )
    return HypersphericalVAE(
        config.model,
        config.latent_dim,
        num_classes,
        class_prior=class_prior,
        encoder_sees_label=config.encoder_sees_label,
    )


@torch.no_grad()
def validation_elbo(model: HypersphericalVAE, images: torch.Tensor, labels: torch.Tensor, accelerator, batch_size=1000):
    """Mean ELBO over this process's share of the (already binarized) validation set, summed over processes."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    shard = torch.arange(accelerator.process_index, images.shape[0], accelerator.num_processes)
    for start in range(0, shard.shape[0], batch_size):
        index = shard[start : start + batch_size]
        terms = model.elbo(images[index], labels[index])
        total += torch.stack([terms.elbo.double().sum(), torch.tensor(float(index.shape[0]), dtype=torch.float64)])
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1])


def train(config: TrainConfig, data=None, log=None) -> dict:
    """Train (or resume) one run; see the module docstring.

    Args:
        config: the settings.
        data: an already loaded ``ImageData`` (None: load ``config.data``).
        log: function for progress lines (default: ``accelerator.print``).

    Returns:
        summary dict: ``epochs`` (completed), ``trained_epochs`` (by this call; 0 for a finished run),
        ``best_epoch``, ``best_validation_elbo``, ``stopped`` ("patience", "epochs", "stop_after", "non-finite loss"
        or "already finished"), ``seconds``, ``run_dir``.
    """
    check_config(config)
    accelerator = Accelerator(cpu=config.cpu)
    log = log or accelerator.print
    out = Path(config.out)
    started = time.perf_counter()
    first_epoch = 0  # the epoch this invocation starts from (its summary counts what it trained)
    with RunFolder.open(
        out,
        config,
        "vae",
        resume=config.resume,
        accelerator=accelerator,
        may_change=("epochs",),
        step_key="epoch",
        upgrade=upgrade_checkpoint,
    ) as run:
        checkpoint = run.checkpoint
        state = {"epoch": 0, "best_validation_elbo": -float("inf"), "best_epoch": 0, "bad_epochs": 0, "stopped": None}
        if checkpoint is not None:
            state = dict(checkpoint["state"])
            first_epoch = state["epoch"]
        if state["stopped"] == "patience":
            log(f"{out}: already stopped early at epoch {state['epoch']}; nothing to do")
            return _summary(state, started, out, "already finished", first_epoch)

        data = data if data is not None else load_mnist(config.data)
        available = data.x_train.shape[0]
        if not 0 < config.num_validation < available:
            raise ConfigError(
                f"--num-validation {config.num_validation}: the data's training split holds {available} "
                f"images; pass a number in 1..{available - 1} (e.g. --num-validation {available // 6})"
            )
        x_train, y_train, x_val, y_val = train_validation_split(data.x_train, data.y_train, config.num_validation)
        if config.train_subset is not None:
            x_train, y_train = x_train[: config.train_subset], y_train[: config.train_subset]
        if config.validation_subset is not None:
            x_val, y_val = x_val[: config.validation_subset], y_val[: config.validation_subset]
        device = accelerator.device
        x_train, y_train = x_train.to(device), y_train.to(device)  # uint8 (N, 1, 28, 28), binarized per batch
        x_val = binarize_fixed(x_val, seed=VALIDATION_BINARIZATION_SEED).to(device)
        y_val = y_val.to(device)

        torch.manual_seed(config.seed)
        # A resumed run rebuilds its prior from its own checkpoint: the classifier file may be gone.
        if checkpoint is None:
            model = build_model(config, data.num_classes)
        else:
            model = model_from_state(asdict(config), checkpoint["model"], source=out / LAST_CHECKPOINT)
        # The fused kernel: one pass over the parameters instead of ~10 small ops each (the parameters are on the
        # CPU here; the kernel also runs on CUDA after accelerator.prepare).
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)
        if checkpoint is not None:
            load_state(optimizer, checkpoint["optimizer"], out / LAST_CHECKPOINT)
        model, optimizer = accelerator.prepare(model, optimizer)
        raw_model = accelerator.unwrap_model(model)
        run.begin()
        run.restore_rng()

        last_epoch = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
        while state["epoch"] < last_epoch:
            epoch = state["epoch"] + 1
            model.train()
            order = epoch_order(x_train.shape[0], config.seed, epoch)[
                accelerator.process_index :: accelerator.num_processes
            ]
            num_steps = (order.shape[0] + config.batch_size - 1) // config.batch_size
            sums = torch.zeros(3, dtype=torch.float64)
            epoch_started = time.perf_counter()
            bar = tqdm(
                range(num_steps),
                desc=f"{config.model} d={config.latent_dim} epoch {epoch}",
                leave=False,
                disable=not (config.progress and accelerator.is_local_main_process),
            )
            for step in bar:
                index = order[step * config.batch_size : (step + 1) * config.batch_size].to(device)
                x = binarize(x_train[index])  # fresh Bernoulli draw every batch
                kl_weight = 1.0
                if config.kl_warmup_epochs > 0:
                    kl_weight = min(1.0, (epoch - 1 + step / num_steps) / config.kl_warmup_epochs)
                terms = model(x, y_train[index], kl_weight)
                loss = -terms.elbo.mean()
                if not all_finite(loss, accelerator):  # all stop together, or the others would wait in backward
                    log(
                        f"non-finite loss (here {float(loss.detach())}) at epoch {epoch}, step {step}: stopping; the "
                        f"last good checkpoint ({out / LAST_CHECKPOINT}, epoch {state['epoch']}) is kept"
                    )
                    run.log({"event": "non-finite loss", "epoch": epoch, "step": step})
                    return _summary(state, started, out, "non-finite loss", first_epoch)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                sums += torch.tensor(
                    [float(terms.reconstruction.detach().sum()), float(terms.kl.detach().sum()), index.shape[0]],
                    dtype=torch.float64,
                )
            bar.close()
            val_elbo = validation_elbo(raw_model, x_val, y_val, accelerator)
            state["epoch"] = epoch
            improved = val_elbo > state["best_validation_elbo"]
            if improved:
                state.update(best_validation_elbo=val_elbo, best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            if state["bad_epochs"] >= config.patience:
                state["stopped"] = "patience"
            record = {
                "train_reconstruction": float(sums[0] / sums[2]),
                "train_kl": float(sums[1] / sums[2]),
                "train_elbo_kl_weight_1": float((sums[0] - sums[1]) / sums[2]),
                "kl_weight": kl_weight,
                "validation_elbo": val_elbo,
                "best_validation_elbo": state["best_validation_elbo"],
                "epoch_seconds": round(time.perf_counter() - epoch_started, 3),
            }
            if improved and accelerator.is_main_process:
                atomic_save(
                    {
                        "model": raw_model.state_dict(),
                        "epoch": epoch,
                        "validation_elbo": val_elbo,
                        "config": asdict(config),
                    },
                    out / BEST_CHECKPOINT,
                )
            run.save(epoch, model=raw_model, optimizer=optimizer, state=state, metrics=record)
            log(
                f"{config.model} d={config.latent_dim} epoch {epoch}: train ELBO "
                f"{record['train_elbo_kl_weight_1']:.2f} (KL {record['train_kl']:.2f}), validation ELBO {val_elbo:.2f}"
                + (" *" if improved else f" (no improvement for {state['bad_epochs']})")
                + f", {record['epoch_seconds']:.1f}s"
            )
            accelerator.wait_for_everyone()
            if state["stopped"]:
                break
    # No accelerator.end_training() here: it ends the process group, and a driver trains several runs in one launch.
    stopped = state["stopped"] or ("epochs" if state["epoch"] >= config.epochs else "stop_after")
    return _summary(state, started, out, stopped, first_epoch)


def _summary(state: dict, started: float, out: Path, stopped: str, first_epoch: int) -> dict:
    return {
        "epochs": state["epoch"],
        "trained_epochs": state["epoch"] - first_epoch,
        "best_epoch": state["best_epoch"],
        "best_validation_elbo": state["best_validation_elbo"],
        "stopped": stopped,
        "seconds": round(time.perf_counter() - started, 2),
        "run_dir": str(out),
    }


def main(argv=None) -> dict | int:
    """Command-line entry point; a non-finite loss is an error (exit status 1)."""
    config = parse_config(TrainConfig, argv, prog="python -m vae.train", description=__doc__.split("\n\n")[0])
    set_threads(config.threads)
    summary = train(config)
    close_process_group()
    if report_non_finite(summary, f"in {config.out}"):
        return 1
    if config.figures and summary["epochs"] > 0:
        make_run_figures(config.out, data_path=config.data)
    print(summary)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
