"""The SNGAN training config: one dataclass, presets, and the command-line/config-file parser; and the configs of
the other gan commands (classifier, fidelity, figures, table5, report).

No torch here: ``--help`` and a mistyped flag of every gan command are answered from this module
(``common.config.answer_early``) before the command imports torch; the commands re-export their config
(``gan.fidelity.FidelityConfig`` is ``gan.config.FidelityConfig``).

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

from common.classifier_config import OPTIMIZERS, ClassifierSettings, head_option
from common.config import GLOSSARY, ConfigError, check_choice, check_positive, flag, option
from common.config import SCHEDULES as CLASSIFIER_SCHEDULES
from common.config import parse_config as parse_options
from eval.settings import INCEPTION_WEIGHTS_FILE, REFERENCE_SPLITS

__all__ = [
    "GANConfig",
    "PRESETS",
    "MAY_CHANGE",
    "parse_config",
    "validate",
    "SAMPLERS",
    "VMF_SAMPLERS",
    "UPSAMPLE_MODES",
    "LOSS_NAMES",
    "NOISE_ORDER",
    "TRAIN_PROG",
    "TRAIN_DESCRIPTION",
    "ClassifierConfig",
    "CLASSIFIER_PRESETS",
    "MIXED_PRECISION",
    "FidelityConfig",
    "FiguresConfig",
    "Table5Config",
    "ReportConfig",
]

SCHEDULES = ("linear", "constant")
SAMPLERS = ("gaussian", "vmf", "sphere", "vmf-orthogonal")
"""The latent noises of ``gan.latent.build_latent_sampler`` (also ``gan.latent.SAMPLERS``)."""
VMF_SAMPLERS = ("vmf", "vmf-orthogonal")
UPSAMPLE_MODES = ("nearest", "bilinear")
"""The generator's 2x up-sampling (also ``gan.layers.UPSAMPLE_MODES``)."""
LOSS_NAMES = ("hinge", "nonsaturating")
"""The names of ``gan.losses.LOSSES`` (a test checks that the two agree)."""
NOISE_ORDER = ("gaussian", "vmf", "sphere", "vmf-orthogonal")
"""The paper's comparison (Gaussian vs vMF), the sphere ablation, and the class-clustered control (the order of the
tables; also ``gan.report.NOISE_ORDER``)."""
TRAIN_PROG = "gan/train.py"
TRAIN_DESCRIPTION = "Train a conditional SNGAN on CIFAR-10."


