"""Class-aware scores of a conditional generator: GAN-test, GAN-train (Shmelkov, Schmid & Alahari, "How good is
my GAN?", ECCV 2018) and intra-class FID.

    gan_test(sampler, classifier, num_samples=10000)                        # accuracy of a real-trained classifier
    gan_train(sampler, "wrn-10-1", num_samples, test_images, test_labels)   # real test accuracy, fake-trained
    intra_fid(sampler, images, labels, feature_extractor="inception-v3-compat")   # FID per class, averaged

* **GAN-test**: a classifier trained on real images classifies generated ones; its accuracy on them (labels:
  the classes the generator was asked for). High when the images look like their class, but a generator that
  returns a few perfect images per class scores high too: GAN-test ignores diversity.
* **GAN-train**: a classifier trained only on generated images classifies the real test set. It needs images
  that are both right and varied; compare it with the same classifier trained on as many real images.
* **Intra-class FID**: the Fréchet distance between generated and real images of each class, in one feature
  extractor's features, averaged over classes. Features and the distance come from torch-fidelity
  (``create_feature_extractor``, ``fid_features_to_statistics``, ``fid_statistics_to_metric``).

The generator is any conditional sampler of :mod:`eval.sampler`. Labels are balanced (class ``i mod C`` for
the i-th image) and every function seeds its own draws (the caller's RNG state is restored).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from eval.classifiers import accuracy, train_on_images
from eval.fidelity import UInt8ImageDataset, images_to_uint8
from eval.sampler import check_sampler, sampler_device

__all__ = [
    "KEY_GAN_TEST",
    "KEY_GAN_TRAIN",
    "KEY_INTRA_FID",
    "balanced_labels",
    "generate",
    "gan_test",
    "gan_train",
    "intra_fid",
    "extract_features",
]

KEY_GAN_TEST = "gan_test"
KEY_GAN_TRAIN = "gan_train"
KEY_INTRA_FID = "intra_fid"


def balanced_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """(num_samples,) long: label ``i mod num_classes`` for the i-th sample (every class equally often, +-1)."""
    if int(num_samples) < 1 or int(num_classes) < 1:
        raise ValueError(f"num_samples and num_classes must be positive, got {num_samples} and {num_classes}")
    return torch.arange(int(num_samples)) % int(num_classes)


@torch.no_grad()
def generate(sampler, labels: torch.Tensor, batch_size: int = 250, seed: int = 0) -> torch.Tensor:
    """Images of ``sampler`` for the given labels, as uint8.

    Args:
        sampler: conditional sampler (eval.sampler).
        labels: (N,) long in [0, C).
        batch_size: images per sampler call.
        seed: seeds the latents (torch's global generator, forked: the caller's state is restored).

    Returns:
        (N, 3, H, W) uint8 on the CPU (grey images repeated to RGB).
    """
    num_classes = check_sampler(sampler)
    if labels.dim() != 1 or labels.is_floating_point() or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty (N,) integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    device = sampler_device(sampler)
    chunks = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        for start in range(0, len(labels), int(batch_size)):
            batch = labels[start : start + int(batch_size)].to(device)  # (b,)
            images = sampler.decode(sampler.sample_latent(batch), F.one_hot(batch, num_classes).float())
            chunks.append(images_to_uint8(images).cpu())
    return torch.cat(chunks)


def gan_test(
    sampler,
    classifier: nn.Module,
    num_samples: int = 10_000,
    batch_size: int = 250,
    seed: int = 0,
    generated: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """GAN-test: accuracy of a classifier trained on real images, on the sampler's images of balanced labels.

    Args:
        sampler: conditional sampler (eval.sampler).
        classifier: nn.Module mapping images in [0, 1] (B, 3, H, W) to logits (B, C), on its device
            (e.g. ``gan.classifier.load_classifier(path)``).
        num_samples: generated images.
        batch_size: images per sampler / classifier call.
        seed: seeds the generated images.
        generated: (images uint8 (N, 3, H, W), labels (N,)) drawn already (shared with other scores), or None.

    Returns:
        {"gan_test": accuracy in [0, 1], "gan_test_num_samples": N}.
    """
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be an nn.Module, got {type(classifier).__name__}")
    if generated is None:
        labels = balanced_labels(num_samples, check_sampler(sampler))
        generated = (generate(sampler, labels, batch_size, seed), labels)
    images, labels = generated
    return {KEY_GAN_TEST: accuracy(classifier, images, labels, batch_size), "gan_test_num_samples": len(labels)}


def gan_train(
    sampler,
    architecture: str,
    num_samples: int,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 10,
    batch_size: int = 128,
    learning_rate: float = 0.05,
    augmentation: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    generated: tuple[torch.Tensor, torch.Tensor] | None = None,
    sample_batch_size: int = 250,
) -> dict:
    """GAN-train: train a classifier of ``architecture`` on ``num_samples`` generated images, score real test images.

    Args:
        sampler: conditional sampler (eval.sampler).
        architecture: a name for :func:`eval.classifiers.build_classifier` (e.g. "wrn-10-1", "convnet-32").
        num_samples: generated training images (Shmelkov et al.: as many as the real training set).
        test_images: (M, C, H, W) uint8 real test images.
        test_labels: (M,) long.
        epochs, batch_size, learning_rate, augmentation: the classifier's training
            (eval.classifiers.train_on_images; augmentation = random crops and flips of 32x32 images).
        seed: seeds the generated images and the training.
        device: where to train.
        generated: (images uint8 (N, 3, H, W), labels (N,)) drawn already, or None.
        sample_batch_size: images per sampler call.

    Returns:
        {"gan_train": real test accuracy, "gan_train_num_samples": N, "gan_train_architecture": name,
        "gan_train_epochs": epochs}.
    """
    num_classes = check_sampler(sampler)
    if generated is None:
        labels = balanced_labels(num_samples, num_classes)
        generated = (generate(sampler, labels, sample_batch_size, seed), labels)
    images, labels = generated
    model = train_on_images(
        images,
        labels,
        architecture,
        num_classes,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        augmentation=augmentation,
        seed=seed,
        device=device,
    )
    return {
        KEY_GAN_TRAIN: accuracy(model, test_images, test_labels),
        "gan_train_num_samples": len(labels),
        "gan_train_architecture": architecture,
        "gan_train_epochs": epochs,
    }


def extract_features(
    images: torch.Tensor,
    feature_extractor: str,
    weights_path: str | None = None,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """FID features of uint8 images through a torch-fidelity extractor (Inception's pool, a classifier's penultimate).

    Args:
        images: (N, C, H, W) uint8.
        feature_extractor: a name in torch-fidelity's registry.
        weights_path: local weights of the extractor (offline Inception), or None.
        batch_size: images per forward.
        device: "cpu" or "cuda".

    Returns:
        (N, D) float64 features on the CPU.
    """
    if feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(
            f"feature_extractor {feature_extractor!r} is not registered with torch-fidelity; "
            f"known: {sorted(FEATURE_EXTRACTORS_REGISTRY)}"
        )
    if weights_path is not None and not os.path.isfile(weights_path):
        raise ValueError(f"feature extractor weights {str(weights_path)!r} do not exist")
    layer = FEATURE_EXTRACTORS_REGISTRY[feature_extractor].get_default_feature_layer_for_metric("fid")
    cuda = torch.device(device).type == "cuda"
    kwargs = {} if weights_path is None else {"feature_extractor_weights_path": str(weights_path)}
    extractor = create_feature_extractor(feature_extractor, [layer], cuda=cuda, verbose=False, **kwargs)
    features = get_featuresdict_from_dataset(UInt8ImageDataset(images), extractor, int(batch_size), cuda, True, False)
    return features[layer].double()


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance of two feature sets' Gaussian fits, as torch-fidelity computes FID.

    Args:
        features_a: (N_a, D), features_b: (N_b, D); each needs at least two rows.

    Returns:
        the distance (float).
    """
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError(f"each feature set needs at least two rows, got {len(features_a)} and {len(features_b)}")
    statistics_a = fid_features_to_statistics(features_a.double().cpu())
    statistics_b = fid_features_to_statistics(features_b.double().cpu())
    return float(fid_statistics_to_metric(statistics_a, statistics_b, False)[KEY_METRIC_FID])


