"""The paper's Table 4 on MNIST: HVAE, HVAE-C and HVAE-L for several latent dimensions and seeds, and ablations.

    python -m vae.experiment --latent-dims 3 5 10 20 --seeds 0 1 2 --data PATH/mnist.npz [--quick] [--out DIR]
        [--models hvae hvae-c hvae-l] [--encoder-ablation-dims 5 10] [--no-ablation] [--results-md RESULTS.md]

For every seed and d: train the prior-source classifier (learned head) and, for the head ablation (first seed),
classifiers with fixed heads (random, orthogonal); train the listed models (HVAE-L on the learned-head prior),
with ``--encoder-ablation-dims`` also HVAE-C / HVAE-L whose encoder sees the label (``--encoder-ablation-only``:
only those, for splitting the work across runs), and HVAE-L with each fixed-head prior; score every VAE with
``vae.loglik`` (importance sampling on the test set binarized with seed 0); draw the figures. Writes
``OUT/results.json``, ``OUT/RESULTS.md`` (mean ± sd over seeds, differences against their standard error, the exact
command; see :mod:`vae.report`) and one run folder per model, ``OUT/seed<S>/d<d>/<name>``. Re-running the same
command resumes unfinished runs and reuses finished ones.

``--quick`` is a few-minute smoke version (see ``QUICK``): 5,000 training images, 2 epochs, 50 importance samples
on 500 test images and the ablation at the first d only. Without ``--data`` it reads the MNIST subset that ships
in the repository (``data/mnist-quick.npz``), so it runs offline. Its numbers are far from converged; it checks
the pipeline.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from vae.config import ExperimentConfig

    answer_early(ExperimentConfig, prog="python -m vae.experiment", description=__doc__.split("\n\n")[0])

import json
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from common.cli import run_cli, set_threads
from common.config import ConfigError, check_positive, flag, parse_config
from common.data import QUICK_MNIST, TEST_BINARIZATION_SEED, binarize_fixed, load_mnist
from common.grid import grid, run_unit, write_rows
from common.markdown import write_section
from common.run import LAST_CHECKPOINT, atomic_write_text, load_checkpoint, read_config, write_config
from vae.classifier import CHECKPOINT_NAME, ClassifierConfig, train_classifier
from vae.config import MODEL_KINDS, ExperimentConfig
from vae.figures import make_run_figures
from vae.loglik import score_run
from vae.report import format_results, format_run_page
from vae.train import TrainConfig, train

QUICK = {
    "epochs": 2,
    "patience": 2,
    "classifier_epochs": 1,
    "num_validation": 1000,
    "train_subset": 5000,
    "validation_subset": None,
    "num_samples": 50,
    "num_test": 500,
}
"""Settings that ``--quick`` imposes (a pipeline check in a few minutes, not converged numbers)."""


def effective_config(config: ExperimentConfig) -> ExperimentConfig:
    """Apply ``QUICK`` when ``config.quick``; check the values; fill ``ablation_latent_dims``."""
    if config.quick:
        config = replace(config, **QUICK, data=config.data or str(QUICK_MNIST))
    if config.out is None:
        config = replace(config, out="runs/table4-quick" if config.quick else "runs/table4")
    if not config.latent_dims or any(d < 2 for d in config.latent_dims):
        raise ConfigError(f"{flag('latent_dims')} must be integers >= 2, got {config.latent_dims}")
    check_positive(config, "num_samples", "epochs", "patience", "classifier_epochs")
    check_positive(config, "num_test", allow_none=True)
    unknown_models = [m for m in config.models if m not in MODEL_KINDS]
    if not config.models or unknown_models:
        raise ConfigError(f"--models must be among {', '.join(MODEL_KINDS)}, got {config.models}")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"--seeds must be distinct integers, got {config.seeds}")
    if config.encoder_ablation_dims and [d for d in config.encoder_ablation_dims if d not in config.latent_dims]:
        raise ConfigError(
            f"{flag('encoder_ablation_dims')} {config.encoder_ablation_dims} must be among "
            f"{flag('latent_dims')} {config.latent_dims}"
        )
    if config.encoder_ablation_only and (
        set(config.encoder_ablation_dims or ()) != set(config.latent_dims)
        or not {"hvae-c", "hvae-l"} & set(config.models)
    ):
        raise ConfigError(
            f"{flag('encoder_ablation_only')} needs {flag('encoder_ablation_dims')} equal to "
            f"{flag('latent_dims')} and hvae-c or hvae-l among --models, got encoder_ablation_dims "
            f"{config.encoder_ablation_dims}, latent_dims {config.latent_dims}, models {config.models}"
        )
    if config.ablation_latent_dims is None:
        config = replace(config, ablation_latent_dims=config.latent_dims[:1] if config.quick else config.latent_dims)
    unknown = [d for d in config.ablation_latent_dims if d not in config.latent_dims]
    if unknown:
        raise ConfigError(
            f"{flag('ablation_latent_dims')} {unknown} are not among {flag('latent_dims')} {config.latent_dims}"
        )
    return config


def _read_classifier(folder: Path) -> dict:
    saved = load_checkpoint(folder / CHECKPOINT_NAME, ("test_accuracy",), what="vae.classifier checkpoint")
    return {"checkpoint": str(folder / CHECKPOINT_NAME), "test_accuracy": float(saved["test_accuracy"])}


def _classifier(config: ExperimentConfig, data, seed: int, latent_dim: int, head: str, log) -> dict:
    out = Path(config.out) / f"seed{seed}" / f"d{latent_dim}" / f"classifier-{head}"
    settings = ClassifierConfig(
        latent_dim=latent_dim,
        head=head,
        data=config.data,
        out=str(out),
        epochs=config.classifier_epochs,
        seed=seed,
        num_validation=config.num_validation,
        train_subset=config.train_subset,
    )
    return run_unit(settings, train_classifier, finished=CHECKPOINT_NAME, read=_read_classifier, data=data, log=log)


def _vae(
    config: ExperimentConfig,
    data,
    seed: int,
    name: str,
    model: str,
    latent_dim: int,
    classifier: str | None,
    encoder_sees_label: bool,
    log,
) -> dict:
    out = Path(config.out) / f"seed{seed}" / f"d{latent_dim}" / name
    settings = TrainConfig(
        model=model,
        latent_dim=latent_dim,
        data=config.data,
        out=str(out),
        classifier=classifier,
        prior_concentration=config.prior_concentration,
        epochs=config.epochs,
        patience=config.patience,
        kl_warmup_epochs=config.kl_warmup_epochs,
        seed=seed,
        num_validation=config.num_validation,
        encoder_sees_label=encoder_sees_label,
        train_subset=config.train_subset,
        validation_subset=config.validation_subset,
        progress=config.progress,
        figures=False,
    )
    # A finished VAE resumes to "nothing to do": train() knows when early stopping or the epoch budget ended it.
    # Its epoch lines name the run ("hvae-l-random"), not only its model ("hvae-l d=3").
    summary = run_unit(
        settings, train, finished=lambda folder: False, data=data, log=lambda line: log(f"  {name}: {line}")
    )
    if summary["stopped"] == "non-finite loss":
        raise RuntimeError(f"{out}: training stopped on a non-finite loss; see {out / 'metrics.jsonl'}")
    return summary


def _evaluate(config: ExperimentConfig, run_dir: Path, images, labels, seed: int, log) -> tuple[dict, bool]:
    """The run's test-set scores, and whether they were read back from an earlier pass (not computed now)."""
    path = run_dir / f"loglik-K{config.num_samples}-n{images.shape[0]}.json"
    if path.is_file() and (run_dir / LAST_CHECKPOINT).stat().st_mtime < path.stat().st_mtime:
        return json.loads(path.read_text()), True
    log(f"  scoring {run_dir} on {images.shape[0]} test images, K = {config.num_samples}")
    result = score_run(run_dir, images, labels, config.num_samples, seed, progress=config.progress)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return result, False