@dataclass
class GANConfig:
    """Everything that defines a GAN run. Batch sizes are global: each process takes batch / num_processes."""

    out: str = option("runs/sngan", "run folder: config.json, last.pt, generator.pt, metrics.jsonl, samples/")
    data: str | None = option(None, "CIFAR-10 .npz (offline); default: download with torchvision")
    sampler: str = option(
        "gaussian", "latent noise (vmf-orthogonal: vMF around a fixed orthogonal head)", choices=SAMPLERS
    )
    prior_checkpoint: str | None = option(None, "vmf: the classifier checkpoint whose head is the prior")
    concentration: float | None = option(None, "vmf, vmf-orthogonal: kappa of the class-conditional vMF")
    latent_dim: int = option(128, "d of the noise z; for vmf, the classifier's penultimate width")
    g_channels: int = option(256, "generator width (256: the 4.3M-parameter SNGAN)")
    d_channels: int = option(128, "discriminator width (128: the 1.1M-parameter projection discriminator)")
    num_classes: int = option(10, "classes of the conditional batch norm and the projection")
    upsample: str = option(
        "nearest", "2x up-sampling in the generator: nearest (chainer) or bilinear (Mimicry)", choices=UPSAMPLE_MODES
    )
    loss: str = option("hinge", "adversarial loss", choices=LOSS_NAMES)
    iterations: int = option(50_000, "generator updates: the run's length")
    n_dis: int = option(5, "discriminator updates per generator update")
    batch_size_d: int = option(64, "real and fake images per discriminator step (global)")
    batch_size_g: int = option(128, "fake images per generator step (global)")
    learning_rate_g: float = option(2e-4, "Adam step size of the generator")
    learning_rate_d: float = option(2e-4, "Adam step size of the discriminator")
    beta1: float = option(0.0, "Adam beta1")
    beta2: float = option(0.9, "Adam beta2")
    schedule: str = option(
        "linear", "learning-rate schedule: linear (to 0 at --iterations) or constant", choices=SCHEDULES
    )
    ema_decay: float = option(0.0, "EMA of the generator's weights; 0 disables (e.g. 0.9999)")
    mixed_precision: str | None = option(
        None, "no, fp16 or bf16; default: what accelerate launch says", choices=(None, "no", "fp16", "bf16")
    )
    seed: int = option(0, "base seed; each process adds its rank")
    threads: int | None = option(None, GLOSSARY["threads"])
    cpu: bool = option(False, "use the CPU even when a GPU is present")
    progress: bool = option(True, "show a progress bar")
    checkpoint_every: int = option(5_000, "iterations between checkpoints (last.pt and generator.pt)")
    sample_every: int = option(5_000, "iterations between sample grids (fixed noise, one row per class)")
    eval_every: int = option(0, "IS/FID through eval.fidelity every this many iterations; 0 disables")
    eval_num_samples: int = option(5_000, "generated images per periodic IS/FID")
    eval_reference: str | None = option(
        None, "cifar10-train, cifar10-test or PATH.npz; default: --data, else cifar10-train"
    )
    eval_inception_weights: str | None = option(None, "local copy of torch-fidelity's Inception weights (offline)")
    eval_classifier: str | None = option(None, "score with this gan.classifier checkpoint instead of Inception")
    log_every: int = option(100, "iterations between metrics lines")
    resume: bool = option(False, "continue the run in --out exactly from its last checkpoint")
    stop_after: int | None = option(None, "stop (with a checkpoint) after this iteration; continue with --resume")


MAY_CHANGE = (
    "checkpoint_every",
    "sample_every",
    "eval_every",
    "eval_num_samples",
    "eval_reference",
    "eval_inception_weights",
    "eval_classifier",
    "log_every",
    "mixed_precision",
)
"""Keys that may differ between a run and its resumption besides common.run.INVOCATION_KEYS: they do not change
the trained weights (mixed precision does change the arithmetic; the precision in effect is in every checkpoint)."""

PRESETS = {
    "chainer": dict(iterations=50_000, n_dis=5, batch_size_d=64, batch_size_g=128, upsample="nearest"),
    "mimicry": dict(iterations=100_000, n_dis=5, batch_size_d=64, batch_size_g=64, upsample="bilinear"),
    "small": dict(
        out="runs/sngan-small",
        latent_dim=64,
        g_channels=32,
        d_channels=32,
        iterations=3000,
        n_dis=2,
        batch_size_d=32,
        batch_size_g=32,
        checkpoint_every=250,
        sample_every=500,
        log_every=50,
    ),
    "tiny": dict(
        out="runs/sngan-tiny",
        latent_dim=64,
        g_channels=16,
        d_channels=16,
        iterations=200,
        n_dis=2,
        batch_size_d=16,
        batch_size_g=32,
        checkpoint_every=100,
        sample_every=50,
        log_every=10,
    ),
}
"""``chainer`` and ``mimicry``: the two published protocols (module docstring). ``small``: narrow models, n_dis 2,
for one CPU core (docs/gan.md). ``tiny``: small widths, n_dis 2 and 200 iterations: a smoke run of minutes. The CPU
presets' latent_dim matches the penultimate width of ``python -m gan.classifier --preset tiny`` (WRN-10-1: 64), so
``--sampler vmf`` works with that classifier."""

POSITIVE = (
    "latent_dim",
    "g_channels",
    "d_channels",
    "num_classes",
    "iterations",
    "n_dis",
    "batch_size_d",
    "batch_size_g",
    "checkpoint_every",
    "sample_every",
    "log_every",
    "eval_num_samples",
    "learning_rate_g",
    "learning_rate_d",
)


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
    return validate(parse_options(GANConfig, argv, prog=TRAIN_PROG, description=TRAIN_DESCRIPTION, presets=PRESETS))


