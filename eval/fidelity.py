"""Inception Score and FID of a conditional generator, through torch-fidelity (never re-implemented here).

    metrics = compute_fidelity(sampler, load_reference("cifar10-train")[0], num_samples=5000)

The generator is any conditional sampler of the protocol in :mod:`eval.sampler`; it draws its own labels and
latents. ``python -m gan.fidelity --run RUN`` is the command line for a GAN run folder.

Caching: the reference statistics are cached by torch-fidelity under a name built from the dataset
(file hash for an .npz), the split, and the feature extractor (with a hash of its weights); generated
samples are never cached.

Offline use: pass `--inception-weights PATH` (a local copy of torch-fidelity's
weights-inception-2015-12-05-6726825d.pth), or score with one of this project's classifiers
(`--classifier-checkpoint PATH`, see eval/features.py): such scores compare only with each other.
"""

import hashlib
import os

import torch
import torch.nn.functional as F
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity import GenerativeModelBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from common.data import DataUnavailableError, load_cifar10
from eval.features import extractor_fingerprint
from eval.sampler import check_sampler, sampler_device
from eval.settings import INCEPTION_WEIGHTS_FILE, REFERENCE_SPLITS

INCEPTION = "inception-v3-compat"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
KEY_IS_MEAN = torch_fidelity.KEY_METRIC_ISC_MEAN
KEY_IS_STD = torch_fidelity.KEY_METRIC_ISC_STD
KEY_FID = torch_fidelity.KEY_METRIC_FID
ISC_SPLITS = 10
"""Splits of the generated images for the Inception Score's mean and standard deviation (torch-fidelity's default)."""


class FeatureExtractorUnavailableError(DataUnavailableError):
    """The feature extractor's weights are neither on disk nor downloadable; the message says what to do."""


def _offline_message(feature_extractor, detail):
    return (
        f"Cannot load the weights of feature extractor {feature_extractor!r}: {detail}.\n"
        f"What to do (pick one):\n"
        f"  * on a machine with network access, download {INCEPTION_WEIGHTS_URL}\n"
        f"    and pass it here with --inception-weights PATH (Python: feature_extractor_weights_path=PATH);\n"
        f"  * run once with network access: torch-fidelity caches the weights under {torch.hub.get_dir()};\n"
        f"  * score offline with one of this project's classifiers: --classifier-checkpoint PATH\n"
        f"    (eval/features.py; these scores compare only with scores from the same classifier)."
    )


def images_to_uint8(images):
    """(B, C, H, W) floats in [0, 1] -> (B, 3, H, W) uint8 as torch-fidelity expects (grey repeated to RGB)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"generated images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    images = (images.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


class SamplerGenerativeModel(GenerativeModelBase):
    """A conditional sampler as a torch-fidelity generative model that draws its own labels and latents.

    torch-fidelity sees an unconditional model (num_classes = 0): its 0.4.0 code for conditional models
    calls `np.int`, removed in NumPy >= 1.24. Labels are drawn uniformly here instead, latents from the
    sampler's (class-conditional) prior; torch-fidelity's noise argument only sets the batch size.
    Randomness comes from torch's global generator (seed it, or use `compute_fidelity(seed=...)`).
    """

    def __init__(self, sampler):
        """
        Args:
            sampler: object with num_classes, sample_latent(labels) and decode(z, label_probs) (eval.sampler).
        """
        super().__init__()
        self.sampler_classes = check_sampler(sampler)
        self.sampler = sampler

    @property
    def z_size(self):
        return 1  # torch-fidelity's noise is ignored (only its batch size is used)

    @property
    def z_type(self):
        return "normal"

    @property
    def num_classes(self):
        return 0  # labels are drawn inside forward, see the class docstring

    def forward(self, noise):
        """
        Args:
            noise: (B, z_size) tensor from torch-fidelity; only B and its device are used.

        Returns:
            (B, 3, H, W) uint8 images on noise's device.
        """
        device = sampler_device(self.sampler) if hasattr(self.sampler, "device") else noise.device
        labels = torch.randint(self.sampler_classes, (noise.shape[0],), device=device)  # (B,)
        latents = self.sampler.sample_latent(labels)  # (B, d)
        images = self.sampler.decode(latents, F.one_hot(labels, self.sampler_classes).float())
        return images_to_uint8(images).to(noise.device)


class UInt8ImageDataset(Dataset):
    """A fixed set of images as torch-fidelity input: item i is a (3, H, W) uint8 tensor."""

    def __init__(self, images):
        """
        Args:
            images: (N, C, H, W) uint8 tensor, C in {1, 3} (grey images are repeated to RGB).
        """
        if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {getattr(images, 'dtype', type(images))}"
                f" {tuple(getattr(images, 'shape', ()))}"
            )
        if images.shape[1] not in (1, 3) or images.shape[0] == 0:
            raise ValueError(f"images must hold at least one 1- or 3-channel image, got shape {tuple(images.shape)}")
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, index):
        image = self.images[index]  # (C, H, W)
        return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


def file_digest(path, length=12):
    """First `length` hex characters of a file's SHA-256 (names caches after file content, not file name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def reference_split(reference, split=None):
    """The split a reference name implies: the suffix of "cifar10-train"/"cifar10-test", else `split` or "train"."""
    if reference in ("cifar10-train", "cifar10-test"):
        implied = reference.split("-")[1]
        if split not in (None, implied):
            raise ValueError(f"split {split!r} contradicts reference {reference!r}")
        return implied
    if not (isinstance(reference, (str, os.PathLike)) and str(reference).endswith(".npz")):
        raise ValueError(f"reference must be 'cifar10-train', 'cifar10-test' or a path to an .npz, got {reference!r}")
    split = split or "train"
    if split not in REFERENCE_SPLITS:
        raise ValueError(f"split must be one of {REFERENCE_SPLITS}, got {split!r}")
    return split


