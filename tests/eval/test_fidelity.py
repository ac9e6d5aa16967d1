"""Tests for eval/fidelity.py: the generator wrapper, compute_fidelity through torch-fidelity, caching,
and the offline error path (with fake samplers; no network, no Inception weights). The command line is
gan.fidelity's (tests/gan/test_fidelity_cli.py)."""

import os
import urllib.error

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as inception_module

from eval import fidelity
from eval.fidelity import (
    KEY_FID,
    KEY_IS_MEAN,
    KEY_IS_STD,
    FeatureExtractorUnavailableError,
    SamplerGenerativeModel,
    UInt8ImageDataset,
    compute_fidelity,
)
from tests.eval.fakes import FakeSampler
from tests.eval.synthetic import NUM_CLASSES, SyntheticSampler, balanced_labels, make_images

pytestmark = pytest.mark.usefixtures("single_thread")


def _reference(count=400, seed=11, size=8):
    return UInt8ImageDataset(make_images(balanced_labels(count), size, torch.Generator().manual_seed(seed)))


def test_generator_wrapper_draws_uniform_labels_and_returns_uint8():
    sampler = FakeSampler(num_classes=4, latent_dim=3, image_size=5)
    model = SamplerGenerativeModel(sampler)
    assert (model.num_classes, model.z_size) == (0, 1)  # torch-fidelity must not draw labels (np.int bug)
    torch.manual_seed(0)
    images = model(torch.zeros(400, 1))
    assert images.shape == (400, 3, 5, 5) and images.dtype == torch.uint8
    # FakeSampler brightness is (label + 1) / 4: read the drawn labels back from the pixels
    labels = torch.round(images[:, 0, 0, 0].float() / 255 * 4).long() - 1
    counts = torch.bincount(labels, minlength=4)
    assert counts.sum() == 400
    tolerance = 4 * (400 * 0.25 * 0.75) ** 0.5  # 4 binomial standard deviations
    assert ((counts - 100).abs() < tolerance).all(), counts


def test_generator_wrapper_repeats_grey_images_to_rgb():
    model = SamplerGenerativeModel(FakeSampler(num_classes=2, channels=1, image_size=4))
    images = model(torch.zeros(3, 1))
    assert images.shape == (3, 3, 4, 4)
    assert torch.equal(images[:, 0], images[:, 2])
    with pytest.raises(TypeError, match="num_classes"):
        SamplerGenerativeModel(object())


def test_dataset_rejects_non_uint8_images():
    with pytest.raises(ValueError, match="uint8"):
        UInt8ImageDataset(torch.zeros(2, 3, 4, 4))
    assert UInt8ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))[1].shape == (3, 4, 4)


def test_compute_fidelity_scores_perfect_generator_above_noise(tiny_extractor):
    reference = _reference()
    common = dict(num_samples=400, feature_extractor=tiny_extractor, batch_size=100, isc_splits=4)
    perfect = compute_fidelity(SyntheticSampler(), reference, **common)
    noise = compute_fidelity(SyntheticSampler(noise_images=True), reference, **common)
    assert set(perfect) == {KEY_IS_MEAN, KEY_IS_STD, KEY_FID}
    assert 3.8 < perfect[KEY_IS_MEAN] <= NUM_CLASSES + 1e-9
    assert 0 < perfect[KEY_FID] and noise[KEY_FID] > 20 * perfect[KEY_FID]
    assert noise[KEY_IS_MEAN] < perfect[KEY_IS_MEAN]


def test_compute_fidelity_is_seeded_and_restores_the_callers_rng(tiny_extractor):
    state = torch.get_rng_state()
    kwargs = dict(num_samples=100, feature_extractor=tiny_extractor, batch_size=50, isc_splits=2)
    first = compute_fidelity(SyntheticSampler(noise_images=True), None, seed=3, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    again = compute_fidelity(SyntheticSampler(noise_images=True), None, seed=3, **kwargs)
    other = compute_fidelity(SyntheticSampler(noise_images=True), None, seed=4, **kwargs)
    assert KEY_FID not in first
    assert first == again and first != other


def test_only_reference_statistics_are_cached(tiny_extractor, tmp_path):
    kwargs = dict(
        num_samples=100, feature_extractor=tiny_extractor, batch_size=50, isc_splits=2, cache_root=str(tmp_path)
    )
    compute_fidelity(SyntheticSampler(), _reference(), reference_cache_name="synthetic-ref", **kwargs)
    cached = sorted(os.listdir(tmp_path))
    assert cached and all(name.startswith(f"synthetic-ref-{tiny_extractor}-") for name in cached), cached
    first = cached
    compute_fidelity(SyntheticSampler(noise_images=True), _reference(), reference_cache_name="synthetic-ref", **kwargs)
    assert sorted(os.listdir(tmp_path)) == first  # a second generator adds nothing to the cache
    compute_fidelity(SyntheticSampler(), _reference(), reference_cache_name=None, **kwargs)
    assert sorted(os.listdir(tmp_path)) == first


def test_missing_weights_file_gives_clear_message(tmp_path):
    missing = tmp_path / "no-such-weights.pth"
    with pytest.raises(FeatureExtractorUnavailableError, match="--inception-weights") as error:
        compute_fidelity(FakeSampler(), None, num_samples=10, feature_extractor_weights_path=missing)
    assert str(missing) in str(error.value)


def test_failed_download_gives_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", offline)  # never the real download
    with pytest.raises(FeatureExtractorUnavailableError, match="downloading them failed") as error:
        compute_fidelity(FakeSampler(image_size=4), None, num_samples=10, batch_size=10)
    assert "--inception-weights" in str(error.value) and "--classifier-checkpoint" in str(error.value)


def test_compute_fidelity_rejects_bad_arguments(tiny_extractor):
    with pytest.raises(ValueError, match="feature_extractor"):
        compute_fidelity(FakeSampler(), None, num_samples=10, feature_extractor="no-such-extractor")
    with pytest.raises(ValueError, match="num_samples"):
        compute_fidelity(FakeSampler(), None, num_samples=5, feature_extractor=tiny_extractor)
    with pytest.raises(TypeError, match="reference"):
        compute_fidelity(FakeSampler(), torch.zeros(3), num_samples=10, feature_extractor=tiny_extractor)


def test_reference_split_resolution():
    assert fidelity.reference_split("cifar10-test") == "test"
    assert fidelity.reference_split("data/x.npz") == "train"
    assert fidelity.reference_split("data/x.npz", "test") == "test"
    with pytest.raises(ValueError, match="contradicts"):
        fidelity.reference_split("cifar10-train", "test")
    with pytest.raises(ValueError, match="split"):
        fidelity.reference_split("data/x.npz", "validation")
    with pytest.raises(ValueError, match="reference"):
        fidelity.reference_split("imagenet")