MIXED_PRECISION = ("no", "fp16", "bf16")
"""gan.classifier's ``--mixed-precision`` values (accelerate's)."""
CLASSIFIER_PRESETS = {"tiny": {"depth": 10, "width": 1, "epochs": 1, "batch_size": 64}}
"""gan.classifier's presets (``gan.classifier.PRESETS``). ``tiny``: WRN-10-1 (penultimate width 64), one epoch: a
CPU smoke run and the prior of the tiny GAN preset."""


@dataclass
class ClassifierConfig(ClassifierSettings):
    """Settings of one classifier run (saved in config.json and in the checkpoint)."""

    data: str | None = option(None, "CIFAR-10 .npz file (None: download with torchvision)")
    out: str = option("runs/wrn-40-2", "run folder: config.json, last.pt, metrics.jsonl, classifier.pt")
    depth: int = option(40, "WRN depth (6n + 4)")
    width: int = option(2, "WRN widening factor k (penultimate width 64 k)")
    architecture: str | None = option(
        None,
        "an eval.classifiers architecture (e.g. convnet-32) instead of the WRN of --depth and --width (None: the WRN)",
    )
    head: str = head_option()
    epochs: int = option(200, "training epochs")
    optimizer: str = option("sgd", "adam, or sgd with nesterov momentum", choices=OPTIMIZERS)
    learning_rate: float = option(0.1, "initial step size")
    weight_decay: float = option(5e-4, "L2 weight decay")
    schedule: str = option(
        "cosine",
        "learning-rate schedule: constant, cosine (per step, to 0), linear, or step (x0.1 after each milestone epoch)",
        choices=CLASSIFIER_SCHEDULES,
    )
    augment: bool = option(True, "random crop (pad 4, reflect) and horizontal flip of every training batch")
    mixed_precision: str = option("no", "accelerate's mixed precision", choices=MIXED_PRECISION)


@dataclass
class FidelityConfig:
    """The options of ``python -m gan.fidelity``."""

    run: str = option(help="run folder written by gan/train.py")
    num_samples: int = option(5000, "generated images")
    reference: str = option(
        "cifar10-train", "cifar10-train, cifar10-test (torchvision download) or PATH.npz; none for IS only"
    )
    reference_split: str | None = option(None, "split of an .npz reference (None: train)", choices=REFERENCE_SPLITS)
    inception_weights: str | None = option(None, f"local copy of {INCEPTION_WEIGHTS_FILE}")
    classifier_checkpoint: str | None = option(
        None, "score with this gan.classifier checkpoint instead of Inception (offline, CPU)"
    )
    batch_size: int = option(64, "images per batch of the generator and the feature extractor")
    seed: int = option(0, "seeds labels, latents and the IS splits")
    cpu: bool = option(False, "run on the CPU even if a GPU is available")
    out: str | None = option(None, "JSON path (None: RUN/fidelity-<extractor>-n<N>.json)")
    cache: bool = option(True, "cache the reference statistics (--no-cache: compute them every time)")
    verbose: bool = option(False, "torch-fidelity's progress output")
    intra_fid: bool = option(False, "also intra-class FID against the reference split, in the same feature extractor")
    gan_test_classifier: str | None = option(
        None, "also GAN-test: accuracy of this gan.classifier checkpoint on the generated images"
    )
    gan_train: str | None = option(
        None,
        "also GAN-train: train a classifier of this architecture (wrn-D-W, "
        "convnet-W) on generated images and score the reference file's test "
        "split",
    )
    gan_train_samples: int | None = option(
        None, "generated training images for --gan-train (None: the reference's training-set size)"
    )
    gan_train_epochs: int = option(10, "epochs of the --gan-train classifier")
    gan_train_batch_size: int = option(128, "batch of the --gan-train classifier")
    gan_train_no_augmentation: bool = option(False, "train the --gan-train classifier without random crops and flips")