def run_experiment(config: ExperimentConfig, command: str, log=print) -> dict:
    """Train and evaluate everything; write results.json and RESULTS.md into ``config.out``.

    Args:
        config: the settings (``--quick`` already applied or not; applied here).
        command: the command line to record.
        log: progress lines.

    Returns:
        the results dict (also in OUT/results.json).
    """
    config = effective_config(config)
    set_threads(config.threads)
    out = Path(config.out)
    data = load_mnist(config.data)  # before anything is written: a bad --data leaves the folder as it was
    if (out / "config.json").is_file():
        kind, saved = read_config(out)
        if kind == "vae-experiment" and saved != json.loads(json.dumps(asdict(config))):
            log(f"note: {out} holds an experiment with other settings; finished runs inside it are reused")
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, config, kind="vae-experiment")
    test_images = binarize_fixed(data.x_test, seed=TEST_BINARIZATION_SEED)
    test_labels = data.y_test
    if config.num_test is not None:
        test_images, test_labels = test_images[: config.num_test], test_labels[: config.num_test]
    started = time.perf_counter()
    results = {"command": command, "config": asdict(config), "runs": [], "reused": []}
    figures = []
    for unit in grid(seed=config.seeds, latent_dim=config.latent_dims):  # seeds outermost
        seed, latent_dim = unit["seed"], unit["latent_dim"]
        for entry in _plan(config, data, seed, latent_dim, log):
            log(f"[{time.perf_counter() - started:.0f}s] seed {seed} d={latent_dim} {entry['name']}")
            summary = _vae(
                config,
                data,
                seed,
                entry["name"],
                entry["model"],
                latent_dim,
                entry["classifier"],
                entry["encoder_sees_label"],
                log,
            )
            run_dir = Path(summary["run_dir"])
            scores, scores_reused = _evaluate(config, run_dir, test_images, test_labels, seed, log)
            if summary["trained_epochs"] == 0 and scores_reused:
                results["reused"].append(f"seed{seed}/d{latent_dim}/{entry['name']}")
            if config.figures and entry["head"] in (None, "linear") and seed == config.seeds[0]:
                log(f"  drawing the figures of {run_dir}")
                figures += [str(path.relative_to(out)) for path in make_run_figures(run_dir, data=data, seed=seed)]
            results["runs"].append(
                {
                    "name": entry["name"],
                    "model": entry["model"],
                    "latent_dim": latent_dim,
                    "seed": seed,
                    "head": entry["head"],
                    "encoder_sees_label": entry["encoder_sees_label"],
                    "run_dir": str(run_dir),
                    "classifier_test_accuracy": entry["classifier_test_accuracy"],
                    **{k: summary[k] for k in ("epochs", "best_epoch", "stopped", "best_validation_elbo")},
                    **{
                        k: scores.get(k)
                        for k in (
                            "log_px",
                            "log_pxy",
                            "log_px_given_y",
                            "elbo",
                            "num_examples",
                            "num_samples",
                            "seconds",
                        )
                    },
                }
            )
            write_rows(out / "results.json", results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_rows(out / "results.json", results)
    atomic_write_text(out / "RESULTS.md", format_run_page(results, figures))
    if config.results_md:
        write_section(config.results_md, config.section, format_results(results))
    log(f"wrote {out / 'RESULTS.md'} and {out / 'results.json'} in {results['seconds']:.0f}s")
    return results


def _plan(config: ExperimentConfig, data, seed: int, latent_dim: int, log) -> list[dict]:
    """The VAEs of one (seed, d): the table's models, the encoder ablation, the head ablation."""
    heads = ["linear"] if "hvae-l" in config.models else []
    if (
        config.ablation
        and not config.encoder_ablation_only
        and seed == config.seeds[0]
        and latent_dim in config.ablation_latent_dims
    ):
        heads += list(config.ablation_heads)
    classifiers = {head: _classifier(config, data, seed, latent_dim, head, log) for head in heads}
    plan = []

    def add(name, model, head=None, encoder_sees_label=False):
        plan.append(
            {
                "name": name,
                "model": model,
                "head": head,
                "encoder_sees_label": encoder_sees_label,
                "classifier": classifiers[head]["checkpoint"] if head else None,
                "classifier_test_accuracy": classifiers[head]["test_accuracy"] if head else None,
            }
        )

    for model in () if config.encoder_ablation_only else config.models:
        add(model, model, "linear" if model == "hvae-l" else None)
    if config.encoder_ablation_dims and latent_dim in config.encoder_ablation_dims:
        for model in ("hvae-c", "hvae-l"):
            if model in config.models:
                add(f"{model}-enc", model, "linear" if model == "hvae-l" else None, encoder_sees_label=True)
    for head in heads[1:]:
        add(f"hvae-l-{head}", "hvae-l", head)
    return plan


def main(argv=None) -> dict:
    """Command-line entry point."""
    argv = sys.argv[1:] if argv is None else list(argv)
    config = parse_config(ExperimentConfig, argv, prog="python -m vae.experiment", description=__doc__.split("\n\n")[0])
    command = "python -m vae.experiment " + " ".join(shlex.quote(a) for a in argv)
    return run_experiment(config, command)


if __name__ == "__main__":
    sys.exit(run_cli(main))
