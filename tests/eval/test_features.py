"""Tests for eval/features.py through the real torch_fidelity.calculate_metrics path."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn
import torch_fidelity

from eval.features import FEATURE_LOGITS, FEATURE_PENULTIMATE, extractor_fingerprint, register_classifier_extractor
from eval.fidelity import UInt8ImageDataset
from tests.eval.synthetic import NUM_CLASSES, TinyClassifier, balanced_labels, make_images

pytestmark = pytest.mark.usefixtures("single_thread")

QUIET = dict(verbose=False, cuda=False, save_cpu_ram=True, cache=False, batch_size=100)


def _dataset(count, seed, labels=None):
    generator = torch.Generator().manual_seed(seed)
    labels = balanced_labels(count) if labels is None else labels
    return UInt8ImageDataset(make_images(labels, generator=generator))


def _reference_fid(model, images_1, images_2):
    """Independent FID: float64 moments of the classifier features, scipy.linalg.sqrtm."""
    with torch.no_grad():
        feats = [model.features(x.float() / 255.0).double().numpy() for x in (images_1, images_2)]
    mu_1, mu_2 = (f.mean(0) for f in feats)
    sigma_1, sigma_2 = (np.cov(f, rowvar=False) for f in feats)
    covmean = scipy.linalg.sqrtm(sigma_1 @ sigma_2).real
    return float(((mu_1 - mu_2) ** 2).sum() + np.trace(sigma_1 + sigma_2 - 2 * covmean))


def test_fid_of_a_dataset_against_itself_is_zero(tiny_extractor):
    data = _dataset(400, seed=1)
    same = UInt8ImageDataset(data.images.clone())
    metrics = torch_fidelity.calculate_metrics(
        input1=data, input2=same, fid=True, feature_extractor=tiny_extractor, **QUIET
    )
    assert abs(metrics[torch_fidelity.KEY_METRIC_FID]) < 1e-6


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # dead ReLU features: singular covariances
def test_fid_matches_independent_computation_and_separates_noise_from_data(tiny_extractor, tiny_classifier):
    data_1, data_2 = _dataset(400, seed=1), _dataset(400, seed=2)
    noise = UInt8ImageDataset(
        torch.randint(0, 256, (400, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    )
    fid = {}
    for name, other in (("data", data_2), ("noise", noise)):
        metrics = torch_fidelity.calculate_metrics(
            input1=other, input2=data_1, fid=True, feature_extractor=tiny_extractor, **QUIET
        )
        fid[name] = metrics[torch_fidelity.KEY_METRIC_FID]
        expected = _reference_fid(tiny_classifier, other.images, data_1.images)
        assert fid[name] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert fid["data"] > 0  # two samples of one distribution: small but not zero
    assert fid["noise"] > 20 * fid["data"]


def test_inception_score_of_confident_classifier_is_near_class_count(tiny_extractor, tiny_classifier):
    data = _dataset(800, seed=4)
    metrics = torch_fidelity.calculate_metrics(
        input1=data, isc=True, isc_splits=1, feature_extractor=tiny_extractor, **QUIET
    )
    score = metrics[torch_fidelity.KEY_METRIC_ISC_MEAN]
    assert 3.9 < score <= NUM_CLASSES + 1e-9
    # independent: exp(E_x KL(p(y|x) || p(y))) from the classifier's own softmax
    with torch.no_grad():
        probs = tiny_classifier(data.images.double().div(255).float()).double().softmax(-1)
    marginal = probs.mean(0, keepdim=True)
    expected = torch.exp((probs * (probs.clamp_min(1e-300).log() - marginal.log())).sum(-1).mean()).item()
    assert score == pytest.approx(expected, rel=1e-5)


def test_inception_score_of_a_single_class_is_one(tiny_extractor):
    data = _dataset(200, seed=5, labels=torch.full((200,), 2))
    metrics = torch_fidelity.calculate_metrics(
        input1=data, isc=True, isc_splits=2, feature_extractor=tiny_extractor, **QUIET
    )
    assert 1.0 - 1e-9 <= metrics[torch_fidelity.KEY_METRIC_ISC_MEAN] < 1.01


def test_extractor_returns_requested_features_in_order(tiny_extractor, tiny_classifier):
    cls = torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY[tiny_extractor]
    extractor = cls(tiny_extractor, [FEATURE_LOGITS, FEATURE_PENULTIMATE])
    images = make_images(balanced_labels(6))
    logits, features = extractor(images)
    with torch.no_grad():
        expected = tiny_classifier.features(images.float() / 255.0)
    assert features.shape == (6, 32) and logits.shape == (6, NUM_CLASSES)
    assert features.dtype == torch.float64
    torch.testing.assert_close(features, expected.double(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        extractor(images.float())
    assert cls.get_default_feature_layer_for_metric("isc") == FEATURE_LOGITS
    assert cls.get_default_feature_layer_for_metric("fid") == FEATURE_PENULTIMATE


def test_checkpoint_weights_replace_the_initial_ones(tmp_path, tiny_classifier):
    path = tmp_path / "classifier.pt"
    torch.save({"model": tiny_classifier.state_dict(), "step": 3}, path)
    cls = register_classifier_extractor("vmfprior-test-from-checkpoint", TinyClassifier, checkpoint=path, replace=True)
    reference = register_classifier_extractor("vmfprior-test-from-module", tiny_classifier, replace=True)
    assert cls.fingerprint == reference.fingerprint == extractor_fingerprint("vmfprior-test-from-module")
    fresh = register_classifier_extractor("vmfprior-test-fresh", TinyClassifier, replace=True)
    assert fresh.fingerprint != cls.fingerprint
    images = make_images(balanced_labels(4))
    torch.testing.assert_close(
        cls("x", [FEATURE_PENULTIMATE])(images)[0], reference("x", [FEATURE_PENULTIMATE])(images)[0]
    )


def test_registered_model_is_a_copy(tiny_classifier):
    model = TinyClassifier()
    cls = register_classifier_extractor("vmfprior-test-copy", model, replace=True)
    images = make_images(balanced_labels(2))
    before = cls("x", [FEATURE_PENULTIMATE])(images)[0]
    with torch.no_grad():
        model.conv.weight.add_(1.0)
    after = cls("x", [FEATURE_PENULTIMATE])(images)[0]
    torch.testing.assert_close(before, after)


def test_registration_rejects_bad_arguments(tiny_classifier):
    register_classifier_extractor("vmfprior-test-once", tiny_classifier, replace=True)
    with pytest.raises(ValueError, match="already registered"):
        register_classifier_extractor("vmfprior-test-once", tiny_classifier)
    with pytest.raises(ValueError, match="built-in"):
        register_classifier_extractor("inception-v3-compat", tiny_classifier, replace=True)
    with pytest.raises(ValueError, match="name"):
        register_classifier_extractor(" padded", tiny_classifier)
    with pytest.raises(TypeError, match="features"):
        register_classifier_extractor("vmfprior-test-no-features", nn.Linear(3, 2))
    with pytest.raises(TypeError, match="preprocess"):
        register_classifier_extractor("vmfprior-test-bad-preprocess", tiny_classifier, preprocess=3)


def test_preprocess_is_applied_before_features(tiny_classifier):
    cls = register_classifier_extractor(
        "vmfprior-test-preprocess", tiny_classifier, replace=True, preprocess=lambda x: 1.0 - x
    )
    images = make_images(balanced_labels(3))
    with torch.no_grad():
        expected = tiny_classifier.features(1.0 - images.float() / 255.0)
    torch.testing.assert_close(cls("x", [FEATURE_PENULTIMATE])(images)[0], expected.double(), rtol=1e-6, atol=1e-6)
