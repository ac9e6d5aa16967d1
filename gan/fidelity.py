"""IS and FID of a GAN run folder, through ``eval.fidelity`` (torch-fidelity).

    python -m gan.fidelity --run RUN [--num-samples 5000] [--reference cifar10-train|cifar10-test|PATH.npz|none]
        [--inception-weights PATH | --classifier-checkpoint PATH] [--batch-size 64] [--cpu]

prints the scores and writes ``RUN/fidelity-<extractor>-n<num_samples>.json`` (read by ``eval.report``).
Offline: ``--inception-weights`` takes a local copy of torch-fidelity's Inception weights;
``--classifier-checkpoint`` scores with a ``gan.classifier`` WRN instead (such scores compare only with each
other).
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import sys

import torch_fidelity

from common.cli import ArgumentParser, UserError, run_cli, select_device
from common.data import DataUnavailableError
from common.runs import atomic_write_text, read_run
from eval.fidelity import (INCEPTION, ISC_SPLITS, INCEPTION_WEIGHTS_FILE, KEY_FID, KEY_IS_MEAN, KEY_IS_STD, REFERENCE_SPLITS,
                           compute_fidelity, load_reference, reference_split)
from gan.classifier import load_classifier
from gan.sampling import load_sampler

__all__ = ["classifier_extractor", "main"]


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


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m gan.fidelity", description="IS and FID of a GAN run through torch-fidelity.")
    parser.add_argument("--run", required=True, help="run folder written by gan/train.py")
    parser.add_argument("--num-samples", type=int, default=5000, help="generated images")
    parser.add_argument("--reference", default="cifar10-train",
                        help="cifar10-train, cifar10-test (torchvision download) or PATH.npz; 'none' for IS only")
    parser.add_argument("--reference-split", choices=REFERENCE_SPLITS, default=None,
                        help="split of an .npz reference (default train)")
    parser.add_argument("--inception-weights", default=None, help=f"local copy of {INCEPTION_WEIGHTS_FILE}")
    parser.add_argument("--classifier-checkpoint", default=None,
                        help="score with this gan.classifier checkpoint instead of Inception (offline, CPU)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seeds labels, latents and the IS splits")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    parser.add_argument("--out", default=None, help="JSON path (default RUN/fidelity-<extractor>-n<N>.json)")
    parser.add_argument("--no-cache", action="store_true", help="do not cache reference statistics")
    parser.add_argument("--verbose", action="store_true", help="torch-fidelity's progress output")
    return parser


def main(argv=None) -> dict:
    """Score a GAN run; returns the record written to JSON."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.classifier_checkpoint is not None and args.inception_weights is not None:
        raise UserError("--classifier-checkpoint replaces --inception-weights; pass only one")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.num_samples < ISC_SPLITS:
        raise UserError(f"--num-samples must be at least {ISC_SPLITS} (the Inception Score's splits), got {args.num_samples}")
    _, run_config = read_run(args.run, ("gan",))
    device = select_device(args.cpu)
    feature_extractor = INCEPTION if args.classifier_checkpoint is None else classifier_extractor(args.classifier_checkpoint)
    sampler = load_sampler(args.run, device=device)
    reference, cache_name = None, None
    if args.reference != "none":
        try:
            reference, cache_name = load_reference(args.reference, args.reference_split)
        except DataUnavailableError as error:
            raise DataUnavailableError(f"reference images unavailable: {error} Pass --reference PATH.npz, or "
                                       "--reference none for IS only.") from error
    metrics = compute_fidelity(
        sampler, reference, num_samples=args.num_samples, feature_extractor=feature_extractor,
        feature_extractor_weights_path=args.inception_weights,
        reference_cache_name=None if args.no_cache else cache_name, batch_size=args.batch_size,
        device=device, seed=args.seed, verbose=args.verbose,
    )
    record = dict(metrics)
    record.update(
        run=os.path.abspath(args.run), kind="gan", noise=run_config.get("sampler"), num_samples=args.num_samples,
        reference=args.reference,
        reference_split=None if reference is None else reference_split(args.reference, args.reference_split),
        reference_id=cache_name, feature_extractor=feature_extractor, seed=args.seed, device=str(device),
        command=shlex.join(["python", "-m", "gan.fidelity", *argv]),
        torch_fidelity_version=torch_fidelity.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    out_path = args.out or os.path.join(args.run, f"fidelity-{feature_extractor}-n{args.num_samples}.json")
    atomic_write_text(out_path, json.dumps(record, indent=2) + "\n")
    line = f"IS {metrics[KEY_IS_MEAN]:.3f} ± {metrics[KEY_IS_STD]:.3f}"
    if KEY_FID in metrics:
        line += f"  FID {metrics[KEY_FID]:.3f}"
    print(f"{line}  ({feature_extractor}, {args.num_samples} samples)\nwrote {out_path}")
    return record


if __name__ == "__main__":
    sys.exit(run_cli(main))
