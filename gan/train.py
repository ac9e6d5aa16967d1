"""Train a conditional SNGAN on CIFAR-10 with Gaussian, vMF, spherical or control latent noise.

    python -m gan.train --preset tiny --threads 1 --data PATH/cifar10.npz            # CPU demo
    accelerate launch gan/train.py --out runs/sngan-gauss                  # reference run (--preset chainer)
    accelerate launch --num_processes 8 -m gan.train --preset mimicry --out runs/sngan-mimicry   # 8 GPUs
    accelerate launch gan/train.py --out runs/sngan-vmf --sampler vmf \\
        --prior-checkpoint runs/wrn-40-2/classifier.pt --concentration KAPPA
    accelerate launch gan/train.py --config runs/sngan-vmf/config.json --out runs/sngan-vmf --resume  # continue it

One iteration = ``n_dis`` discriminator updates, then one generator update. The run folder (common.run.RunFolder:
locked, refused or resumed, written atomically) holds config.json (kind "gan"), metrics.jsonl, last.pt (both
networks, both optimizers, the EMA, the grad scaler and every process's RNG: an exact resume), generator.pt (the
latest generator/EMA weights and the prior's directions, read by gan/sampling.py) and samples/iter_*.png (fixed
noise, one row per class).

Several processes: batch sizes are global, the generator's batch norms are synchronized (SyncBatchNorm2d), and a
resume must use the process count the run was started with. Mixed precision comes from the launcher
(``accelerate launch --mixed_precision bf16``) unless ``--mixed-precision`` is given.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import os
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, "") and importlib.util.find_spec("gan") is None:
    # Run by path (python gan/train.py, accelerate launch gan/train.py) without the repository root importable:
    # run the module instead, with the root on PYTHONPATH (the process, its environment and arguments stay).
    _root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_root, os.environ.get("PYTHONPATH")]))
    os.execv(sys.executable, [sys.executable, "-m", "gan.train", *sys.argv[1:]])

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from gan.config import PRESETS, TRAIN_DESCRIPTION, TRAIN_PROG, GANConfig

    answer_early(GANConfig, prog=TRAIN_PROG, description=TRAIN_DESCRIPTION, presets=PRESETS)

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from tqdm.auto import tqdm

from common.cli import run_cli, set_threads
from common.data import load_cifar10
from common.run import (
    CONFIG_FILE,
    LAST_CHECKPOINT,
    RunError,
    RunFolder,
    atomic_save,
    learning_rate_factor,
    load_state,
    report_non_finite,
    set_learning_rate,
)
from gan.config import MAY_CHANGE, GANConfig, parse_config
from gan.ema import ExponentialMovingAverage, recompute_batch_norm_statistics
from gan.latent import VMFSampler, build_latent_sampler
from gan.layers import check_labels, convert_sync_batch_norm
from gan.losses import get_loss
from gan.models import Discriminator, Generator
from gan.sampling import GENERATOR_FILE, GANSampler

OLD_CHECKPOINTS = "checkpoints"
"""Where run folders of the earlier layout kept accelerate's save_state folders (refused for training, see below)."""

GRID_SEED = 1234  # fixed noise of the sample grids, drawn from its own RNG stream
GRID_PER_CLASS = 10
EMA_STATISTICS_SEED = 4321  # noise of the EMA generator's batch-norm statistics, its own RNG stream too
EMA_STATISTICS_SAMPLES = 2048  # images over which the EMA generator's batch-norm statistics are averaged
EMA_STATISTICS_BATCH = 256  # in batches of this size (the averages estimate population statistics at any size)
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)
"""How long a collective waits (NCCL's default is 10 minutes): while the main process samples and scores IS/FID,
the others wait at a barrier; 50k samples with Inception on a slow GPU can take longer than 10 minutes."""


