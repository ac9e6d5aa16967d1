"""Train a conditional SNGAN on CIFAR-10 with Gaussian, vMF or spherical latent noise.

    python gan/train.py --preset tiny --threads 1 --data ../shared/data/cifar10-jpeg-q75-subset.npz  # CPU demo
    accelerate launch gan/train.py --out runs/sngan-gauss                  # reference run (--preset chainer)
    accelerate launch --num_processes 8 gan/train.py --preset mimicry --out runs/sngan-mimicry   # 8 GPUs
    accelerate launch gan/train.py --out runs/sngan-vmf --sampler vmf \\
        --prior-checkpoint runs/wrn-40-2/classifier.pt --concentration KAPPA
    accelerate launch gan/train.py --config runs/sngan-vmf/config.json --resume   # continue a run exactly

One iteration = ``n_dis`` discriminator updates, then one generator update. The run folder holds config.json
(kind "gan"), metrics.jsonl, samples/iter_*.png (fixed noise, one row per class), generator.pt (latest
generator/EMA weights, read by gan/sampling.py) and checkpoints/iter_*/ (accelerator.save_state: models,
optimizers, grad scaler, every process's RNG; plus trainer.pt with the iteration, config, EMA, process count and
mixed precision). checkpoints/latest names the newest complete folder; it moves only after every process has
written its part, so --resume never reads a half-written folder.

Several processes: batch sizes are global, the generator's batch norms are synchronized (SyncBatchNorm2d), and
a resume must use the process count the run was started with (the RNG streams and BN batches depend on it).
Mixed precision comes from the launcher (``accelerate launch --mixed_precision bf16`` or ``accelerate config``)
unless ``--mixed-precision`` is given.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path (python gan/train.py, accelerate launch gan/train.py)
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, instead of gan/

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from tqdm.auto import tqdm

from common.cli import run_cli, set_threads
from common.data import load_cifar10
from common.runs import (METRICS_FILE, MetricsLog, atomic_save, atomic_write_text, check_same_config, load_checkpoint,
                         read_config, read_metrics, write_config)
from gan.config import ADDED_KEYS, RESUME_IGNORED_KEYS, GANConfig, learning_rate_factor, parse_config
from gan.ema import ExponentialMovingAverage, recompute_batch_norm_statistics
from gan.latent import VMFSampler, build_latent_sampler
from gan.layers import check_labels, convert_sync_batch_norm
from gan.losses import get_loss
from gan.models import Discriminator, Generator
from gan.sampling import GENERATOR_FILE, GANSampler

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest"  # checkpoints/latest names the newest complete checkpoint folder
TRAINER_FILE = "trainer.pt"
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


def _save_grid(generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    from torchvision.utils import save_image

    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        images = (generator(z, labels).float() + 1.0) / 2.0  # (C * 10, 3, 32, 32) in [0, 1]
    generator.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.clamp(0, 1), path, nrow=GRID_PER_CLASS)


def eval_reference(config: GANConfig) -> str:
    """The IS/FID reference images: --eval-reference, else the training data file (--data), else cifar10-train."""
    return config.eval_reference or config.data or "cifar10-train"


def build_accelerator(config: GANConfig, run_dir: Path) -> Accelerator:
    """The Accelerator of a run: the launcher's mixed precision unless the config sets one, a long collective timeout."""
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    options = {} if config.mixed_precision is None else {"mixed_precision": config.mixed_precision}
    return Accelerator(log_with="tensorboard" if tensorboard else None, project_dir=str(run_dir),
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)], **options)


def build_generator(config: GANConfig, num_processes: int) -> Generator:
    """The generator of ``config``; with several processes its batch norms are synchronized across them."""
    generator = Generator(config.latent_dim, config.g_channels, config.num_classes, upsample=config.upsample)
    # Per-process BN would average over batch / num_processes images: 8-16 instead of 64/128 on 8 GPUs.
    return convert_sync_batch_norm(generator) if num_processes > 1 else generator


def _latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / CHECKPOINT_DIR / LATEST_FILE
    return run_dir / CHECKPOINT_DIR / pointer.read_text().strip() if pointer.is_file() else None


def _trainer_state(folder: Path, num_processes: int) -> dict:
    """trainer.pt of a checkpoint folder, checked to belong to a run on ``num_processes`` processes.

    Raises:
        ValueError: the folder misses a process's RNG state, or the run used another process count.
    """
    trainer = load_checkpoint(folder / TRAINER_FILE, ("iteration",), what="gan/train.py trainer state")
    # Runs written before the count was stored: one random_states_<rank>.pkl per process.
    saved = trainer.get("num_processes") or len(list(folder.glob("random_states_*.pkl")))
    if saved != num_processes:
        raise ValueError(
            f"{folder} was written by a run on {saved} process(es), but this is {num_processes}: resume it with "
            f"the same count (accelerate launch --num_processes {saved} gan/train.py ...). Another count would change "
            "every process's random stream and the batch-norm batches, so the run would not continue exactly.")
    missing = [rank for rank in range(saved) if not (folder / f"random_states_{rank}.pkl").is_file()]
    if missing:  # accelerate's load_state would skip them silently and leave those processes' RNGs unrestored
        raise ValueError(f"{folder} is incomplete: no RNG state of process(es) {missing}")
    return trainer