def load_reference(reference="cifar10-train", split=None):
    """CIFAR-10 reference images for FID.

    Args:
        reference: "cifar10-train" / "cifar10-test" (torchvision download through common.data), or a
            path to an .npz with x_train/x_test (e.g. an offline copy of a CIFAR-10 subset).
        split: "train" or "test"; default: the suffix of the name, or "train" for a file.

    Returns:
        (dataset, cache_name): a UInt8ImageDataset and a name naming dataset, content and split.
    """
    split = reference_split(reference, split)
    if reference in ("cifar10-train", "cifar10-test"):
        data, tag = load_cifar10(None), "cifar10"
    else:
        reference = os.path.expanduser(os.fspath(reference))
        if not os.path.isfile(reference):
            raise ValueError(f"reference file {str(reference)!r} does not exist")
        stem = os.path.splitext(os.path.basename(reference))[0]
        data, tag = load_cifar10(reference), f"{stem}-{file_digest(reference)}"
    images = data.x_train if split == "train" else data.x_test
    return UInt8ImageDataset(images), f"vmfprior-{tag}-{split}-n{images.shape[0]}"


def extractor_tag(feature_extractor, weights_path):
    """Name part that pins a feature extractor's exact weights (file digest or registered fingerprint), for cache
    names."""
    fingerprint = extractor_fingerprint(feature_extractor)
    if weights_path is not None:
        fingerprint = file_digest(weights_path)
    return f"{feature_extractor}-{fingerprint or 'default'}"


def compute_fidelity(
    sampler,
    reference=None,
    num_samples=5000,
    feature_extractor=INCEPTION,
    feature_extractor_weights_path=None,
    reference_cache_name=None,
    batch_size=64,
    device="cpu",
    seed=0,
    isc_splits=ISC_SPLITS,
    cache=True,
    cache_root=None,
    verbose=False,
):
    """Inception Score (and FID against `reference`) of a conditional sampler, via torch_fidelity.calculate_metrics.

    Args:
        sampler: conditional sampler (protocol of eval.sampler).
        reference: torch Dataset of (3, H, W) uint8 images (UInt8ImageDataset, see load_reference), or None
            to compute the Inception Score only.
        num_samples: generated images (the paper: 5000; the common protocol: 50000).
        feature_extractor: torch-fidelity extractor name ("inception-v3-compat" or one registered with
            eval.features.register_classifier_extractor).
        feature_extractor_weights_path: local weights file for the extractor (offline Inception).
        reference_cache_name: name under which the reference statistics are cached (extended here with
            the extractor and its weights' hash); None: never cache them.
        batch_size: images per batch for generation and feature extraction.
        device: "cpu" or "cuda" (torch-fidelity runs on the current CUDA device).
        seed: seeds labels, latents and IS splits; the caller's RNG state is restored afterwards.
        isc_splits: splits for the IS mean/std.
        cache: let torch-fidelity cache reference statistics (only when reference_cache_name is given).
        cache_root: torch-fidelity cache folder (default $TORCH_HOME/fidelity_cache).
        verbose: torch-fidelity progress output on stderr.

    Returns:
        dict with "inception_score_mean", "inception_score_std" and, with a reference,
        "frechet_inception_distance" (torch-fidelity's keys), all floats.
    """
    if int(num_samples) < 2 or int(num_samples) < isc_splits:
        raise ValueError(f"num_samples must be >= 2 and >= isc_splits ({isc_splits}), got {num_samples}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(
            f"feature_extractor {feature_extractor!r} is not registered with torch-fidelity; "
            f"known: {sorted(FEATURE_EXTRACTORS_REGISTRY)} (see eval/features.py to add a classifier)"
        )
    if reference is not None and not isinstance(reference, Dataset):
        raise TypeError(f"reference must be a torch Dataset of uint8 images or None, got {type(reference).__name__}")
    if feature_extractor_weights_path is not None and not os.path.isfile(feature_extractor_weights_path):
        raise FeatureExtractorUnavailableError(
            _offline_message(
                feature_extractor, f"the weights file {str(feature_extractor_weights_path)!r} does not exist"
            )
        )
    device = torch.device(device)
    kwargs = dict(
        input1=SamplerGenerativeModel(sampler),
        input1_model_num_samples=int(num_samples),
        isc=True,
        fid=reference is not None,
        isc_splits=isc_splits,
        feature_extractor=feature_extractor,
        feature_extractor_weights_path=None
        if feature_extractor_weights_path is None
        else str(feature_extractor_weights_path),
        batch_size=int(batch_size),
        cuda=device.type == "cuda",
        rng_seed=int(seed),
        verbose=verbose,
        cache=cache,
        cache_root=cache_root,
        save_cpu_ram=True,
    )
    if reference is not None:
        kwargs["input2"] = reference
        if reference_cache_name is not None:
            tag = extractor_tag(feature_extractor, feature_extractor_weights_path)
            kwargs["input2_cache_name"] = f"{reference_cache_name}-{tag}"
    fork_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(int(seed))
            metrics = torch_fidelity.calculate_metrics(**kwargs)
    except OSError as error:  # URLError, socket and HTTP errors are OSErrors: the weights download failed
        if feature_extractor_weights_path is not None or extractor_fingerprint(feature_extractor) is not None:
            raise
        raise FeatureExtractorUnavailableError(
            _offline_message(feature_extractor, f"downloading them failed ({type(error).__name__}: {error})")
        ) from error
    return {key: float(value) for key, value in metrics.items()}