def _batch(images: torch.Tensor, labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images (size, 3, 32, 32) in [-1, 1] and labels (size,), drawn uniformly with replacement.

    Sampling with replacement from the global (per-process, checkpointed) RNG instead of a DataLoader keeps
    resumption exact without dataloader state, and gives each process its own stream of batches.
    """
    index = torch.randint(0, images.shape[0], (size,), device=images.device)
    return images[index].float() / 127.5 - 1.0, labels[index]


def _fixed_grid_inputs(latent, num_classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and labels of the sample grids: one row per class, identical across calls and resumptions."""
    labels = torch.arange(num_classes, device=device).repeat_interleave(GRID_PER_CLASS)  # (C * 10,)
    # fork_rng: drawing the grid noise must not move the training RNG (resume equality, eval on/off).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(GRID_SEED)
        return latent.sample(labels), labels


def _save_grid(generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor, path: Path, title: str) -> None:
    """The training-progress grid: one row per class, the same noise in every grid of the run."""
    from eval.grids import save_image_grid

    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        images = (generator(z, labels).float() + 1.0) / 2.0  # (C * 10, 3, 32, 32) in [0, 1]
    generator.train(was_training)
    num_classes = images.shape[0] // GRID_PER_CLASS
    save_image_grid(
        images,
        path,
        nrow=GRID_PER_CLASS,
        title=title,
        caption="the same noise and labels in every grid of this run",
        row_labels=[f"class {c}" for c in range(num_classes)],
        xlabel=f"{GRID_PER_CLASS} fixed draws per class",
        ylabel="class",
    )


def eval_reference(config: GANConfig) -> str:
    """The IS/FID reference images: --eval-reference, else the training data file (--data), else cifar10-train."""
    return config.eval_reference or config.data or "cifar10-train"


def build_accelerator(config: GANConfig, run_dir: Path) -> Accelerator:
    """The Accelerator of a run: the launcher's mixed precision unless the config sets one, a long collective
    timeout."""
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    options = {} if config.mixed_precision is None else {"mixed_precision": config.mixed_precision}
    return Accelerator(
        cpu=config.cpu,
        log_with="tensorboard" if tensorboard else None,
        project_dir=str(run_dir),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)],
        **options,
    )


def build_generator(config: GANConfig, num_processes: int) -> Generator:
    """The generator of ``config``; with several processes its batch norms are synchronized across them."""
    generator = Generator(config.latent_dim, config.g_channels, config.num_classes, upsample=config.upsample)
    # Per-process BN would average over batch / num_processes images: 8-16 instead of 64/128 on 8 GPUs.
    return convert_sync_batch_norm(generator) if num_processes > 1 else generator


def _init_trackers(accelerator: Accelerator, config: GANConfig) -> None:
    if accelerator.log_with:  # TensorBoard's hparams take only scalars and strings
        flat = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in dataclasses.asdict(config).items()
        }
        accelerator.init_trackers("gan", config=flat)


def _finite_everywhere(losses: torch.Tensor, accelerator) -> bool:
    """Whether the losses are finite on every process (one collective, so that all processes stop together).

    Not common.run.all_finite, which reduces with "min": accelerate's reduce has no "min" and sums instead, so on
    two processes a finite loss reads as non-finite. "max" of the non-finite flag is supported.
    """
    nonfinite = (~torch.isfinite(losses)).any().float().reshape(1)
    if accelerator.num_processes > 1:
        nonfinite = accelerator.reduce(nonfinite, reduction="max")
    return nonfinite.item() == 0


def refuse_old_layout(run_dir: Path) -> None:
    """Refuse a run folder written by the earlier gan/train.py (checkpoints/iter_*/ from accelerate's save_state)."""
    if (run_dir / OLD_CHECKPOINTS).is_dir() and not (run_dir / LAST_CHECKPOINT).exists():
        raise RunError(
            f"{run_dir} was written by an earlier gan/train.py (accelerate checkpoint folders in {OLD_CHECKPOINTS}/), "
            "which this version cannot continue. Its generator.pt still loads for sampling and scoring "
            "(gan.fidelity, gan.sampling, gan.table5 --report-only); to train further, start a new --out "
            f"(optionally --config {run_dir / CONFIG_FILE} with the keys lr_g, lr_d, lr_decay, stop_at renamed to "
            "learning_rate_g, learning_rate_d, schedule (none -> constant), stop_after)."
        )


def _save(
    run: RunFolder,
    accelerator,
    iteration: int,
    config: GANConfig,
    generator,
    discriminator,
    optimizer_g,
    optimizer_d,
    ema,
    latent,
    metrics: dict | None,
) -> None:
    """last.pt through the run folder (every process takes part: RNG states are gathered), then generator.pt."""
    ema_state = None if ema is None else ema.module.state_dict()
    scaler = accelerator.scaler.state_dict() if getattr(accelerator, "scaler", None) is not None else None
    run.save(
        iteration,
        model=accelerator.unwrap_model(generator),
        optimizer=optimizer_g,
        metrics=metrics,
        state={"mixed_precision": accelerator.mixed_precision},
        extra={
            "discriminator": accelerator.unwrap_model(discriminator).state_dict(),
            "optimizer_d": optimizer_d.state_dict(),
            "ema": ema_state,
            "scaler": scaler,
        },
    )
    if accelerator.is_main_process:
        prior_weight = latent.prior.mean_directions.detach().cpu() if isinstance(latent, VMFSampler) else None
        atomic_save(
            {
                "generator": accelerator.unwrap_model(generator).state_dict(),
                "ema": ema_state,
                "prior_weight": prior_weight,
                "iteration": iteration,
                "config": run.config_dict(),
            },
            run.path / GENERATOR_FILE,
        )
    accelerator.wait_for_everyone()


