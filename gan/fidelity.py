"""IS, FID and the class-aware scores of a GAN run folder, through ``eval.fidelity`` and ``eval.classaware``.

    python -m gan.fidelity --run RUN [--num-samples 5000] [--reference cifar10-train|cifar10-test|PATH.npz|none]
        [--inception-weights PATH | --classifier-checkpoint PATH] [--batch-size 64] [--cpu]
        [--intra-fid] [--gan-test-classifier PATH] [--gan-train ARCH [--gan-train-samples N] [--gan-train-epochs E]]

prints the scores and writes ``RUN/fidelity-<extractor>-n<num_samples>.json`` (read by ``gan.report`` and
``gan.table5``). ``--intra-fid``: FID per class against the reference split in the same extractor, averaged
(num_samples / C generated images per class). ``--gan-test-classifier``: GAN-test, the accuracy of that classifier
(a ``gan.classifier`` checkpoint trained on real images) on ``num_samples`` generated images. ``--gan-train``:
GAN-train, a classifier of that architecture (``eval.classifiers``: ``wrn-D-W``, ``convnet-W``) trained on
generated images only, scored on the reference file's test split.
Offline: ``--inception-weights`` takes a local copy of torch-fidelity's Inception weights;
``--classifier-checkpoint`` scores with a ``gan.classifier`` WRN instead (such scores compare only with each
other).
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from common.config import answer_early
    from gan.config import FidelityConfig

    answer_early(
        FidelityConfig, prog="python -m gan.fidelity", description="IS and FID of a GAN run through torch-fidelity."
    )

import dataclasses
import datetime
import json
import os
import shlex
import sys

import torch
import torch_fidelity
from torch.utils.data import Dataset

from common.cli import UserError, run_cli, select_device
from common.config import parse_config
from common.data import DataUnavailableError
from common.run import atomic_write_text, read_run
from eval.fidelity import (
    INCEPTION,
    INCEPTION_WEIGHTS_FILE,
    ISC_SPLITS,
    KEY_FID,
    KEY_IS_MEAN,
    KEY_IS_STD,
    FeatureExtractorUnavailableError,
    compute_fidelity,
    extractor_tag,
    load_reference,
    reference_split,
)
from gan.classifier import load_classifier
from gan.config import FidelityConfig
from gan.sampling import load_sampler

__all__ = ["FidelityConfig", "classifier_extractor", "PeriodicEvaluation", "prepare_evaluation", "main"]


def classifier_extractor(checkpoint: str) -> str:
    """Register a ``gan.classifier`` checkpoint with torch-fidelity; return the extractor's name.

    The name carries a hash of the weights, so cached reference statistics never belong to other weights.
    """
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    from eval.features import register_classifier_extractor, state_fingerprint

    classifier = load_classifier(checkpoint)
    name = f"classifier-{state_fingerprint(classifier)}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_classifier_extractor(name, classifier)
    return name


@dataclasses.dataclass
class PeriodicEvaluation:
    """IS/FID during training, with the extractor and the reference statistics already loaded and cached.

    Built by :func:`prepare_evaluation` before training starts, so a missing file or an offline download fails
    then, not at the first evaluation hours later while the other processes wait at a barrier.
    """

    feature_extractor: str  # torch-fidelity extractor name
    weights_path: str | None  # local Inception weights, or None
    reference: Dataset  # uint8 reference images
    cache_name: str  # torch-fidelity cache name of the reference statistics (without the extractor tag)
    num_samples: int  # generated images per evaluation
    batch_size: int = 64

    def __call__(self, sampler, device) -> dict:
        """Scores of ``sampler`` (a GANSampler): {"inception_score_mean", "inception_score_std",
        "frechet_inception_distance"}; the caller's RNG streams do not move."""
        return compute_fidelity(
            sampler,
            self.reference,
            num_samples=self.num_samples,
            feature_extractor=self.feature_extractor,
            feature_extractor_weights_path=self.weights_path,
            reference_cache_name=self.cache_name,
            batch_size=self.batch_size,
            device=device,
        )


