"""The command lines of the VAE experiment: each command's config dataclass, and the parser of vae.figures.

No torch here: ``python -m vae.<command> --help`` and a mistyped flag are answered from this module
(``common.config.answer_early``) before the command imports torch. The commands re-export their config
(``vae.train.TrainConfig`` is ``vae.config.TrainConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.classifier_config import ClassifierSettings, head_option
from common.config import GLOSSARY, option
from eval.settings import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE

__all__ = [
    "MODEL_KINDS",
    "ClassifierConfig",
    "ExperimentConfig",
    "LoglikConfig",
    "ReportConfig",
    "TrainConfig",
    "FiguresConfig",
]

MODEL_KINDS = ("hvae", "hvae-c", "hvae-l")
"""The VAEs of Table 4 (``vae.models.HypersphericalVAE``'s kinds)."""


@dataclass
class TrainConfig:
    """Settings of one VAE run (saved in config.json and every checkpoint)."""

    model: str = option("hvae", "hvae, hvae-c or hvae-l", choices=MODEL_KINDS)
    latent_dim: int = option(5, "ambient latent dimension d (z on the sphere S^(d-1) of R^d)")
    data: str | None = option(None, "MNIST .npz (None: download with torchvision)")
    out: str = option("runs/vae", "run folder: config.json, last.pt, best.pt, metrics.jsonl, figures")
    classifier: str | None = option(None, "classifier checkpoint providing the HVAE-L prior (vae.classifier)")
    prior_concentration: float = option(5.0, "kappa of the HVAE-L class prior (the paper used 5)")
    encoder_sees_label: bool = option(False, "encoder reads concat(x, onehot y): q(z|x,y) (hvae-c / hvae-l)")
    batch_size: int = option(64, "training batch size")
    learning_rate: float = option(1e-3, "Adam step size")
    epochs: int = option(100, "stop after this many epochs (may grow on --resume)")
    patience: int = option(10, "stop after this many epochs without a better validation ELBO")
    kl_warmup_epochs: float = option(0.0, "KL weight rises linearly from 0 to 1 over this many epochs (0: off)")
    seed: int = option(0, "seeds initialization, shuffling and sampling")
    num_validation: int = option(10_000, "the last N training images are the validation split")
    train_subset: int | None = option(None, "use only the first N training images (quick runs, tests)")
    validation_subset: int | None = option(None, "use only the first N validation images")
    resume: bool = option(False, "continue OUT/last.pt exactly; refuses a different config")
    stop_after: int | None = option(None, "stop after this epoch (continue later with --resume)")
    progress: bool = option(True, "show a progress bar on the main process")
    figures: bool = option(True, "write the PNG figures after training")
    cpu: bool = option(False, "use the CPU even when a GPU is present")
    threads: int | None = option(None, GLOSSARY["threads"])


@dataclass
class ExperimentConfig:
    """Settings of the whole experiment (saved in OUT/config.json)."""

    latent_dims: tuple[int, ...] = option((3, 5, 10, 20), "latent dimensions d (the table columns)")
    data: str | None = option(None, "MNIST .npz (None: download with torchvision; with --quick, the embedded subset)")
    out: str | None = option(None, "experiment folder (default: runs/table4, or runs/table4-quick with --quick)")
    quick: bool = option(False, "few-minute pipeline check (see QUICK); overrides the settings it lists")
    epochs: int = option(100, "at most this many epochs per VAE; early stopping usually ends runs sooner")
    patience: int = option(10, "epochs without a better validation ELBO before stopping")
    kl_warmup_epochs: float = option(0.0, "KL weight rises linearly from 0 to 1 over this many epochs (0: off)")
    prior_concentration: float = option(5.0, "kappa of the HVAE-L prior")
    classifier_epochs: int = option(10, "training epochs of each prior-source classifier")
    models: tuple[str, ...] = option(("hvae", "hvae-c", "hvae-l"), "the table rows", choices=MODEL_KINDS)
    seeds: tuple[int, ...] = option((0,), "one classifier and one VAE per model, d and seed; tables give mean ± sd")
    ablation: bool = option(True, "the fixed-head ablation of HVAE-L (first seed only)")
    ablation_heads: tuple[str, ...] = option(("random", "orthogonal"), "fixed heads compared with the learned one")
    ablation_latent_dims: tuple[int, ...] | None = option(
        None, "d of the head ablation (default: every d; quick: the first d)"
    )
    encoder_ablation_dims: tuple[int, ...] | None = option(
        None, "also HVAE-C / HVAE-L with a q(z|x,y) encoder at these d"
    )
    encoder_ablation_only: bool = option(
        False, "train only those q(z|x,y) variants (the --models rows come from another run)"
    )
    results_md: str | None = option(None, "also write the tables into this markdown file, between section markers")
    section: str = option("vae-table4", "name of that section")
    num_validation: int = option(10_000, "the last N training images are the validation split")
    train_subset: int | None = option(None, "use only the first N training images")
    validation_subset: int | None = option(None, "use only the first N validation images")
    num_samples: int = option(500, "importance samples K per test image")
    num_test: int | None = option(None, "score only the first N test images (None: all 10,000)")
    threads: int | None = option(1, "torch CPU threads; 1 suits these small MLPs and a busy shared CPU")
    figures: bool = option(True, "draw each run's figures (first seed)")
    progress: bool = option(False, "show progress bars")


@dataclass
class LoglikConfig:
    """Settings of one scoring command."""

    run: str = option(help="run folder written by vae.train")
    num_samples: int = option(500, "importance samples K per test image")
    data: str | None = option(None, "MNIST .npz (default: the run's own data file)")
    out: str | None = option(None, "JSON output (default: RUN/loglik-K<K>-n<N>.json)")
    batch_size: int = option(DEFAULT_BATCH_SIZE, "test images per batch")
    chunk_size: int = option(DEFAULT_CHUNK_SIZE, "importance samples per chunk")
    num_test: int | None = option(None, "score only the first N test images")
    seed: int = option(0, "seed of the importance samples")
    cpu: bool = option(False, "use the CPU even when a GPU is present")
    threads: int | None = option(None, GLOSSARY["threads"])


@dataclass
class ReportConfig:
    """Settings of one report command."""

    results: tuple[str, ...] = option(help="results.json files written by vae.experiment", positional=True)
    results_md: str | None = option(None, "also write the tables into this markdown file, between section markers")
    section: str = option("vae-table4", "name of that section")
    plot: str | None = option(None, "also draw log p(x) against d with the paper's points into this PNG file")


@dataclass
class ClassifierConfig(ClassifierSettings):
    """Settings of one classifier run (saved in config.json and in the checkpoint)."""

    latent_dim: int = option(5, "penultimate dimension d: the latent dimension of the HVAE-L it serves")
    head: str = head_option()
    out: str = option("runs/classifier", "run folder: config.json, last.pt, metrics.jsonl, classifier.pt")
    num_validation: int = option(10_000, "the last N training images are the validation split")


@dataclass
class FiguresConfig:
    """The options of ``python -m vae.figures``."""

    run: str = option(help="run folder written by vae.train")
    data: str | None = option(None, "MNIST .npz for the reconstructions (None: the run's own)")
    seed: int = option(0, "seed of the samples")
