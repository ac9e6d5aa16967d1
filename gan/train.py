"""Train a conditional SNGAN on CIFAR-10 with Gaussian, vMF or spherical latent noise.

    python gan/train.py --preset tiny --threads 1 --data ../shared/data/cifar10-jpeg-q75-subset.npz  # CPU demo
    accelerate launch gan/train.py --out runs/sngan-gauss                                   # reference run
    accelerate launch gan/train.py --out runs/sngan-vmf --sampler vmf \\
        --prior-checkpoint runs/wrn-40-2/classifier.pt --concentration KAPPA
    accelerate launch gan/train.py --config runs/sngan-vmf/config.json --resume   # continue a run exactly

One iteration = ``n_dis`` discriminator updates, then one generator update. The run folder holds config.json
(kind "gan"), metrics.jsonl, samples/iter_*.png (fixed noise, one row per class), generator.pt (latest
generator/EMA weights, read by gan/sampling.py) and checkpoints/iter_*/ (accelerator.save_state: models,
optimizers, grad scaler, every process's RNG; plus trainer.pt with the iteration, config and EMA).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import shlex
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path (python gan/train.py, accelerate launch gan/train.py)
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the repository root, instead of gan/

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from common.cli import run_cli, set_threads
from common.data import load_cifar10
from common.runs import METRICS_FILE, MetricsLog, load_checkpoint, atomic_save, check_same_config, read_config, write_config
from gan.config import RESUME_IGNORED_KEYS, GANConfig, learning_rate_factor, parse_config
from gan.ema import ExponentialMovingAverage
from gan.latent import VMFSampler, build_latent_sampler
from gan.losses import get_loss
from gan.models import Discriminator, Generator
from gan.sampling import GENERATOR_FILE, GANSampler

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest"  # checkpoints/latest names the newest complete checkpoint folder
TRAINER_FILE = "trainer.pt"
GRID_SEED = 1234  # fixed noise of the sample grids, drawn from its own RNG stream
GRID_PER_CLASS = 10


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


def _feature_extractor(config: GANConfig) -> str | None:
    """Name of the torch-fidelity extractor for IS/FID: Inception (None) or a registered project classifier."""
    if not config.eval_classifier:
        return None
    from gan.fidelity import classifier_extractor

    return classifier_extractor(config.eval_classifier)


def _evaluate(sampler: GANSampler, config: GANConfig, device: torch.device) -> dict | None:
    """IS/FID through eval.fidelity when it is importable and usable; None (and a log line) otherwise.

    eval.fidelity forks the RNG, so evaluating does not change the training trajectory.
    """
    try:
        from eval.fidelity import INCEPTION, compute_fidelity, load_reference
    except ImportError as error:
        print(f"skipping IS/FID: eval.fidelity is not available ({error})")
        return None
    try:
        extractor = _feature_extractor(config)
        reference, cache_name = load_reference(config.eval_reference)
        return compute_fidelity(sampler, reference, num_samples=config.eval_num_samples,
                                feature_extractor=extractor or INCEPTION,
                                feature_extractor_weights_path=config.eval_inception_weights,
                                reference_cache_name=cache_name, device=device)
    except Exception as error:  # noqa: BLE001 - evaluation must never kill a training run
        print(f"skipping IS/FID at this step: {type(error).__name__}: {error}")
        return None


def _latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / CHECKPOINT_DIR / LATEST_FILE
    return run_dir / CHECKPOINT_DIR / pointer.read_text().strip() if pointer.is_file() else None


def _save_checkpoint(accelerator, run_dir, iteration, config, generator, ema, latent) -> None:
    """save_state (models, optimizers, scaler, RNG of every process) + trainer.pt + generator.pt + pointer."""
    name = f"iter_{iteration:07d}"
    folder = run_dir / CHECKPOINT_DIR / name
    accelerator.save_state(str(folder))  # collective: every process writes its RNG state
    if accelerator.is_main_process:
        ema_state = None if ema is None else ema.module.state_dict()
        atomic_save({"iteration": iteration, "config": dataclasses.asdict(config), "ema": ema_state},
                    folder / TRAINER_FILE)
        prior_weight = latent.prior.mean_directions.detach().cpu() if isinstance(latent, VMFSampler) else None
        atomic_save({"generator": accelerator.unwrap_model(generator).state_dict(), "ema": ema_state,
                     "prior_weight": prior_weight, "iteration": iteration, "config": dataclasses.asdict(config)},
                    run_dir / GENERATOR_FILE)
        pointer = run_dir / CHECKPOINT_DIR / LATEST_FILE
        pointer.with_suffix(".tmp").write_text(name + "\n")
        pointer.with_suffix(".tmp").replace(pointer)  # the pointer moves only after the folder is complete
        old = sorted(p for p in (run_dir / CHECKPOINT_DIR).glob("iter_*") if p.is_dir() and p.name != name)
        for stale in old[: max(0, len(old) - (config.keep_checkpoints - 1))]:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()


def _init_trackers(accelerator: Accelerator, config: GANConfig) -> None:
    if accelerator.log_with:  # TensorBoard's hparams take only scalars and strings
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in dataclasses.asdict(config).items()}
        accelerator.init_trackers("gan", config=flat)


def train(config: GANConfig, command: str | None = None) -> dict:
    """Run (or resume) a training run described by ``config``; ``command`` (the command line) is recorded in
    the new run's config.json, where ``eval.report`` lists it.

    Returns:
        {"iteration": last iteration, "seconds": wall time of this process's loop, "run_dir": path}.
    """
    set_threads(config.threads)  # per process; on a busy CPU one thread is often fastest
    run_dir = Path(config.out)
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with="tensorboard" if tensorboard else None,
                              project_dir=str(run_dir))
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
    if latest is not None:
        _, saved = read_config(run_dir)
        check_same_config(saved, config, ignore=RESUME_IGNORED_KEYS)

    set_seed(config.seed)  # identical initial weights on every process
    with accelerator.main_process_first():  # one torchvision download, not one per process
        data = load_cifar10(config.data)
    if data.num_classes != config.num_classes:
        raise ValueError(f"num_classes {config.num_classes} does not match the data's {data.num_classes}")
    generator = Generator(config.latent_dim, config.g_channels, config.num_classes)
    discriminator = Discriminator(config.d_channels, config.num_classes)
    ema = ExponentialMovingAverage(generator, config.ema_decay).to(device) if config.ema_decay > 0 else None
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
        trainer = load_checkpoint(latest / TRAINER_FILE, ("iteration",), what="gan/train.py trainer state")
        start = trainer["iteration"]
        if ema is not None:
            ema.module.load_state_dict(trainer["ema"])
        accelerator.print(f"resumed {run_dir} at iteration {start}")
    elif accelerator.is_main_process:
        write_config(run_dir, config, "gan", command=command)
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
            record = {"iteration": done, "d_loss": losses[0].item(), "g_loss": losses[1].item(),
                      "lr_factor": factor, "real_logit": real_logits.mean().item(),
                      "fake_logit": fake_logits.mean().item(), "seconds": time.time() - began}
            if log is not None:
                log.write(record)
                progress.set_postfix(d_loss=f"{record['d_loss']:.3f}", g_loss=f"{record['g_loss']:.3f}")
            accelerator.log(record, step=done)
        sample_generator = ema.module if ema is not None else accelerator.unwrap_model(generator)
        if accelerator.is_main_process and (done % config.sample_every == 0 or done == end):
            _save_grid(sample_generator, grid_z, grid_labels, run_dir / "samples" / f"iter_{done:07d}.png")
        if config.eval_every and done % config.eval_every == 0 and accelerator.is_main_process:
            metrics = _evaluate(GANSampler(sample_generator, latent), config, device)
            if metrics is not None:
                log.write({"iteration": done, **metrics})
                accelerator.log(metrics, step=done)
        if done % config.checkpoint_every == 0 or done == end:
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
