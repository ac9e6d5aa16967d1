"""The SNGAN training config: one dataclass, presets, and the command-line/config-file parser.

Precedence, lowest to highest: dataclass defaults (the reference protocol of Miyato & Koyama 2018, the same
as ``--preset chainer``) < ``--preset`` < ``--config FILE`` < explicit ``--key value`` flags.

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
import json
from dataclasses import dataclass

from common.cli import ArgumentParser
from gan.latent import SAMPLERS
from gan.layers import UPSAMPLE_MODES
from gan.losses import LOSSES

__all__ = ["GANConfig", "PRESETS", "RESUME_IGNORED_KEYS", "parse_config", "learning_rate_factor", "validate"]


@dataclass
class GANConfig:
    """Everything that defines a GAN run. Batch sizes are global: each process takes batch / num_processes."""

    out: str = "runs/sngan"  # run folder: config.json, checkpoints/, generator.pt, metrics.jsonl, samples/
    data: str | None = None  # CIFAR-10 .npz (offline) or None to download with torchvision
    # latent noise
    sampler: str = "gaussian"  # gaussian | vmf | sphere | vmf-orthogonal (vMF around a fixed orthogonal head)
    prior_checkpoint: str | None = None  # vmf: classifier checkpoint from gan.classifier
    concentration: float | None = None  # vmf, vmf-orthogonal: kappa of the class-conditional vMF
    latent_dim: int = 128  # d of the noise z; for vmf, the classifier's penultimate width
    # models
    g_channels: int = 256  # generator width (256: the 4.3M-parameter SNGAN)
    d_channels: int = 128  # discriminator width (128: the 1.1M-parameter projection discriminator)
    num_classes: int = 10  # classes of the conditional BN and the projection
    upsample: str = "nearest"  # 2x up-sampling in the generator: nearest (chainer) | bilinear (Mimicry)
    # optimization (reference protocol)
    loss: str = "hinge"  # hinge | nonsaturating
    iterations: int = 50_000  # generator updates
    n_dis: int = 5  # discriminator updates per generator update
    batch_size_d: int = 64  # real and fake images per discriminator step (global)
    batch_size_g: int = 128  # fake images per generator step (global)
    lr_g: float = 2e-4  # Adam learning rate of the generator
    lr_d: float = 2e-4  # Adam learning rate of the discriminator
    beta1: float = 0.0  # Adam beta1
    beta2: float = 0.9  # Adam beta2
    lr_decay: str = "linear"  # linear (to 0 at `iterations`) | none
    ema_decay: float = 0.0  # EMA of generator weights; 0 disables (e.g. 0.9999 to enable)
    mixed_precision: str | None = None  # no | fp16 | bf16; None: what accelerate launch / accelerate config say
    seed: int = 0  # base seed; each process adds its rank
    threads: int | None = None  # torch CPU threads (None: torch's default; 1 suits a busy shared CPU)
    # bookkeeping (may change when resuming)
    checkpoint_every: int = 5_000  # iterations between checkpoints (save_state)
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk
    sample_every: int = 5_000  # iterations between sample grids (fixed noise, one row per class)
    eval_every: int = 0  # IS/FID through eval.fidelity every N iterations; 0 disables
    eval_num_samples: int = 5_000  # generated images per periodic IS/FID
    eval_reference: str | None = None  # cifar10-train | cifar10-test | PATH.npz; None: --data if given, else cifar10-train
    eval_inception_weights: str | None = None  # local copy of torch-fidelity's Inception weights (offline)
    eval_classifier: str | None = None  # score with this gan.classifier checkpoint instead of Inception (CPU, offline)
    log_every: int = 100  # iterations between metrics lines
    resume: bool = False  # continue the run in --out from its latest checkpoint
    stop_at: int = 0  # stop (with a checkpoint) once this iteration is reached; 0: run to `iterations`


RESUME_IGNORED_KEYS = (
    "out", "resume", "stop_at", "threads", "checkpoint_every", "keep_checkpoints", "sample_every", "eval_every",
    "eval_num_samples", "eval_reference", "eval_inception_weights", "eval_classifier", "log_every", "mixed_precision",
)
"""Keys that may differ between a run and its resumption: they do not change the trained weights (mixed
precision does change the arithmetic; the precision in effect is recorded in every checkpoint's trainer.pt)."""

ADDED_KEYS = {"upsample": "nearest"}
"""Keys added after runs were already written, with the value that reproduces those runs (for --resume)."""

INVOCATION_KEYS = ("resume", "stop_at")
"""Keys of one invocation, not of the run: not taken over from a run's config.json passed as --config."""

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
for one CPU core in about half an hour; with the project's own classifier as feature extractor (on the offline
CIFAR subset), FID on 1000 samples stops improving after 1,000-2,000 of its 3,000 iterations (RESULTS.md). ``tiny``: small widths, n_dis 2 and 200
iterations: a smoke run of minutes. The CPU presets' latent_dim matches the penultimate width of
``python -m gan.classifier --preset tiny`` (WRN-10-1: 64), so ``--sampler vmf`` works with that classifier."""

CHOICES = {"sampler": SAMPLERS, "loss": tuple(LOSSES), "lr_decay": ("linear", "none"),
           "mixed_precision": (None, "no", "fp16", "bf16"), "upsample": UPSAMPLE_MODES}
POSITIVE_INTS = ("latent_dim", "g_channels", "d_channels", "num_classes", "iterations", "n_dis", "batch_size_d",
                 "batch_size_g", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every",
                 "eval_num_samples")


def validate(config: GANConfig) -> GANConfig:
    """Check values; raise ValueError naming the bad key. Returns the config."""
    for key, choices in CHOICES.items():
        if getattr(config, key) not in choices:
            raise ValueError(f"{key} must be one of {list(choices)}, got {getattr(config, key)!r}")
    for key in POSITIVE_INTS:
        value = getattr(config, key)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
    for key in ("lr_g", "lr_d"):
        if not getattr(config, key) > 0:
            raise ValueError(f"{key} must be > 0, got {getattr(config, key)!r}")
    for key in ("beta1", "beta2", "ema_decay"):
        if not 0.0 <= getattr(config, key) < 1.0:
            raise ValueError(f"{key} must lie in [0, 1), got {getattr(config, key)!r}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {config.threads!r}")
    if config.eval_every < 0 or config.stop_at < 0:
        raise ValueError(f"eval_every and stop_at must be >= 0, got {config.eval_every}, {config.stop_at}")
    if config.eval_classifier and config.eval_inception_weights:
        raise ValueError("eval_classifier replaces eval_inception_weights; set only one")
    if config.sampler == "vmf" and (not config.prior_checkpoint or config.concentration is None):
        raise ValueError("sampler 'vmf' needs --prior-checkpoint (a gan.classifier checkpoint) and --concentration")
    if config.sampler == "vmf-orthogonal" and config.concentration is None:
        raise ValueError("sampler 'vmf-orthogonal' needs --concentration (for the control: the vmf runs' kappa)")
    return config


def _read_config_file(path: str) -> dict:
    """Read a JSON config: a flat {key: value} dict, or a run folder's config.json ({"kind", "config"} and
    possibly the "command" that started the run)."""
    with open(path) as stream:
        payload = json.load(stream)
    if isinstance(payload, dict) and {"kind", "config"} <= set(payload) <= {"kind", "config", "command"}:
        # A run's config.json: keep what defines the run, not how its first invocation was told to stop.
        payload = {key: value for key, value in payload["config"].items() if key not in INVOCATION_KEYS}
    if not isinstance(payload, dict):
        raise ValueError(f"config file {path!r} must hold a JSON object of config keys")
    known = {field.name for field in dataclasses.fields(GANConfig)}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise ValueError(f"config file {path!r} has unknown keys {unknown}; valid keys: {sorted(known)}")
    return payload


def build_parser() -> ArgumentParser:
    """The command-line parser: ``--preset``, ``--config`` and one ``--key`` per GANConfig field."""
    from common.runs import add_dataclass_arguments

    parser = ArgumentParser(prog="gan/train.py", description="Train a conditional SNGAN on CIFAR-10.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="named set of defaults: chainer (the defaults), mimicry, small (CPU), tiny (smoke)")
    parser.add_argument("--config", default=None, help="JSON file of config keys (or a run's config.json)")
    return add_dataclass_arguments(parser, GANConfig)


def parse_config(argv: list[str] | None = None) -> GANConfig:
    """Build a validated GANConfig from command-line arguments.

    Args:
        argv: arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        the config.

    Raises:
        ValueError: unknown flags or config-file keys, bad values (naming the key).
    """
    from common.runs import config_from_args

    parser = build_parser()
    early, _ = parser.parse_known_args(argv)
    defaults = dict(PRESETS[early.preset]) if early.preset else {}
    if early.config:
        defaults.update(_read_config_file(early.config))
    parser.set_defaults(**defaults)
    return validate(config_from_args(GANConfig, parser.parse_args(argv)))


def learning_rate_factor(config: GANConfig, iteration: int) -> float:
    """Multiplier of the base learning rates during generator iteration ``iteration`` (0-based).

    Linear decay: 1 at iteration 0, ``1 - iteration / iterations``, exactly 0 at ``iterations``. It depends only
    on the iteration counter, so it is the same on any number of processes.
    """
    if config.lr_decay == "none":
        return 1.0
    return max(0.0, 1.0 - iteration / config.iterations)
