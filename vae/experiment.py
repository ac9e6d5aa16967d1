"""The paper's Table 4 on MNIST: HVAE, HVAE-C and HVAE-L for several latent dimensions, plus the fixed-head ablation.

    python -m vae.experiment --latent-dims 3 5 10 20 --data PATH/mnist.npz [--quick] [--out DIR]

For every d: train the prior-source classifier (learned head) and, for the ablation, classifiers with fixed
heads (random, orthogonal); train HVAE, HVAE-C, HVAE-L (learned-head prior) and HVAE-L with each fixed-head
prior; score every VAE with ``eval.loglik`` (importance sampling on the test set binarized with seed 0); draw the
figures. Writes ``OUT/results.json``, ``OUT/RESULTS.md`` (tables + the exact command) and one run folder per model.
Re-running the same command resumes unfinished runs and reuses finished ones.

``--quick`` is a few-minute smoke version (see ``QUICK``): 5,000 training images, 2 epochs, 50 importance samples
on 500 test images and the ablation at the first d only. Without ``--data`` it reads the MNIST subset that ships
in the repository (``data/mnist-quick.npz``), so it runs offline. Its numbers are far from converged; it checks
the pipeline.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional


from common.cli import ArgumentParser, run_cli, set_threads
from common.data import QUICK_MNIST, TEST_BINARIZATION_SEED, binarize_fixed, load_mnist
from common.runs import add_dataclass_arguments, atomic_write_text, config_from_args, load_checkpoint, read_config, write_config
from vae.checkpoints import LAST_CHECKPOINT
from vae.classifier import ClassifierConfig, train_classifier
from vae.figures import make_run_figures
from vae.loglik import score_run
from vae.train import TrainConfig, train

PAPER_LL = {  # Table 4 of the paper (ICLR 2020 version), log-likelihood at d = 3, 5, 10, 20
    "hvae": {3: -135.0, 5: -115.3, 10: -97.7, 20: -95.0},
    "hvae-c": {3: -139.4, 5: -119.6, 10: -98.4, 20: -94.7},
    "hvae-l": {3: -133.0, 5: -114.3, 10: -95.6, 20: -92.8},
}
MODEL_NAMES = {"hvae": "HVAE", "hvae-c": "HVAE-C", "hvae-l": "HVAE-L"}


@dataclass
class ExperimentConfig:
    """Settings of the whole experiment (saved in OUT/config.json)."""

    latent_dims: tuple[int, ...] = (3, 5, 10, 20)  # latent dimensions d (the table columns)
    data: Optional[str] = None  # MNIST .npz (None: download with torchvision; with --quick, the embedded subset)
    out: Optional[str] = None  # run folder (default: runs/table4, or runs/table4-quick with --quick)
    quick: bool = False  # few-minute pipeline check (see QUICK); overrides the settings it lists
    max_epochs: int = 100  # per VAE; early stopping usually ends runs sooner
    patience: int = 10  # epochs without a better validation ELBO before stopping
    kl_warmup_epochs: float = 0.0
    prior_concentration: float = 5.0  # kappa of the HVAE-L prior
    classifier_epochs: int = 10  # training epochs of each prior-source classifier
    ablation_heads: tuple[str, ...] = ("random", "orthogonal")  # fixed heads compared with the learned one
    ablation_latent_dims: Optional[tuple[int, ...]] = None  # default: every d (quick: the first d)
    num_validation: int = 10_000
    train_subset: Optional[int] = None
    validation_subset: Optional[int] = None
    num_samples: int = 500  # importance samples K per test image
    num_test: Optional[int] = None  # score only the first N test images (None: all 10,000)
    seed: int = 0
    threads: Optional[int] = 1  # torch CPU threads; 1 suits these small MLPs and a busy shared CPU
    figures: bool = True
    progress: bool = False


QUICK = dict(max_epochs=2, patience=2, classifier_epochs=1, num_validation=1000, train_subset=5000,
             validation_subset=None, num_samples=50, num_test=500)
"""Settings that ``--quick`` imposes (a pipeline check in a few minutes, not converged numbers)."""


def effective_config(config: ExperimentConfig) -> ExperimentConfig:
    """Apply ``QUICK`` when ``config.quick``; check the values; fill ``ablation_latent_dims``."""
    if config.quick:
        config = replace(config, **QUICK, data=config.data or str(QUICK_MNIST))
    if config.out is None:
        config = replace(config, out="runs/table4-quick" if config.quick else "runs/table4")
    if not config.latent_dims or any(d < 2 for d in config.latent_dims):
        raise ValueError(f"latent_dims must be integers >= 2, got {config.latent_dims}")
    for name in ("num_samples", "max_epochs", "patience", "classifier_epochs"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)}")
    if config.num_test is not None and config.num_test < 1:
        raise ValueError(f"num_test must be a positive integer or None, got {config.num_test}")
    if config.ablation_latent_dims is None:
        config = replace(config, ablation_latent_dims=config.latent_dims[:1] if config.quick else config.latent_dims)
    unknown = [d for d in config.ablation_latent_dims if d not in config.latent_dims]
    if unknown:
        raise ValueError(f"ablation_latent_dims {unknown} are not among latent_dims {config.latent_dims}")
    return config


def _classifier(config: ExperimentConfig, data, latent_dim: int, head: str, log) -> dict:
    out = Path(config.out) / f"d{latent_dim}" / f"classifier-{head}"
    checkpoint = out / "classifier.pt"
    if checkpoint.is_file():
        saved = load_checkpoint(checkpoint, ("test_accuracy",), what="vae.classifier checkpoint")
        return {"checkpoint": str(checkpoint), "test_accuracy": float(saved["test_accuracy"])}
    settings = ClassifierConfig(latent_dim=latent_dim, head=head, data=config.data, out=str(out), epochs=config.classifier_epochs,
                                seed=config.seed, num_validation=config.num_validation,
                                train_subset=config.train_subset)
    return train_classifier(settings, data=data, log=log)


def _vae(config: ExperimentConfig, data, name: str, model: str, latent_dim: int, classifier: str | None, log) -> dict:
    out = Path(config.out) / f"d{latent_dim}" / name
    settings = TrainConfig(
        model=model, latent_dim=latent_dim, data=config.data, out=str(out), classifier=classifier,
        prior_concentration=config.prior_concentration, max_epochs=config.max_epochs, patience=config.patience,
        kl_warmup_epochs=config.kl_warmup_epochs, seed=config.seed, num_validation=config.num_validation,
        train_subset=config.train_subset,
        validation_subset=config.validation_subset, resume=(out / LAST_CHECKPOINT).is_file(),
        progress=config.progress, figures=False,
    )
    summary = train(settings, data=data, log=log)
    if summary["stopped"] == "non-finite loss":
        raise RuntimeError(f"{out}: training stopped on a non-finite loss; see {out / 'metrics.jsonl'}")
    return summary


def _evaluate(config: ExperimentConfig, run_dir: Path, images, labels) -> dict:
    path = run_dir / f"loglik-K{config.num_samples}-n{images.shape[0]}.json"
    if path.is_file() and (run_dir / LAST_CHECKPOINT).stat().st_mtime < path.stat().st_mtime:
        return json.loads(path.read_text())
    result = score_run(run_dir, images, labels, config.num_samples, config.seed, progress=config.progress)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return result


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
    if (out / "config.json").is_file():
        kind, saved = read_config(out)
        if kind == "vae-experiment" and saved != json.loads(json.dumps(asdict(config))):
            log(f"note: {out} holds an experiment with other settings; finished runs inside it are reused")
    write_config(out, config, kind="vae-experiment")
    data = load_mnist(config.data)
    test_images = binarize_fixed(data.x_test, seed=TEST_BINARIZATION_SEED)
    test_labels = data.y_test
    if config.num_test is not None:
        test_images, test_labels = test_images[: config.num_test], test_labels[: config.num_test]
    started = time.perf_counter()
    results = {"command": command, "config": asdict(config), "runs": []}
    for latent_dim in config.latent_dims:
        heads = ["linear"] + (list(config.ablation_heads) if latent_dim in config.ablation_latent_dims else [])
        classifiers = {head: _classifier(config, data, latent_dim, head, log) for head in heads}
        plan = [("hvae", "hvae", None, None), ("hvae-c", "hvae-c", None, None)]
        plan += [("hvae-l" if h == "linear" else f"hvae-l-{h}", "hvae-l", h, classifiers[h]["checkpoint"]) for h in heads]
        for name, model, head, classifier in plan:
            log(f"[{time.perf_counter() - started:.0f}s] d={latent_dim} {name}")
            summary = _vae(config, data, name, model, latent_dim, classifier, log)
            run_dir = Path(summary["run_dir"])
            scores = _evaluate(config, run_dir, test_images, test_labels)
            if config.figures and head in (None, "linear"):
                make_run_figures(run_dir, data=data, seed=config.seed)
            results["runs"].append({
                "name": name, "model": model, "latent_dim": latent_dim, "head": head, "run_dir": str(run_dir),
                "classifier_test_accuracy": classifiers[head]["test_accuracy"] if head else None,
                **{k: summary[k] for k in ("epochs", "best_epoch", "stopped", "best_validation_elbo")},
                **{k: scores.get(k) for k in ("log_px", "log_pxy", "elbo", "num_examples", "num_samples")},
            })
            atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    results["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(out / "RESULTS.md", format_results(results))
    log(f"wrote {out / 'RESULTS.md'} and {out / 'results.json'} in {results['seconds']:.0f}s")
    return results


def _cell(run: dict | None, key: str) -> str:
    return "–" if run is None or run.get(key) is None else f"{run[key]:.1f}"


def format_results(results: dict) -> str:
    """Markdown tables (log p(x), log p(x, y), ELBO, ablation) for a results dict."""
    config = results["config"]
    latent_dims = config["latent_dims"]
    runs = {(r["name"], r["latent_dim"]): r for r in results["runs"]}
    header = "| model | " + " | ".join(f"d = {d}" for d in latent_dims) + " |\n|---|" + "---|" * len(latent_dims) + "\n"
    n, k = results["runs"][0]["num_examples"], results["runs"][0]["num_samples"]

    def table(key: str, names=("hvae", "hvae-c", "hvae-l")) -> str:
        rows = [f"| {MODEL_NAMES[name]} | " + " | ".join(_cell(runs.get((name, d)), key) for d in latent_dims) + " |"
                for name in names]
        return header + "\n".join(rows) + "\n"

    paper = "| paper HVAE / HVAE-C / HVAE-L | " + " | ".join(
        " / ".join(f"{PAPER_LL[m].get(d, float('nan')):.1f}" for m in ("hvae", "hvae-c", "hvae-l")) for d in latent_dims
    ) + " |\n"
    epochs = "| epochs run (best) HVAE / HVAE-C / HVAE-L | " + " | ".join(
        " / ".join(f"{runs[(m, d)]['epochs']} ({runs[(m, d)]['best_epoch']})" if (m, d) in runs else "–"
                   for m in ("hvae", "hvae-c", "hvae-l")) for d in latent_dims
    ) + " |\n"
    text = [
        f"Test set: {n} MNIST test images binarized once with seed {TEST_BINARIZATION_SEED}; "
        f"log-likelihood by importance sampling with K = {k} samples of q(z|x); nats, higher is better.",
        ("**Quick run** (a pipeline check: training subset, 2 epochs, small K): numbers are far from converged.\n"
         if config["quick"] else None),
        "**log p(x)** (labels summed out for HVAE-C and HVAE-L: the quantity comparable across the three models)\n",
        table("log_px") + paper,
        "**log p(x, y)** (HVAE-C, HVAE-L; log p(y) = log 1/10 included)\n",
        table("log_pxy", ("hvae-c", "hvae-l")),
        "**ELBO** (one-sample estimate; on log p(x, y) for HVAE-C / HVAE-L, on log p(x) for HVAE)\n",
        table("elbo") + epochs,
    ]
    ablation = [r for r in results["runs"] if r["model"] == "hvae-l" and r["head"] != "linear"]
    if ablation:
        text.append("**Ablation: where the HVAE-L prior comes from** (classifier head; prior concentration "
                    f"{config['prior_concentration']})\n")
        text.append("| d | head | classifier test acc. | log p(x) | log p(x, y) | ELBO |\n|---|---|---|---|---|---|")
        for run in sorted([r for r in results["runs"] if r["model"] == "hvae-l"], key=lambda r: (r["latent_dim"], r["name"])):
            if not any(a["latent_dim"] == run["latent_dim"] for a in ablation):
                continue
            text.append(f"| {run['latent_dim']} | {run['head']} | {run['classifier_test_accuracy']:.4f} | "
                        f"{run['log_px']:.1f} | {run['log_pxy']:.1f} | {run['elbo']:.1f} |")
        text.append("")
    text.append(f"Command (total {results.get('seconds', 0):.0f} s):\n\n```\n{results['command']}\n```\n")
    return "\n".join(t for t in text if t is not None) + "\n"


def main(argv=None) -> dict:
    """Command-line entry point."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = add_dataclass_arguments(ArgumentParser(prog="python -m vae.experiment", description=__doc__.split("\n\n")[0]),
                                     ExperimentConfig)
    config = config_from_args(ExperimentConfig, parser.parse_args(argv))
    command = "python -m vae.experiment " + " ".join(shlex.quote(a) for a in argv)
    return run_experiment(config, command)


if __name__ == "__main__":
    sys.exit(run_cli(main))