def train(config: GANConfig, command: str | None = None) -> dict:
    """Run (or resume) a training run described by ``config``; ``command`` (the command line) is recorded in
    the new run's config.json, where ``gan.report`` lists it.

    Returns:
        {"iteration": last iteration, "seconds": wall time of this process's loop, "run_dir": path,
        "stopped": "iterations" | "stop_after" | "non-finite loss"}.
    """
    set_threads(config.threads)  # per process; on a busy CPU one thread is often fastest
    run_dir = Path(config.out)
    refuse_old_layout(run_dir)
    accelerator = build_accelerator(config, run_dir)
    for key in ("batch_size_d", "batch_size_g"):
        if getattr(config, key) % accelerator.num_processes:
            raise ValueError(
                f"--{key.replace('_', '-')} {getattr(config, key)} must divide by the "
                f"{accelerator.num_processes} processes"
            )
    batch_d = config.batch_size_d // accelerator.num_processes
    batch_g = config.batch_size_g // accelerator.num_processes
    device = accelerator.device

    with RunFolder.open(
        run_dir,
        config,
        kind="gan",
        resume=config.resume,
        accelerator=accelerator,
        may_change=MAY_CHANGE,
        step_key="iteration",
    ) as run:
        set_seed(config.seed)  # identical initial weights on every process
        with accelerator.main_process_first():  # one torchvision download, not one per process
            data = load_cifar10(config.data)
        if data.num_classes != config.num_classes:
            raise ValueError(f"--num-classes {config.num_classes} does not match the data's {data.num_classes}")
        check_labels(data.y_train, config.num_classes)  # once: batches drawn from it need no check
        evaluation = None
        if config.eval_every and accelerator.is_main_process:
            # Before training: a missing extractor or reference fails now, and the reference statistics are
            # computed while no other process waits at a barrier.
            from gan.fidelity import prepare_evaluation

            evaluation = prepare_evaluation(
                eval_reference(config),
                config.eval_num_samples,
                config.eval_inception_weights,
                config.eval_classifier,
                device,
            )
        generator = build_generator(config, accelerator.num_processes)
        discriminator = Discriminator(config.d_channels, config.num_classes)
        ema = None
        if config.ema_decay > 0:
            # A copy with plain batch norms: only the main process runs it, outside any collective.
            copy = build_generator(config, num_processes=1)
            copy.load_state_dict(generator.state_dict())
            ema = ExponentialMovingAverage(copy, config.ema_decay).to(device)
        betas = (config.beta1, config.beta2)
        optimizer_g = torch.optim.Adam(generator.parameters(), lr=config.learning_rate_g, betas=betas)
        optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=config.learning_rate_d, betas=betas)
        checkpoint = run.checkpoint
        if checkpoint is not None:
            source = run.path / LAST_CHECKPOINT
            load_state(generator, checkpoint["model"], source)
            load_state(discriminator, checkpoint["discriminator"], source)
            optimizer_g.load_state_dict(checkpoint["optimizer"])
            optimizer_d.load_state_dict(checkpoint["optimizer_d"])
            if ema is not None:
                load_state(ema.module, checkpoint["ema"], source)
        # No LR scheduler object goes through prepare(): a prepared scheduler steps once per process per step()
        # and would end the decay early on several GPUs. The rate is set from the iteration counter below.
        generator, discriminator, optimizer_g, optimizer_d = accelerator.prepare(
            generator, discriminator, optimizer_g, optimizer_d
        )
        if checkpoint is not None and checkpoint.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(checkpoint["scaler"])
        latent = build_latent_sampler(
            config.sampler, config.latent_dim, config.num_classes, config.prior_checkpoint, config.concentration
        ).to(device)
        loss = get_loss(config.loss)
        images, labels = data.x_train.to(device), data.y_train.to(device)  # uint8 (N, 3, 32, 32), (N,)
        run.begin(command)
        set_seed(config.seed + accelerator.process_index)  # a different data/noise stream per process
        run.restore_rng()  # a resumed run continues every process's streams exactly
        start = run.step
        if start:
            accelerator.print(f"resumed {run_dir} at iteration {start}")
        accelerator.print(f"{accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision}")
        _init_trackers(accelerator, config)
        grid_z, grid_labels = _fixed_grid_inputs(latent, config.num_classes, device)
        end = min(config.iterations, config.stop_after) if config.stop_after else config.iterations
        progress = tqdm(
            range(start, end),
            initial=start,
            total=end,
            disable=not (accelerator.is_local_main_process and config.progress),
        )
        began = time.time()
        stopped = "iterations" if end == config.iterations else "stop_after"
        done = start
        for iteration in progress:
            factor = learning_rate_factor(config.schedule, iteration, config.iterations)
            set_learning_rate(optimizer_g, config.learning_rate_g * factor)
            set_learning_rate(optimizer_d, config.learning_rate_d * factor)

            for _ in range(config.n_dis):
                real, real_labels = _batch(images, labels, batch_d)
                fake_labels = torch.randint(0, config.num_classes, (batch_d,), device=device)
                with torch.no_grad():
                    fake = generator(latent.sample(fake_labels), fake_labels)
                # One D forward on real+fake: DDP syncs buffers (spectral-norm u, v) at every forward, and two
                # forwards before one backward would modify them in place under autograd.
                logits = discriminator(torch.cat([real, fake.to(real.dtype)]), torch.cat([real_labels, fake_labels]))
                real_logits, fake_logits = logits.float().split([batch_d, batch_d])
                d_loss = loss.discriminator(real_logits, fake_logits)
                optimizer_d.zero_grad(set_to_none=True)
                accelerator.backward(d_loss)
                optimizer_d.step()

            # Generator update. D's parameters keep requires_grad (toggling it under DDP breaks gradient
            # reduction); their gradients from this backward are discarded by the next zero_grad.
            g_labels = torch.randint(0, config.num_classes, (batch_g,), device=device)
            g_loss = loss.generator(discriminator(generator(latent.sample(g_labels), g_labels), g_labels).float())
            optimizer_g.zero_grad(set_to_none=True)
            accelerator.backward(g_loss)
            optimizer_g.step()
            optimizer_d.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(accelerator.unwrap_model(generator))

            done = iteration + 1
            if not _finite_everywhere(torch.stack([d_loss.detach(), g_loss.detach()]), accelerator):
                stopped = "non-finite loss"  # every process leaves here together; the last checkpoint is kept
                break
            record = None
            if done % config.log_every == 0 or done == end:
                losses = accelerator.reduce(torch.stack([d_loss.detach(), g_loss.detach()]).float(), "mean")
                # learning_rate_g / _d: the rates the optimizers just stepped with, read back from them
                record = {
                    "d_loss": losses[0].item(),
                    "g_loss": losses[1].item(),
                    "lr_factor": factor,
                    "learning_rate_g": optimizer_g.param_groups[0]["lr"],
                    "learning_rate_d": optimizer_d.param_groups[0]["lr"],
                    "real_logit": real_logits.mean().item(),
                    "fake_logit": fake_logits.mean().item(),
                    "seconds": time.time() - began,
                }
                progress.set_postfix(d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}")
                accelerator.log(record, step=done)
            sample_now = done % config.sample_every == 0 or done == end
            evaluate_now = bool(config.eval_every) and done % config.eval_every == 0
            checkpoint_now = done % config.checkpoint_every == 0 or done == end
            sample_generator = ema.module if ema is not None else accelerator.unwrap_model(generator)
            if ema is not None and accelerator.is_main_process and (sample_now or evaluate_now or checkpoint_now):
                # The EMA weights need their own BN statistics; the copied ones belong to the live weights.
                recompute_batch_norm_statistics(
                    ema.module, latent, EMA_STATISTICS_SAMPLES, EMA_STATISTICS_BATCH, EMA_STATISTICS_SEED
                )
            if accelerator.is_main_process and sample_now:
                _save_grid(
                    sample_generator,
                    grid_z,
                    grid_labels,
                    run_dir / "samples" / f"iter_{done:07d}.png",
                    f"{'EMA ' if ema is not None else ''}generator, {config.sampler} noise, iteration {done:,}",
                )
            if evaluate_now and accelerator.is_main_process:
                # forks the RNG: no effect on training
                metrics = evaluation(GANSampler(sample_generator, latent), device)
                record = {**(record or {}), **metrics}
                accelerator.log(metrics, step=done)
            if checkpoint_now:  # the metrics of this iteration are written with its checkpoint
                _save(
                    run,
                    accelerator,
                    done,
                    config,
                    generator,
                    discriminator,
                    optimizer_g,
                    optimizer_d,
                    ema,
                    latent,
                    record,
                )
            elif record is not None:
                run.log({"iteration": done, **record})

    seconds = time.time() - began
    accelerator.print(
        f"stopped ({stopped}) at iteration {done} of {config.iterations} in {seconds:.1f} s; run folder {run_dir}"
    )
    accelerator.end_training()
    return {"iteration": done, "seconds": seconds, "run_dir": str(run_dir), "stopped": stopped}


def main(argv: list[str] | None = None) -> dict | int:
    """Entry point: parse ``argv`` (default sys.argv[1:]) into a GANConfig and train."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The script and its arguments; the launcher (python or accelerate launch and its options) is not visible here.
    command = shlex.join(["gan/train.py", *argv])
    summary = train(parse_config(argv), command=command)
    where = f"at iteration {summary.get('iteration')} in {summary['run_dir']}"
    hint = "lower --learning-rate-g and --learning-rate-d, then --resume"
    return 1 if report_non_finite(summary, where, hint) else summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