def _save_checkpoint(accelerator, run_dir, iteration, config, generator, ema, latent) -> None:
    """save_state (models, optimizers, scaler, RNG of every process) + trainer.pt + generator.pt, then the pointer.

    A folder of the same name left by an interrupted save (the pointer never named it) is removed first.
    """
    name = f"iter_{iteration:07d}"
    checkpoints = run_dir / CHECKPOINT_DIR
    folder = checkpoints / name
    latest = _latest_checkpoint(run_dir)
    if accelerator.is_main_process and folder.exists() and (latest is None or latest.name != name):
        shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))  # every process writes its RNG state; no barrier inside
    if accelerator.is_main_process:
        ema_state = None if ema is None else ema.module.state_dict()
        atomic_save({"iteration": iteration, "config": dataclasses.asdict(config), "ema": ema_state,
                     "num_processes": accelerator.num_processes,
                     "mixed_precision": accelerator.mixed_precision}, folder / TRAINER_FILE)
        prior_weight = latent.prior.mean_directions.detach().cpu() if isinstance(latent, VMFSampler) else None
        atomic_save({"generator": accelerator.unwrap_model(generator).state_dict(), "ema": ema_state,
                     "prior_weight": prior_weight, "iteration": iteration, "config": dataclasses.asdict(config)},
                    run_dir / GENERATOR_FILE)
    accelerator.wait_for_everyone()  # every process's files are on disk before the pointer names the folder
    if accelerator.is_main_process:
        pointer = checkpoints / LATEST_FILE
        pointer.with_suffix(".tmp").write_text(name + "\n")
        pointer.with_suffix(".tmp").replace(pointer)
        old = sorted(p for p in checkpoints.glob("iter_*") if p.is_dir() and p.name != name)
        for stale in old[: max(0, len(old) - (config.keep_checkpoints - 1))]:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()


def _init_trackers(accelerator: Accelerator, config: GANConfig) -> None:
    if accelerator.log_with:  # TensorBoard's hparams take only scalars and strings
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in dataclasses.asdict(config).items()}
        accelerator.init_trackers("gan", config=flat)


