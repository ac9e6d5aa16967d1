"""The paper's Table 5: SNGAN on CIFAR-10 with Gaussian, vMF, sphere and control noise, N seeds, every score.

On a GPU machine (Inception weights from a local file, full CIFAR-10 through torchvision or an .npz), with IS,
FID and intra-FID in Inception features and GAN-test / GAN-train with a classifier that is not the prior
(``python -m gan.classifier --depth 16 --width 4 --seed 1 --out runs/wrn-16-4``)::

    python -m gan.table5 --preset chainer --seeds 0 1 2 --prior-checkpoint runs/wrn-40-2/classifier.pt \\
        --inception-weights PATH/weights-inception-2015-12-05-6726825d.pth --num-samples 5000 50000 \\
        --intra-fid --gan-test-classifier runs/wrn-16-4/classifier.pt --gan-train wrn-16-4 --gan-train-epochs 30 \\
        --results RESULTS.md

Several GPUs: one run per GPU (a 64-image batch split over 8 GPUs leaves each of them mostly idle), e.g. nine
GPUs ``CUDA_VISIBLE_DEVICES=$i python -m gan.table5 ... --samplers $noise --seeds $seed`` in parallel, then
``python -m gan.table5 ... --report-only --results RESULTS.md``; or every run data-parallel over all GPUs with
``--launcher "accelerate launch --num_processes 8"`` (batch norm is synchronized, so the protocol is unchanged).

On a CPU, the ``small`` preset, four noises (Gaussian, vMF at the prior classifier's MLE kappa, sphere, and the
control ``vmf-orthogonal``: vMF around a fixed orthogonal head at the same kappa), scored in the features of an
independent evaluator (a ``convnet-32`` classifier, never the prior): IS, FID, intra-FID, GAN-test, GAN-train.
One run per process (``--samplers S --seeds N``), one process per core; the same command resumes::

    python -m gan.table5 --preset small --samplers vmf --seeds 0 --threads 1 --cpu \
        --data data/cifar10-small.npz --runs-dir runs/table5-small-v2 \
        --prior-checkpoint results/gan-table5-small/wrn-tiny/classifier.pt \
        --classifier-checkpoint results/gan-table5-small/evaluator-convnet-32/classifier.pt \
        --gan-test-classifier results/gan-table5-small/evaluator-convnet-32/classifier.pt \
        --intra-fid --gan-train convnet-32 --num-samples 5000 --keep results/gan-table5-small-v2
    python -m gan.table5 --preset small --seeds 0 1 2 3 4 --runs-dir results/gan-table5-small-v2 --report-only \
        --results RESULTS.md

Run it from the repository root. Runs are ``RUNS/<sampler>-s<seed>`` (``--runs-dir``, default
``runs/table5-<preset>``). Every step is a subprocess and is skipped when its output exists, so the same command
continues an interrupted table: training resumes from the run's latest checkpoint, scoring writes
``fidelity-*.json`` once per sample count.
``--round-robin K`` advances the runs K iterations at a time in turn, so that when time runs out every noise
has been trained equally long. ``--report-only`` writes the table from what exists. κ of the vMF noise is
``--concentration`` or, by default, the MLE stored in the classifier checkpoint (``kappa_mle``, or
``concentration_mle`` in checkpoints of the earlier gan.classifier).
``--plot PATH`` draws every run's scores and the paired differences with ±2 SE (:mod:`gan.plots`).
``--keep DIR`` copies each scored run's small files and generator weights (no checkpoints) to ``DIR``, so that a
table can be kept under version control and rewritten later with ``--runs-dir DIR --report-only``.
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from gan.config import Table5Config

    answer_early(Table5Config, prog="python -m gan.table5", description=__doc__.split("\n\n")[0])

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from common.classifier import head_statistics_of
from common.cli import UserError, run_cli
from common.config import parse_config
from common.grid import difference, grid, mean_sd_cell, unit_status
from common.grid import summarize as summarize_values
from common.markdown import write_section
from common.run import LAST_CHECKPOINT, load_checkpoint, read_metrics
from eval.fidelity import INCEPTION, KEY_FID, KEY_IS_MEAN
from gan.config import NOISE_ORDER, Table5Config
from gan.config import parse_config as gan_config
from gan.criteria import SCORES, paired_score, read_criteria
from gan.fidelity import classifier_extractor
from gan.plots import plot_table5
from gan.report import NOISE_NAMES, collect_runs

__all__ = ["main", "run_folder", "trained_iterations", "logged_iterations", "keep_run", "summarize"]


def run_folder(runs_dir: Path, sampler: str, seed: int) -> Path:
    """The folder of one run of the table."""
    return runs_dir / f"{sampler}-s{seed}"


def trained_iterations(run: Path) -> int:
    """Iterations of the run's checkpoint (0 when it has none)."""
    checkpoint = run / LAST_CHECKPOINT
    if not checkpoint.is_file():
        return 0
    return int(load_checkpoint(checkpoint, ("step",), what="gan/train.py checkpoint")["step"])


