"""The SNGAN training config: one dataclass, presets, and the command-line/config-file parser.

Built with :mod:`common.config`. Precedence, lowest to highest: dataclass defaults (the reference protocol of
Miyato & Koyama 2018, the same as ``--preset chainer``) < ``--preset`` < ``--config FILE`` < explicit flags.
The run's length is counted in generator ``iterations`` (not passes over the data, which the GAN protocols do not
count), and ``stop_after`` is an iteration.

Presets are named after the protocol they reproduce; results compare with a published table only under its
protocol (training and the IS/FID sample counts). Seo, Lee & Kwak (2021, Section 4.3) train SNGAN "implemented by"
Shmelkov, Schmid & Alahari ("How good is my GAN?", ECCV 2018) and "directly follow" that paper's evaluation
protocol (IS, FID, GAN-train, GAN-test; see ``gan.fidelity``). No preset is known to be that exact setup: which
training settings Shmelkov et al. state is listed in docs/gan.md.

* ``chainer``: pfnet-research/sngan_projection, the code of Miyato & Koyama (2018): 50k generator iterations,
  n_dis 5, D batch 64, G batch 128, nearest-neighbour up-sampling. The defaults, and the closest published
  protocol to the paper's.
* ``mimicry``: kwotsin/mimicry's SNGAN on CIFAR-10, a second public implementation (the paper does not cite it):
  100k iterations, G batch = real batch = 64, bilinear up-sampling. Its headline FIDs use 50k real / 50k fake
  images; its reproduction of the SNGAN paper uses 10k real / 5k fake.
* ``small``: narrow models for one CPU core (about half an hour), see :data:`PRESETS`.
* ``tiny``: a smoke run of a few minutes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common.config import GLOSSARY, ConfigError, check_choice, check_positive, flag, option
from common.config import parse_config as parse_options
from gan.latent import SAMPLERS, VMF_SAMPLERS
from gan.layers import UPSAMPLE_MODES
from gan.losses import LOSSES

__all__ = ["GANConfig", "PRESETS", "MAY_CHANGE", "parse_config", "validate"]

SCHEDULES = ("linear", "constant")


@dataclass
class GANConfig:
    """Everything that defines a GAN run. Batch sizes are global: each process takes batch / num_processes."""

    out: str = option("runs/sngan", "run folder: config.json, last.pt, generator.pt, metrics.jsonl, samples/")
    data: str | None = option(None, "CIFAR-10 .npz (offline); default: download with torchvision")
    sampler: str = option("gaussian", "latent noise (vmf-orthogonal: vMF around a fixed orthogonal head)",
                          choices=SAMPLERS)
    prior_checkpoint: str | None = option(None, "vmf: the classifier checkpoint whose head is the prior")
    concentration: float | None = option(None, "vmf, vmf-orthogonal: kappa of the class-conditional vMF")
    latent_dim: int = option(128, "d of the noise z; for vmf, the classifier's penultimate width")
    g_channels: int = option(256, "generator width (256: the 4.3M-parameter SNGAN)")
    d_channels: int = option(128, "discriminator width (128: the 1.1M-parameter projection discriminator)")
    num_classes: int = option(10, "classes of the conditional batch norm and the projection")
    upsample: str = option("nearest", "2x up-sampling in the generator: nearest (chainer) or bilinear (Mimicry)",
                           choices=UPSAMPLE_MODES)
    loss: str = option("hinge", "adversarial loss", choices=tuple(LOSSES))
    iterations: int = option(50_000, "generator updates: the run's length")
    n_dis: int = option(5, "discriminator updates per generator update")
    batch_size_d: int = option(64, "real and fake images per discriminator step (global)")
    batch_size_g: int = option(128, "fake images per generator step (global)")
    learning_rate_g: float = option(2e-4, "Adam step size of the generator")
    learning_rate_d: float = option(2e-4, "Adam step size of the discriminator")
    beta1: float = option(0.0, "Adam beta1")
    beta2: float = option(0.9, "Adam beta2")
    schedule: str = option("linear", "learning-rate schedule: linear (to 0 at --iterations) or constant",
                           choices=SCHEDULES)
    ema_decay: float = option(0.0, "EMA of the generator's weights; 0 disables (e.g. 0.9999)")
    mixed_precision: str | None = option(None, "no, fp16 or bf16; default: what accelerate launch says",
                                         choices=(None, "no", "fp16", "bf16"))
    seed: int = option(0, "base seed; each process adds its rank")
    threads: int | None = option(None, GLOSSARY["threads"])
    cpu: bool = option(False, "use the CPU even when a GPU is present")
    progress: bool = option(True, "show a progress bar")
    checkpoint_every: int = option(5_000, "iterations between checkpoints (last.pt and generator.pt)")
    sample_every: int = option(5_000, "iterations between sample grids (fixed noise, one row per class)")
    eval_every: int = option(0, "IS/FID through eval.fidelity every this many iterations; 0 disables")
    eval_num_samples: int = option(5_000, "generated images per periodic IS/FID")
    eval_reference: str | None = option(None, "cifar10-train, cifar10-test or PATH.npz; default: --data, else "
                                              "cifar10-train")
    eval_inception_weights: str | None = option(None, "local copy of torch-fidelity's Inception weights (offline)")
    eval_classifier: str | None = option(None, "score with this gan.classifier checkpoint instead of Inception")
    log_every: int = option(100, "iterations between metrics lines")
    resume: bool = option(False, "continue the run in --out exactly from its last checkpoint")
    stop_after: int | None = option(None, "stop (with a checkpoint) after this iteration; continue with --resume")


MAY_CHANGE = ("checkpoint_every", "sample_every", "eval_every", "eval_num_samples", "eval_reference",
              "eval_inception_weights", "eval_classifier", "log_every", "mixed_precision")
"""Keys that may differ between a run and its resumption besides common.run.INVOCATION_KEYS: they do not change
the trained weights (mixed precision does change the arithmetic; the precision in effect is in every checkpoint)."""

PRESETS = {
    "chainer": dict(iterations=50_000, n_dis=5, batch_size_d=64, batch_size_g=128, upsample="nearest"),
    "mimicry": dict(iterations=100_000, n_dis=5, batch_size_d=64, batch_size_g=64, upsample="bilinear"),
    "small": dict(
        out="runs/sngan-small", latent_dim=64, g_channels=32, d_channels=32, iterations=3000, n_dis=2,
        batch_size_d=32, batch_size_g=32, checkpoint_every=250, sample_every=500, log_every=50,
    ),
    "tiny": dict(
        out="runs/sngan-tiny", latent_dim=64, g_channels=16, d_channels=16, iterations=200, n_dis=2,
        batch_size_d=16, batch_size_g=32, checkpoint_every=100, sample_every=50, log_every=10,
    ),
}
"""``chainer`` and ``mimicry``: the two published protocols (module docstring). ``small``: narrow models, n_dis 2,
for one CPU core (docs/gan.md). ``tiny``: small widths, n_dis 2 and 200 iterations: a smoke run of minutes. The CPU
presets' latent_dim matches the penultimate width of ``python -m gan.classifier --preset tiny`` (WRN-10-1: 64), so
``--sampler vmf`` works with that classifier."""

POSITIVE = ("latent_dim", "g_channels", "d_channels", "num_classes", "iterations", "n_dis", "batch_size_d",
            "batch_size_g", "checkpoint_every", "sample_every", "log_every", "eval_num_samples", "learning_rate_g",
            "learning_rate_d")


def validate(config: GANConfig) -> GANConfig:
    """Check values; raise ConfigError naming the flag. Returns the config."""
    for field in dataclasses.fields(GANConfig):
        if field.metadata.get("choices") is not None:
            check_choice(config, field.name, field.metadata["choices"])
    check_positive(config, *POSITIVE)
    for key in POSITIVE:
        if key.startswith("learning_rate"):
            continue
        if not isinstance(getattr(config, key), int):
            raise ConfigError(f"{flag(key)} must be a positive int, got {getattr(config, key)!r}")
    for key in ("beta1", "beta2", "ema_decay"):
        if not 0.0 <= getattr(config, key) < 1.0:
            raise ConfigError(f"{flag(key)} must lie in [0, 1), got {getattr(config, key)!r}")
    check_positive(config, "threads", "stop_after", allow_none=True)
    if config.eval_every < 0:
        raise ConfigError(f"--eval-every must be >= 0, got {config.eval_every}")
    if config.eval_classifier and config.eval_inception_weights:
        raise ConfigError("--eval-classifier replaces --eval-inception-weights; set only one")
    if config.sampler == "vmf" and (not config.prior_checkpoint or config.concentration is None):
        raise ConfigError("--sampler vmf needs --prior-checkpoint (a gan.classifier checkpoint) and --concentration")
    if config.sampler in VMF_SAMPLERS and config.concentration is None:
        raise ConfigError(f"--sampler {config.sampler} needs --concentration (the control: the vmf runs' kappa)")
    return config


def parse_config(argv: list[str] | None = None) -> GANConfig:
    """Build a validated GANConfig from command-line arguments (``--preset``, ``--config FILE``, flags).

    Args:
        argv: arguments without the program name; None reads ``sys.argv[1:]``.

    Raises:
        ConfigError: unknown flags or config-file keys, bad values (naming the flag).
    """
    return validate(parse_options(GANConfig, argv, prog="gan/train.py",
                                  description="Train a conditional SNGAN on CIFAR-10.", presets=PRESETS))