@dataclass
class FiguresConfig:
    """The options of ``python -m gan.figures``."""

    run: str = option(help="run folder written by gan/train.py")
    out: str | None = option(None, "output folder (None: RUN/figures)")
    seed: int = option(0, "seeds the noise of both grids")
    per_class: int = option(10, "samples per class in the sample grid")
    steps: int = option(10, "images per interpolation row")
    cpu: bool = option(False, "run on the CPU even if a GPU is available")


@dataclass
class Table5Config:
    """The options of ``python -m gan.table5``."""

    preset: str = option("chainer", "training protocol (gan/config.py's presets)", choices=tuple(sorted(PRESETS)))
    samplers: tuple[str, ...] = option(
        NOISE_ORDER, "latent noises (vmf-orthogonal: the control, at the vmf runs' kappa)", choices=NOISE_ORDER
    )
    seeds: tuple[int, ...] = option((0, 1, 2), "training seeds (one run each)")
    runs_dir: str | None = option(None, "folder of the runs RUNS/<sampler>-s<seed> (None: runs/table5-<preset>)")
    data: str | None = option(None, "CIFAR-10 .npz (None: torchvision download)")
    prior_checkpoint: str | None = option(None, "gan.classifier checkpoint: the vMF prior")
    concentration: float | None = option(None, "kappa of the vMF noise (None: the checkpoint's kappa MLE)")
    num_samples: tuple[int, ...] = option((5000, 50000), "generated images per score")
    reference: str | None = option(None, "FID reference: cifar10-train or PATH.npz (None: --data)")
    inception_weights: str | None = option(None, "local copy of torch-fidelity's Inception weights")
    classifier_checkpoint: str | None = option(
        None, "score with this gan.classifier instead of Inception (CPU scale; not comparable)"
    )
    launcher: str = option("python", 'the training command\'s launcher, e.g. "accelerate launch --num_processes 8"')
    threads: int | None = option(None, "torch threads per training process (None: its default)")
    eval_every: int = option(0, "periodic IS/FID during training every N iterations (0: off)")
    eval_num_samples: int = option(1000, "generated images of each periodic IS/FID")
    round_robin: int = option(0, "advance the runs this many iterations at a time, in turn (0: one run after another)")
    cpu: bool = option(False, "score on the CPU")
    fidelity_batch_size: int = option(200, "images per batch when scoring")
    results: str | None = option(None, "markdown file for the table (section --section)")
    section: str | None = option(None, "section name in --results (None: gan-table5-<preset>)")
    report_only: bool = option(False, "only write the table from existing runs")
    plot: str | None = option(
        None,
        "also draw every run's scores and the paired differences (the scoring setting with most runs) into this PNG",
    )
    keep: str | None = option(
        None,
        "copy every scored run's config, metrics, scores and last sample grid to "
        "KEEP/<run> (no checkpoints); report from there later with --runs-dir KEEP "
        "--report-only",
    )
    intra_fid: bool = option(False, "also score intra-class FID (gan.fidelity --intra-fid)")
    gan_test_classifier: str | None = option(
        None, "also score GAN-test with this classifier (gan.fidelity --gan-test-classifier)"
    )
    gan_train: str | None = option(
        None, "also score GAN-train with a classifier of this architecture (e.g. wrn-10-1, convnet-32)"
    )
    gan_train_samples: int | None = option(
        None, "generated images GAN-train trains on (None: the real training set's size)"
    )
    gan_train_epochs: int = option(10, "epochs of the GAN-train classifier")
    dry_run: bool = option(False, "print the commands instead of running them")


@dataclass
class ReportConfig:
    """The options of ``python -m gan.report``."""

    run_dirs: tuple[str, ...] = option(help="run folders with fidelity-*.json files", positional=True)
    out: str | None = option(None, "markdown file to write the section into (None: print only)")
    section: str = option("gan-fidelity", "section name of the markers in --out")
    title: str = option("SNGAN on CIFAR-10: Gaussian vs vMF vs sphere noise", "heading of the section")