def logged_iterations(run: Path) -> int:
    """How far the run got: its latest checkpoint or, in a folder kept without checkpoints (config.json,
    metrics.jsonl and fidelity-*.json copied elsewhere to be kept), the last iteration in its metrics."""
    return max(
        [trained_iterations(run)] + [record.get("iteration", 0) for record in read_metrics(run / "metrics.jsonl")]
    )


def keep_run(run: Path, destination: Path) -> Path:
    """Copy what the table reads from a run (config.json, metrics.jsonl, fidelity-*.json), its generator weights
    (generator.pt, so that it can be scored again) and its last sample grid to ``destination/<run name>``: about a
    megabyte at the ``small`` preset, to keep under version control, without the checkpoints.

    Returns:
        the copy's folder (a valid ``--runs-dir`` member for ``--report-only``).
    """
    kept = destination / run.name
    kept.mkdir(parents=True, exist_ok=True)
    grids = sorted((run / "samples").glob("iter_*.png"))
    files = [run / "config.json", run / "metrics.jsonl", run / "generator.pt", *sorted(run.glob("fidelity-*.json"))]
    for path in [*files, *grids[-1:]]:
        if path.is_file():
            shutil.copy2(path, kept / path.name)
    return kept


def _mean_sd(values: list[float | None], digits: int = 2) -> str:
    """ "mean ± sd" over seeds (the values that are not None), "mean" for one, "–" for none."""
    return mean_sd_cell(summarize_values(values), digits=digits, count=False)


def scoring_groups(run_dirs: list[Path]) -> dict[tuple, list[dict]]:
    """The scored runs' records grouped by ``(noise, sample count, extractor, reference, *SCORING_KEYS)``: the
    runs of one noise that were scored alike (empty when no run is scored)."""
    finished = [run for run in run_dirs if any(run.glob("fidelity-*.json"))]
    groups: dict[tuple, list[dict]] = {}
    for record in collect_runs([str(run) for run in finished]) if finished else []:
        key = (
            record["noise"],
            record.get("num_samples"),
            record.get("feature_extractor"),
            record.get("reference_id"),
            *(record.get(name) for name in SCORING_KEYS),
        )
        groups.setdefault(key, []).append(record)
    return groups


def by_setting(groups: dict[tuple, list[dict]]) -> dict[tuple, dict[str, list[dict]]]:
    """``scoring_groups`` regrouped as ``{setting: {noise: records}}``: the noises scored alike, side by side."""
    settings: dict[tuple, dict[str, list[dict]]] = {}
    for key, rows in groups.items():
        settings.setdefault(key[1:], {})[key[0]] = rows
    return settings