def train(config: GANConfig, command: str | None = None) -> dict:
    """Run (or resume) a training run described by ``config``; ``command`` (the command line) is recorded in
    the new run's config.json, where ``gan.report`` lists it.

    Returns:
        {"iteration": last iteration, "seconds": wall time of this process's loop, "run_dir": path}.
    """
    set_threads(config.threads)  # per process; on a busy CPU one thread is often fastest
    run_dir = Path(config.out)
    accelerator = build_accelerator(config, run_dir)
    for key in ("batch_size_d", "batch_size_g"):
        if getattr(config, key) % accelerator.num_processes:
            raise ValueError(f"{key} {getattr(config, key)} must divide by the {accelerator.num_processes} processes")
    batch_d = config.batch_size_d // accelerator.num_processes
    batch_g = config.batch_size_g // accelerator.num_processes
    device = accelerator.device

    latest = _latest_checkpoint(run_dir)
    if config.resume and latest is None:
        raise ValueError(f"--resume: no checkpoint in {run_dir / CHECKPOINT_DIR}")
    if latest is not None and not config.resume:
        raise ValueError(f"out {str(run_dir)!r} already holds a run; pass --resume to continue it or a new --out")
    trainer = None
    if latest is not None:
        _, saved = read_config(run_dir)
        check_same_config({**ADDED_KEYS, **saved}, config, ignore=RESUME_IGNORED_KEYS)
        trainer = _trainer_state(latest, accelerator.num_processes)

    set_seed(config.seed)  # identical initial weights on every process
    with accelerator.main_process_first():  # one torchvision download, not one per process
        data = load_cifar10(config.data)
    if data.num_classes != config.num_classes:
        raise ValueError(f"num_classes {config.num_classes} does not match the data's {data.num_classes}")
    check_labels(data.y_train, config.num_classes)  # once: batches drawn from it need no check
    evaluation = None
    if config.eval_every and accelerator.is_main_process:
        # Before training: a missing extractor or reference fails now, and the reference statistics (50k images
        # for CIFAR-10) are computed while no other process waits at a barrier.
        from gan.fidelity import prepare_evaluation

        evaluation = prepare_evaluation(eval_reference(config), config.eval_num_samples,
                                        config.eval_inception_weights, config.eval_classifier, device)
    generator = build_generator(config, accelerator.num_processes)
    discriminator = Discriminator(config.d_channels, config.num_classes)
    ema = None
    if config.ema_decay > 0:
        # A copy with plain batch norms: only the main process runs it, outside any collective.
        copy = build_generator(config, num_processes=1)
        copy.load_state_dict(generator.state_dict())
        ema = ExponentialMovingAverage(copy, config.ema_decay).to(device)
    betas = (config.beta1, config.beta2)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    # No LR scheduler object goes through prepare(): a prepared scheduler steps once per process per step()
    # and would end the decay early on several GPUs. The rate is set from the iteration counter below.
    generator, discriminator, optimizer_g, optimizer_d = accelerator.prepare(
        generator, discriminator, optimizer_g, optimizer_d)
    latent = build_latent_sampler(config.sampler, config.latent_dim, config.num_classes,
                                  config.prior_checkpoint, config.concentration).to(device)
    loss = get_loss(config.loss)
    images, labels = data.x_train.to(device), data.y_train.to(device)  # uint8 (N, 3, 32, 32), (N,)
    set_seed(config.seed + accelerator.process_index)  # a different data/noise stream per process

    start = 0
    if latest is not None:
        accelerator.load_state(str(latest))  # also restores every process's RNG streams
        start = trainer["iteration"]
        if ema is not None:
            ema.module.load_state_dict(trainer["ema"])
        if accelerator.is_main_process:  # lines logged after this checkpoint by the interrupted run are redone
            kept = [record for record in read_metrics(run_dir / METRICS_FILE) if record.get("iteration", 0) <= start]
            atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(record, sort_keys=True) + "\n" for record in kept))
        accelerator.print(f"resumed {run_dir} at iteration {start}")
    elif accelerator.is_main_process:
        write_config(run_dir, config, "gan", command=command)
    accelerator.print(f"{accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision}")
    log = MetricsLog(run_dir / METRICS_FILE) if accelerator.is_main_process else None
    _init_trackers(accelerator, config)
    grid_z, grid_labels = _fixed_grid_inputs(latent, config.num_classes, device)
    end = min(config.iterations, config.stop_at) if config.stop_at else config.iterations
    progress = tqdm(range(start, end), initial=start, total=end, disable=not accelerator.is_local_main_process)
    began = time.time()
    for iteration in progress:
        factor = learning_rate_factor(config, iteration)
        for group in optimizer_g.param_groups:
            group["lr"] = config.lr_g * factor
        for group in optimizer_d.param_groups:
            group["lr"] = config.lr_d * factor

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
        if done % config.log_every == 0 or done == end:
            losses = accelerator.reduce(torch.stack([d_loss.detach(), g_loss.detach()]).float(), "mean")
            # lr_g / lr_d: the rates the optimizers just stepped with, read back from them
            record = {"iteration": done, "d_loss": losses[0].item(), "g_loss": losses[1].item(),
                      "lr_factor": factor, "lr_g": optimizer_g.param_groups[0]["lr"],
                      "lr_d": optimizer_d.param_groups[0]["lr"], "real_logit": real_logits.mean().item(),
                      "fake_logit": fake_logits.mean().item(), "seconds": time.time() - began}
            if log is not None:
                log.write(record)
                progress.set_postfix(d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}")
            accelerator.log(record, step=done)
        sample_now = done % config.sample_every == 0 or done == end
        evaluate_now = bool(config.eval_every) and done % config.eval_every == 0
        checkpoint_now = done % config.checkpoint_every == 0 or done == end
        sample_generator = ema.module if ema is not None else accelerator.unwrap_model(generator)
        if ema is not None and accelerator.is_main_process and (sample_now or evaluate_now or checkpoint_now):
            # The EMA weights need their own BN statistics; the copied ones belong to the live weights.
            recompute_batch_norm_statistics(ema.module, latent, EMA_STATISTICS_SAMPLES, EMA_STATISTICS_BATCH,
                                            EMA_STATISTICS_SEED)
        if accelerator.is_main_process and sample_now:
            _save_grid(sample_generator, grid_z, grid_labels, run_dir / "samples" / f"iter_{done:07d}.png")
        if evaluate_now and accelerator.is_main_process:
            metrics = evaluation(GANSampler(sample_generator, latent), device)  # forks the RNG: no effect on training
            log.write({"iteration": done, **metrics})
            accelerator.log(metrics, step=done)
        if checkpoint_now:
            _save_checkpoint(accelerator, run_dir, done, config, generator, ema, latent)

    seconds = time.time() - began
    accelerator.print(f"finished iteration {end} of {config.iterations} in {seconds:.1f} s; run folder {run_dir}")
    accelerator.end_training()
    return {"iteration": end, "seconds": seconds, "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    """Entry point: parse ``argv`` (default sys.argv[1:]) into a GANConfig and train."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The script and its arguments; the launcher (python or accelerate launch and its options) is not visible here.
    command = shlex.join(["gan/train.py", *argv])
    return train(parse_config(argv), command=command)


if __name__ == "__main__":
    sys.exit(run_cli(main))