def intra_fid(
    sampler,
    reference_images: torch.Tensor,
    reference_labels: torch.Tensor,
    feature_extractor: str,
    num_samples_per_class: int | None = None,
    weights_path: str | None = None,
    batch_size: int = 250,
    seed: int = 0,
    device: str | torch.device = "cpu",
    generated: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """Intra-class FID: FID between the sampler's and the reference's images of each class, averaged over classes.

    Args:
        sampler: conditional sampler (eval.sampler) with C classes.
        reference_images: (M, C_img, H, W) uint8 real images.
        reference_labels: (M,) long; every class needs at least two images.
        feature_extractor: torch-fidelity extractor name (e.g. "inception-v3-compat", or a classifier registered
            with eval.features.register_classifier_extractor).
        num_samples_per_class: generated images per class (default: as many as the reference has of that class).
        weights_path: local weights of the extractor, or None.
        batch_size: images per sampler / extractor call.
        seed: seeds the generated images.
        device: where the extractor runs.
        generated: (images uint8, labels) drawn already (each class needs >= 2 images), or None.

    Returns:
        {"intra_fid": mean over classes, "intra_fid_per_class": [C floats], "intra_fid_num_samples": generated
        images in all}.
    """
    num_classes = check_sampler(sampler)
    counts = torch.bincount(reference_labels.cpu(), minlength=num_classes)
    if len(counts) != num_classes or int(counts.min()) < 2:
        raise ValueError(
            f"reference_labels must hold every one of the {num_classes} classes at least twice, "
            f"got counts {counts.tolist()}"
        )
    if generated is None:
        if num_samples_per_class is None:
            labels = torch.repeat_interleave(torch.arange(num_classes), counts)
        else:
            labels = balanced_labels(int(num_samples_per_class) * num_classes, num_classes)
        generated = (generate(sampler, labels, batch_size, seed), labels)
    images, labels = generated
    fake = extract_features(images, feature_extractor, weights_path, batch_size, device)  # (N, D)
    real = extract_features(reference_images, feature_extractor, weights_path, batch_size, device)  # (M, D)
    per_class = [
        frechet_distance(fake[labels.cpu() == c], real[reference_labels.cpu() == c]) for c in range(num_classes)
    ]
    return {
        KEY_INTRA_FID: math.fsum(per_class) / num_classes,
        "intra_fid_per_class": per_class,
        "intra_fid_num_samples": len(labels),
    }