def summarize(run_dirs: list[Path], planned_seeds: int | None = None) -> str:
    """Markdown: final scores (mean ± sd over seeds), the periodic FID during training, the reading under the
    pre-stated criteria (:mod:`gan.criteria`), and every command.

    Args:
        run_dirs: run folders of the table (finished or not).
        planned_seeds: seeds per noise the table plans; the reading is provisional with fewer (None: no such note).

    Returns:
        the markdown text.
    """
    lines = []
    groups = scoring_groups(run_dirs)
    if groups:
        for (noise, *_), rows in groups.items():
            kappas = sorted({row.get("concentration") for row in rows}, key=str)
            if len(kappas) > 1:
                raise ValueError(
                    f"the {noise} runs {sorted(Path(row['run']).name for row in rows)} have different kappa "
                    f"({', '.join(map(str, kappas))}): report them from separate --runs-dir folders"
                )
        lines += [
            "| noise | κ | seeds | iterations | fake images | real images | extractor | IS ↑ | FID ↓ |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        order = {name: index for index, name in enumerate(NOISE_ORDER)}
        for key in sorted(groups, key=lambda k: (k[1] or 0, order.get(k[0], 9), str(k[2]))):
            rows = groups[key]
            noise, fake, extractor, reference_id = key[:4]
            real = str(reference_id).rsplit("-n", 1)[-1] if reference_id else "–"
            kappa = rows[0].get("concentration")
            lines.append(
                " | ".join(
                    [
                        f"| {NOISE_NAMES.get(noise, noise)}",
                        "–" if kappa is None else f"{kappa:.1f}",
                        str(len(rows)),
                        str(rows[0].get("iterations")),
                        str(fake),
                        real,
                        f"`{extractor}`",
                        _mean_sd([r[KEY_IS_MEAN] for r in rows]),
                        _mean_sd([r.get(KEY_FID) for r in rows]) + " |",
                    ]
                )
            )
        lines += ["", "Mean ± sample standard deviation over seeds (one training run per seed)."]
        lines += _per_run_and_differences(groups)
        settings = by_setting(groups)
        for setting in sorted(settings, key=lambda k: (k[0] or 0, str(k[1]), str(k[2]))):
            by_noise = settings[setting]
            extra = class_aware_table(by_noise) + paired_differences(by_noise)
            extra += read_criteria(by_noise, planned_seeds) if extra else []
            if extra:
                lines += [
                    "",
                    f"Class-aware scores and paired differences ({setting[0]} generated images, "
                    f"extractor `{setting[1]}`):",
                    *extra,
                ]
    else:
        lines += ["No run has finished and been scored yet."]
    curves = _periodic_fid(run_dirs)
    if curves:
        config = curves["config"]
        reference = os.path.basename(config.get("eval_reference") or config.get("data") or "cifar10-train")
        extractor = (
            f"features of the classifier `{config['eval_classifier']}`"
            if config.get("eval_classifier")
            else "Inception features"
        )
        lines += [
            "",
            f"FID during training: {config.get('eval_num_samples')} generated images against the training "
            f"split of `{reference}`, {extractor}; mean ± sd over the runs that reached the iteration:",
            "",
            "| noise | " + " | ".join(f"it {i}" for i in curves["iterations"]) + " |",
            "|---|" + "---|" * len(curves["iterations"]),
        ]
        for noise, values in curves["rows"].items():
            lines.append(
                f"| {NOISE_NAMES.get(noise, noise)} | "
                + " | ".join((_mean_sd(v) + f" (n={len(v)})") if v else "–" for v in values)
                + " |"
            )
    lines += ["", "Progress: " + ", ".join(f"`{run.name}` {logged_iterations(run)}" for run in run_dirs)]
    commands = []
    for run in run_dirs:
        config_path = run / "config.json"
        if config_path.is_file():
            commands.append(json.loads(config_path.read_text()).get("command", ""))
        for path in sorted(run.glob("fidelity-*.json")):
            commands.append(json.loads(path.read_text()).get("command", ""))
    if commands:
        lines += ["", "Commands (training, as recorded in each run's config.json, then scoring):", "", "```"]
        lines += [command for command in commands if command] + ["```"]
    return "\n".join(lines) + "\n"


COMPARISONS = (
    ("vmf", "gaussian"),
    ("vmf", "sphere"),
    ("sphere", "gaussian"),
    ("vmf", "vmf-orthogonal"),
    ("vmf-orthogonal", "gaussian"),
)
"""Pairs of noises whose final scores are compared (first − second). vMF − vMF-orthogonal is the control: the
same kappa and the same class clustering, with or without the classifier's learned geometry."""

SCORING_KEYS = (
    "intra_fid_reference_split",
    "gan_test_classifier",
    "gan_test_num_samples",
    "gan_train_architecture",
    "gan_train_epochs",
    "gan_train_num_samples",
)
"""Fidelity-JSON settings besides the sample count, extractor and reference that runs must share to be compared."""


def paired_differences(by_noise: dict[str, list[dict]]) -> list[str]:
    """Markdown table of paired differences between noises, seed by seed, for every score both sides have.

    For each comparison (first − second) and score: the mean over the seeds both noises ran of the per-seed
    difference, its standard error sd / sqrt(n), n, and whether it exceeds 2 SE. Pairing removes what a seed
    does to both noises alike (the same data order, the same initial weights), which unpaired SEs count twice.

    Args:
        by_noise: records (fidelity JSONs with "run") of one scoring setting, grouped by noise.

    Returns:
        markdown lines (empty when no comparison has two common seeds).
    """
    rows = []
    for a, b in COMPARISONS:
        if a not in by_noise or b not in by_noise:
            continue
        kappas = [{r.get("concentration") for r in by_noise[noise]} for noise in (a, b)]
        if None not in kappas[0] | kappas[1] and kappas[0] != kappas[1]:
            rows.append(f"| {NOISE_NAMES.get(a, a)} − {NOISE_NAMES.get(b, b)} | not compared: different kappa |||||")
            continue
        for name, key, better, digits in SCORES:
            mean, error, count = paired_score(by_noise, a, b, key)
            if count < 2:
                continue
            rows.append(
                f"| {NOISE_NAMES.get(a, a)} − {NOISE_NAMES.get(b, b)} | {name} {better} | {mean:+.{digits}f} "
                f"| {error:.{digits}f} | {count} | {reading(mean, error, better)} |"
            )
    if not rows:
        return []
    return [
        "",
        "Paired differences (first − second, seed by seed; SE = sd of the differences / sqrt(n)):",
        "",
        "| difference | score | mean | SE | seeds | first against second |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def reading(mean: float, error: float, better: str) -> str:
    """How the first noise of a difference fares against the second on a score whose better direction is
    ``better`` ("↑" or "↓"): "better (> 2 SE)", "worse (> 1 SE)", ... or "within 1 SE"."""
    if not abs(mean) > error:
        return "within 1 SE"
    side = "better" if (mean > 0) == (better == "↑") else "worse"
    return f"{side} (> {2 if abs(mean) > 2 * error else 1} SE)"


def class_aware_table(by_noise: dict[str, list[dict]]) -> list[str]:
    """Markdown: intra-FID, GAN-test and GAN-train, mean ± sd over seeds per noise (empty if no run has them)."""
    present = [
        (name, key, better, digits)
        for name, key, better, digits in SCORES[2:]
        if any(r.get(key) is not None for rows in by_noise.values() for r in rows)
    ]
    if not present:
        return []
    order = {name: index for index, name in enumerate(NOISE_ORDER)}
    lines = [
        "",
        "| noise | seeds | " + " | ".join(f"{name} {better}" for name, _, better, _ in present) + " |",
        "|---|---|" + "---|" * len(present),
    ]
    for noise in sorted(by_noise, key=lambda n: order.get(n, 9)):
        rows = by_noise[noise]
        cells = [_mean_sd([r.get(key) for r in rows], digits) for _, key, _, digits in present]
        lines.append(f"| {NOISE_NAMES.get(noise, noise)} | {len(rows)} | " + " | ".join(cells) + " |")
    details = next(r for rows in by_noise.values() for r in rows if any(r.get(k) is not None for _, k, _, _ in present))
    notes = []
    if details.get("gan_test_classifier"):
        notes.append(
            f"GAN-test: accuracy of `{Path(details['gan_test_classifier']).name}` "
            f"({Path(details['gan_test_classifier']).parent.name}) on {details.get('gan_test_num_samples')} "
            "generated images"
        )
    if details.get("gan_train_architecture"):
        notes.append(
            f"GAN-train: a `{details['gan_train_architecture']}` trained for {details.get('gan_train_epochs')} "
            f"epochs on {details.get('gan_train_num_samples')} generated images, accuracy on the real test split"
        )
    if details.get("intra_fid_per_class"):
        notes.append(
            f"intra-FID: FID per class in the extractor's features against the reference's "
            f"{details.get('intra_fid_reference_split', 'train')} split, averaged over classes"
        )
    return lines + ["", "Mean ± sample sd over seeds. " + "; ".join(notes) + "."]


def _per_run_and_differences(groups: dict[tuple, list[dict]]) -> list[str]:
    """Markdown: each run's final IS / FID, and the differences of means between noises with their standard error,
    per group of runs scored alike (same sample count, extractor and reference)."""
    lines = []
    order = {name: index for index, name in enumerate(NOISE_ORDER)}
    for setting in sorted({key[1:] for key in groups}, key=lambda k: (k[0] or 0, str(k[1]), str(k[2]))):
        by_noise = {key[0]: rows for key, rows in groups.items() if key[1:] == setting}
        fake = setting[0]
        lines += ["", f"Per run ({fake} generated images), IS / FID:", ""]
        for noise in sorted(by_noise, key=lambda n: order.get(n, 9)):
            lines.append(
                f"- {NOISE_NAMES.get(noise, noise)}: "
                + ", ".join(
                    f"`{Path(run['run']).name}` {run[KEY_IS_MEAN]:.2f} / {run[KEY_FID]:.2f}"
                    for run in sorted(by_noise[noise], key=lambda r: r["run"])
                )
            )
        rows = []
        for a, b in COMPARISONS:
            if a not in by_noise or b not in by_noise:
                continue
            for metric, key, better in (("IS", KEY_IS_MEAN, "↑"), ("FID", KEY_FID, "↓")):
                summary_a = summarize_values([run.get(key) for run in by_noise[a]])
                summary_b = summarize_values([run.get(key) for run in by_noise[b]])
                if summary_a[2] < 2 or summary_b[2] < 2:
                    continue
                value, error, _ = difference(summary_a, summary_b)
                rows.append(
                    f"| {NOISE_NAMES.get(a, a)} − {NOISE_NAMES.get(b, b)} | {metric} {better} | {value:+.2f} | "
                    f"{error:.2f} | {reading(value, error, better)} |"
                )
        if rows:
            lines += [
                "",
                f"Differences of the means ({fake} generated images; SE = sqrt(sd_a²/n_a + sd_b²/n_b)):",
                "",
                "| difference | metric | value | SE | first against second |",
                "|---|---|---|---|---|",
                *rows,
            ]
    return lines


def _periodic_fid(run_dirs: list[Path]) -> dict:
    """{"iterations": [...], "rows": {noise: [[FID of each run at that iteration], ...]}, "config": the config of
    one run (for the evaluation settings)} from the runs' metrics.jsonl."""
    per_noise: dict[str, dict[int, list[float]]] = {}
    config = {}
    for run in run_dirs:
        config_path = run / "config.json"
        if not config_path.is_file():
            continue
        config = json.loads(config_path.read_text())["config"]
        noise = config["sampler"]
        for record in read_metrics(run / "metrics.jsonl"):
            if KEY_FID in record:
                per_noise.setdefault(noise, {})[record["iteration"]] = per_noise.get(noise, {}).get(
                    record["iteration"], []
                ) + [record[KEY_FID]]
    iterations = sorted({i for values in per_noise.values() for i in values})
    if not iterations:
        return {}
    order = {name: index for index, name in enumerate(NOISE_ORDER)}
    return {
        "iterations": iterations,
        "config": config,
        "rows": {
            noise: [per_noise[noise].get(i, []) for i in iterations]
            for noise in sorted(per_noise, key=lambda n: order.get(n, 9))
        },
    }


def _training_command(
    args, run: Path, sampler: str, seed: int, concentration: float | None, stop_after: int, resume: bool
) -> list[str]:
    command = [
        *shlex.split(args.launcher),
        "gan/train.py",
        "--preset",
        args.preset,
        "--out",
        str(run),
        "--seed",
        str(seed),
        "--sampler",
        sampler,
    ]
    if args.data:
        command += ["--data", args.data]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if sampler == "vmf":
        command += ["--prior-checkpoint", args.prior_checkpoint, "--concentration", f"{concentration:.4f}"]
    if sampler == "vmf-orthogonal":  # the control: the vmf runs' kappa around a fixed orthogonal head
        command += ["--concentration", f"{concentration:.4f}"]
    if args.eval_every:
        command += ["--eval-every", str(args.eval_every), "--eval-num-samples", str(args.eval_num_samples)]
        if args.classifier_checkpoint:
            command += ["--eval-classifier", args.classifier_checkpoint]
        if args.inception_weights:
            command += ["--eval-inception-weights", args.inception_weights]
    if resume:
        command += ["--resume"]
    if stop_after:
        command += ["--stop-after", str(stop_after)]
    return command


@functools.cache
def _extractor_name(checkpoint: str) -> str:
    """gan.fidelity's extractor name of a classifier checkpoint, loaded once per command."""
    return classifier_extractor(checkpoint)


def _scored(run: Path, num_samples: int, args) -> bool:
    """Whether RUN holds the fidelity JSON of the command's extractor and this sample count with every score the
    command asks for (a JSON of another extractor, or one without an asked-for score, means: score again)."""
    if not any(run.glob(f"fidelity-*-n{num_samples}.json")):
        return False
    extractor = _extractor_name(args.classifier_checkpoint) if args.classifier_checkpoint else INCEPTION
    path = run / f"fidelity-{extractor}-n{num_samples}.json"
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    asked = {"intra_fid": args.intra_fid, "gan_test": args.gan_test_classifier, "gan_train": args.gan_train}
    return all(record.get(key) is not None for key, wanted in asked.items() if wanted)


def _fidelity_command(args, run: Path, seed: int, num_samples: int) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "gan.fidelity",
        "--run",
        str(run),
        "--num-samples",
        str(num_samples),
        "--seed",
        str(seed),
        "--batch-size",
        str(args.fidelity_batch_size),
    ]
    reference = args.reference or args.data
    if reference:
        command += ["--reference", reference]
    if args.classifier_checkpoint:
        command += ["--classifier-checkpoint", args.classifier_checkpoint]
    if args.inception_weights:
        command += ["--inception-weights", args.inception_weights]
    if args.cpu:
        command += ["--cpu"]
    if args.intra_fid:
        command += ["--intra-fid"]
    if args.gan_test_classifier:
        command += ["--gan-test-classifier", args.gan_test_classifier]
    if args.gan_train:
        command += ["--gan-train", args.gan_train, "--gan-train-epochs", str(args.gan_train_epochs)]
        if args.gan_train_samples:
            command += ["--gan-train-samples", str(args.gan_train_samples)]
    return command


def _run(command: list[str], dry_run: bool) -> None:
    print("+ " + shlex.join(command), flush=True)
    if not dry_run:
        result = subprocess.run([sys.executable if command[0] == "python" else command[0], *command[1:]])
        if result.returncode:  # the step printed its own error; the table stops at the first failed step
            raise UserError(
                f"this step failed with exit status {result.returncode} (its message is above): {shlex.join(command)}"
            )


def main(argv=None) -> str:
    """Train and score every (sampler, seed) that is not done yet, then write the table; returns its markdown."""
    args = parse_config(Table5Config, argv, prog="python -m gan.table5", description=__doc__.split("\n\n")[0])
    if min(args.seeds) < 0 or args.round_robin < 0 or min(args.num_samples) < 10:
        raise UserError("--seeds must be >= 0, --round-robin >= 0 and every --num-samples >= 10")
    if args.inception_weights and args.classifier_checkpoint:
        raise UserError("--classifier-checkpoint replaces --inception-weights; pass only one")
    for flag, path in (
        ("--data", args.data),
        ("--prior-checkpoint", args.prior_checkpoint),
        ("--classifier-checkpoint", args.classifier_checkpoint),
        ("--gan-test-classifier", args.gan_test_classifier),
        ("--inception-weights", args.inception_weights),
    ):
        if path is not None and not args.report_only and not os.path.isfile(path):
            raise UserError(f"{flag} {path!r}: no such file")
    if (
        args.reference
        and args.reference.endswith(".npz")
        and not args.report_only
        and not os.path.isfile(args.reference)
    ):
        raise UserError(f"--reference {args.reference!r}: no such file")
    if args.gan_train is not None:
        from eval.classifiers import build_classifier

        build_classifier(args.gan_train, 10)  # an unknown architecture fails now, not after hours of training
    iterations = gan_config(["--preset", args.preset]).iterations
    runs_dir = Path(args.runs_dir or f"runs/table5-{args.preset}")
    concentration = args.concentration
    if {"vmf", "vmf-orthogonal"} & set(args.samplers) and not args.report_only:
        if not args.prior_checkpoint:
            raise UserError("vMF noise needs --prior-checkpoint (a gan.classifier checkpoint)")
        if concentration is None:  # the prior classifier's MLE kappa, for vmf and for its orthogonal control
            stored = load_checkpoint(args.prior_checkpoint, ("model",), what="gan.classifier checkpoint")
            concentration = head_statistics_of(stored)["kappa_mle"]
            if concentration is None:
                raise UserError(f"{args.prior_checkpoint} stores no kappa_mle; pass --concentration")
    units = grid(seed=args.seeds, sampler=args.samplers)  # seeds outermost
    runs = [run_folder(runs_dir, unit["sampler"], unit["seed"]) for unit in units]
    if not args.report_only:
        step = args.round_robin or iterations
        for target in range(step, iterations + step, step):  # round r trains every run up to r * step
            stop = min(target, iterations)
            for unit, run in zip(units, runs):
                status = unit_status(run, lambda folder, stop=stop: trained_iterations(folder) >= stop)
                if status != "finished":  # new, or a checkpoint short of this round's iteration: resume it
                    _run(
                        _training_command(
                            args,
                            run,
                            unit["sampler"],
                            unit["seed"],
                            concentration,
                            stop if stop < iterations else 0,
                            resume=status == "unfinished",
                        ),
                        args.dry_run,
                    )
        for unit, run in zip(units, runs):
            for num_samples in args.num_samples:
                if not _scored(run, num_samples, args):
                    _run(_fidelity_command(args, run, unit["seed"], num_samples), args.dry_run)
    if args.keep and not args.dry_run:
        for run in runs:
            if any(run.glob("fidelity-*.json")):
                print(f"kept {run} in {keep_run(run, Path(args.keep))}")
    text = (
        f"### SNGAN on CIFAR-10, Table 5 protocol: preset `{args.preset}`, seeds {list(args.seeds)}\n\n"
        f"Produced by `python -m gan.table5 {shlex.join(argv if argv is not None else sys.argv[1:])}`.\n\n"
        + summarize(runs, planned_seeds=len(args.seeds))
    )
    print(text)
    if args.results and not args.dry_run:
        write_section(args.results, args.section or f"gan-table5-{args.preset}", text)
        print(f"wrote section of {args.results}")
    if args.plot and not args.dry_run:
        print(f"wrote {_plot(runs, args.plot)}")
    return text


def _plot(runs: list[Path], path: str) -> Path:
    """The Table-5 plot (:mod:`gan.plots`) of the scoring setting that holds the most runs."""
    settings = by_setting(scoring_groups(runs))
    if not settings:
        raise UserError(f"--plot {path}: no run has been scored yet")
    largest = max(settings, key=lambda setting: sum(map(len, settings[setting].values())))
    try:
        return plot_table5(
            settings[largest], path, caption=f"{largest[0]} generated images per run, features of `{largest[1]}`"
        )
    except OSError as error:
        raise UserError(f"--plot {path}: {error.strerror or error}") from None


if __name__ == "__main__":
    sys.exit(run_cli(main))