def prepare_evaluation(
    reference: str,
    num_samples: int,
    inception_weights: str | None = None,
    classifier_checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> PeriodicEvaluation:
    """Load the feature extractor and the reference images, and compute and cache the reference statistics now.

    Args:
        reference: "cifar10-train", "cifar10-test" or PATH.npz (its train split).
        num_samples: generated images per later evaluation.
        inception_weights: local copy of torch-fidelity's Inception weights (offline), or None.
        classifier_checkpoint: score with this gan.classifier checkpoint instead of Inception, or None.
        device: where torch-fidelity runs.
        batch_size: images per batch.

    Returns:
        a :class:`PeriodicEvaluation`.

    Raises:
        DataUnavailableError: the reference images or the extractor's weights cannot be loaded (message says
            what to pass instead); ValueError/CheckpointError: a bad path or checkpoint.
    """
    if classifier_checkpoint and inception_weights:
        raise ValueError("a classifier checkpoint replaces the Inception weights; set only one")
    if int(num_samples) < 10:
        raise ValueError(f"the number of evaluation samples must be at least 10 (the IS splits), got {num_samples}")
    extractor = classifier_extractor(classifier_checkpoint) if classifier_checkpoint else INCEPTION
    if inception_weights is not None and not os.path.isfile(inception_weights):
        raise FeatureExtractorUnavailableError(f"the Inception weights file {inception_weights!r} does not exist")
    try:
        dataset, cache_name = load_reference(reference)
    except DataUnavailableError as error:
        raise DataUnavailableError(
            f"reference images for IS/FID unavailable: {error} Pass --eval-reference PATH.npz "
            "(or --data PATH.npz, which it defaults to)."
        ) from error
    evaluation = PeriodicEvaluation(extractor, inception_weights, dataset, cache_name, int(num_samples), batch_size)
    # FID of the reference against itself, with both inputs under the cache name compute_fidelity will use:
    # torch-fidelity extracts the features once (loading, or downloading, the extractor) and caches the statistics.
    cached = f"{cache_name}-{extractor_tag(extractor, inception_weights)}"
    try:
        torch_fidelity.calculate_metrics(
            input1=dataset,
            input2=dataset,
            input1_cache_name=cached,
            input2_cache_name=cached,
            fid=True,
            feature_extractor=extractor,
            feature_extractor_weights_path=inception_weights,
            batch_size=batch_size,
            cuda=torch.device(device).type == "cuda",
            verbose=False,
            save_cpu_ram=True,
        )
    except OSError as error:  # a failed download of the Inception weights (URLError, HTTP and socket errors)
        raise FeatureExtractorUnavailableError(
            f"cannot load the weights of {extractor!r} ({type(error).__name__}: {error}); pass "
            f"--eval-inception-weights PATH (a local copy of {INCEPTION_WEIGHTS_FILE}) or --eval-classifier "
            "CHECKPOINT"
        ) from error
    return evaluation


def class_aware_scores(args, sampler, device, feature_extractor: str) -> dict:
    """The scores --intra-fid, --gan-test-classifier and --gan-train ask for (an empty dict if none)."""
    if not (args.intra_fid or args.gan_test_classifier or args.gan_train):
        return {}
    from common.data import load_cifar10
    from eval.classaware import balanced_labels, gan_test, gan_train, generate, intra_fid

    scores = {}
    num_classes = int(sampler.num_classes)
    labels = balanced_labels(args.num_samples, num_classes)
    generated = (generate(sampler, labels, args.batch_size, seed=args.seed), labels)  # shared by GAN-test, intra-FID
    data = None
    if args.intra_fid or args.gan_train:
        data = load_cifar10(None if args.reference.startswith("cifar10-") else args.reference)
    if args.intra_fid:
        split = reference_split(args.reference, args.reference_split)
        images, reference_labels = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        scores.update(
            intra_fid(
                sampler,
                images,
                reference_labels,
                feature_extractor,
                generated=generated,
                weights_path=args.inception_weights,
                batch_size=args.batch_size,
                device=device,
            )
        )
        scores["intra_fid_reference_split"] = split
    if args.gan_test_classifier:
        classifier = load_classifier(args.gan_test_classifier).to(device)
        scores.update(gan_test(sampler, classifier, generated=generated, batch_size=args.batch_size))
        scores["gan_test_classifier"] = os.path.normpath(args.gan_test_classifier)  # as given: no machine paths
    if args.gan_train:
        count = args.gan_train_samples or len(data.x_train)
        scores.update(
            gan_train(
                sampler,
                args.gan_train,
                count,
                data.x_test,
                data.y_test,
                epochs=args.gan_train_epochs,
                batch_size=args.gan_train_batch_size,
                augmentation=not args.gan_train_no_augmentation,
                seed=args.seed + 1,
                device=device,
                sample_batch_size=args.batch_size,
            )
        )
    return scores


def main(argv=None) -> dict:
    """Score a GAN run; returns the record written to JSON."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_config(
        FidelityConfig,
        argv,
        prog="python -m gan.fidelity",
        description="IS and FID of a GAN run through torch-fidelity.",
    )
    if args.classifier_checkpoint is not None and args.inception_weights is not None:
        raise UserError("--classifier-checkpoint replaces --inception-weights; pass only one")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if (
        args.gan_train_epochs < 1
        or args.gan_train_batch_size < 1
        or (args.gan_train_samples is not None and args.gan_train_samples < 1)
    ):
        raise UserError("--gan-train-epochs, --gan-train-batch-size and --gan-train-samples must be positive")
    if args.gan_train is not None:
        from eval.classifiers import build_classifier

        build_classifier(args.gan_train, 10)  # a bad name fails now, not after IS and FID
    if args.reference == "none" and (args.intra_fid or args.gan_train):
        raise UserError(
            "--intra-fid and --gan-train need labelled real images: pass --reference PATH.npz or "
            "cifar10-train, not none"
        )
    if args.num_samples < ISC_SPLITS:
        raise UserError(
            f"--num-samples must be at least {ISC_SPLITS} (the Inception Score's splits), got {args.num_samples}"
        )
    _, run_config = read_run(args.run, ("gan",))
    device = select_device(args.cpu)
    feature_extractor = (
        INCEPTION if args.classifier_checkpoint is None else classifier_extractor(args.classifier_checkpoint)
    )
    sampler = load_sampler(args.run, device=device)
    reference, cache_name = None, None
    if args.reference != "none":
        try:
            reference, cache_name = load_reference(args.reference, args.reference_split)
        except DataUnavailableError as error:
            raise DataUnavailableError(
                f"reference images unavailable: {error} Pass --reference PATH.npz, or --reference none for IS only."
            ) from error
    metrics = compute_fidelity(
        sampler,
        reference,
        num_samples=args.num_samples,
        feature_extractor=feature_extractor,
        feature_extractor_weights_path=args.inception_weights,
        reference_cache_name=cache_name if args.cache else None,
        batch_size=args.batch_size,
        device=device,
        seed=args.seed,
        verbose=args.verbose,
    )
    record = dict(metrics)
    record.update(class_aware_scores(args, sampler, device, feature_extractor))
    record.update(
        run=os.path.normpath(args.run),
        kind="gan",
        noise=run_config.get("sampler"),
        num_samples=args.num_samples,
        reference=args.reference,
        reference_split=None if reference is None else reference_split(args.reference, args.reference_split),
        reference_id=cache_name,
        feature_extractor=feature_extractor,
        seed=args.seed,
        device=str(device),
        command=shlex.join(["python", "-m", "gan.fidelity", *argv]),
        torch_fidelity_version=torch_fidelity.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    out_path = args.out or os.path.join(args.run, f"fidelity-{feature_extractor}-n{args.num_samples}.json")
    atomic_write_text(out_path, json.dumps(record, indent=2) + "\n")
    line = f"IS {metrics[KEY_IS_MEAN]:.3f} ± {metrics[KEY_IS_STD]:.3f}"
    if KEY_FID in metrics:
        line += f"  FID {metrics[KEY_FID]:.3f}"
    for key, name in (("intra_fid", "intra-FID"), ("gan_test", "GAN-test"), ("gan_train", "GAN-train")):
        if key in record:
            line += f"  {name} {record[key]:.3f}"
    print(f"{line}  ({feature_extractor}, {args.num_samples} samples)\nwrote {out_path}")
    return record


if __name__ == "__main__":
    sys.exit(run_cli(main))
