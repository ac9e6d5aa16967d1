"""Tests for eval/classaware.py against hand-built generators whose scores are known.

* A generator that returns the real images of a pool, class by class, scores GAN-test exactly the classifier's
  accuracy on that pool, and intra-FID 0 against the pool; one that returns another class's images scores
  GAN-test near 0 and a large intra-FID.
* GAN-train of a generator that returns fresh real images matches a classifier trained on real images; one that
  returns the wrong class scores near 0.
* Intra-FID per class matches a Fréchet distance computed here with scipy's matrix square root.
"""

import numpy as np
import pytest
import scipy.linalg
import torch

from eval.classaware import (
    KEY_GAN_TEST,
    KEY_GAN_TRAIN,
    KEY_INTRA_FID,
    balanced_labels,
    gan_test,
    gan_train,
    generate,
    intra_fid,
)
from eval.classifiers import accuracy, build_classifier, register_architecture, train_on_images
from tests.eval.synthetic import NUM_CLASSES, SyntheticSampler, TinyClassifier, make_images

pytestmark = pytest.mark.usefixtures("single_thread")

register_architecture("tiny-test", lambda num_classes: TinyClassifier(), replace=True)


def mislabeled_pool(per_class=50, wrong_fraction=0.2, seed=3):
    """Balanced labels; the first ``wrong_fraction`` of each class's images show the next class instead."""
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)  # (N,)
    shown = labels.clone()
    wrong = int(per_class * wrong_fraction)
    for c in range(NUM_CLASSES):
        shown[c * per_class : c * per_class + wrong] = (c + 1) % NUM_CLASSES
    return make_images(shown, generator=torch.Generator().manual_seed(seed)), labels


class PoolSampler:
    """Returns the pool's images of class ``(label + shift) mod C`` in order: each request takes the next one."""

    def __init__(self, images, labels, shift=0):
        self.num_classes = NUM_CLASSES
        self.latent_dim = 1
        self.images, self.labels, self.shift = images, labels, shift
        self.next_index = [0] * NUM_CLASSES

    def sample_latent(self, labels):
        z = torch.zeros(len(labels), 1)
        for row, label in enumerate(labels.tolist()):
            target = (label + self.shift) % NUM_CLASSES
            z[row, 0] = self.next_index[target]
            self.next_index[target] += 1
        return z

    def decode(self, z, label_probs):
        targets = (label_probs.argmax(-1) + self.shift) % NUM_CLASSES
        rows = [
            torch.nonzero(self.labels == t).flatten()[int(i) % int((self.labels == t).sum())]
            for t, i in zip(targets.tolist(), z[:, 0].tolist())
        ]
        return self.images[torch.stack(rows)].float() / 255.0


class WrongClassSampler(SyntheticSampler):
    """Fresh synthetic images of the next class."""

    def decode(self, z, label_probs):
        return make_images((label_probs.argmax(-1) + 1) % NUM_CLASSES, self.size).float() / 255.0


def test_generate_is_seeded_and_keeps_the_callers_rng():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    labels = balanced_labels(8, NUM_CLASSES)
    first = generate(SyntheticSampler(), labels, batch_size=3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first.shape == (8, 3, 8, 8) and first.dtype == torch.uint8
    assert torch.equal(first, generate(SyntheticSampler(), labels, batch_size=3, seed=1))
    assert not torch.equal(first, generate(SyntheticSampler(), labels, batch_size=3, seed=2))
    with pytest.raises(ValueError, match="labels must lie"):
        generate(SyntheticSampler(), torch.tensor([0, NUM_CLASSES]))


def test_gan_test_of_real_images_is_the_classifiers_real_accuracy(tiny_classifier):
    images, labels = mislabeled_pool()
    expected = accuracy(tiny_classifier, images, labels)
    assert expected == pytest.approx(0.8, abs=0.03)  # the 20 % showing another class are misclassified
    result = gan_test(PoolSampler(images, labels), tiny_classifier, num_samples=len(labels), batch_size=37)
    assert result[KEY_GAN_TEST] == expected
    assert result["gan_test_num_samples"] == len(labels)


def test_gan_test_of_wrong_class_images_is_near_zero(tiny_classifier):
    images, labels = mislabeled_pool(wrong_fraction=0.0)
    assert gan_test(PoolSampler(images, labels, shift=1), tiny_classifier, num_samples=200)[KEY_GAN_TEST] < 0.05
    assert gan_test(WrongClassSampler(), tiny_classifier, num_samples=200)[KEY_GAN_TEST] < 0.05
    with pytest.raises(TypeError, match="nn.Module"):
        gan_test(SyntheticSampler(), lambda x: x)


def _scipy_frechet(a, b):
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_intra_fid_is_zero_for_the_reference_itself_and_large_for_swapped_classes(tiny_classifier, tiny_extractor):
    images, labels = mislabeled_pool(per_class=60, wrong_fraction=0.0)
    same = intra_fid(PoolSampler(images, labels), images, labels, tiny_extractor)
    assert len(same["intra_fid_per_class"]) == NUM_CLASSES and same["intra_fid_num_samples"] == len(labels)
    assert abs(same[KEY_INTRA_FID]) < 1e-4
    swapped = intra_fid(PoolSampler(images, labels, shift=1), images, labels, tiny_extractor)
    # a fresh draw of the right classes: the noise floor that a class swap must clear by far
    fresh = intra_fid(SyntheticSampler(), images, labels, tiny_extractor, seed=4)
    assert swapped[KEY_INTRA_FID] > 10 * fresh[KEY_INTRA_FID] > 0
    # independent reference: the tiny classifier's own features and scipy's matrix square root
    with torch.no_grad():
        real = tiny_classifier.features(images.float() / 255.0)
    for c, value in enumerate(swapped["intra_fid_per_class"]):
        fake = real[labels == (c + 1) % NUM_CLASSES]
        assert value == pytest.approx(_scipy_frechet(fake, real[labels == c]), rel=1e-4)
    assert swapped[KEY_INTRA_FID] == pytest.approx(np.mean(swapped["intra_fid_per_class"]))


def test_intra_fid_rejects_a_reference_missing_a_class(tiny_extractor):
    images, labels = mislabeled_pool(per_class=4, wrong_fraction=0.0)
    keep = labels != 2
    with pytest.raises(ValueError, match="at least twice"):
        intra_fid(SyntheticSampler(), images[keep], labels[keep], tiny_extractor)


def test_gan_train_of_real_images_matches_a_classifier_trained_on_real_data():
    test_labels = balanced_labels(200, NUM_CLASSES)
    test_images = make_images(test_labels, generator=torch.Generator().manual_seed(9))
    options = dict(epochs=3, batch_size=32, learning_rate=0.05)
    real_labels = balanced_labels(256, NUM_CLASSES)
    real = train_on_images(
        make_images(real_labels, generator=torch.Generator().manual_seed(8)),
        real_labels,
        "tiny-test",
        NUM_CLASSES,
        **options,
    )
    real_accuracy = accuracy(real, test_images, test_labels)
    assert real_accuracy > 0.9  # the baseline must be informative for the comparison to mean anything
    result = gan_train(SyntheticSampler(), "tiny-test", 256, test_images, test_labels, **options)
    assert result[KEY_GAN_TRAIN] == pytest.approx(real_accuracy, abs=0.05)
    wrong = gan_train(WrongClassSampler(), "tiny-test", 256, test_images, test_labels, **options)
    assert wrong[KEY_GAN_TRAIN] < 0.05


def test_named_architectures_build_and_unknown_names_are_refused():
    for name, width in (("convnet-8", 32), ("wrn-10-1", 64)):
        model = build_classifier(name, num_classes=10)
        assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, width)
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="architecture must be"):
        build_classifier("resnet-50", 10)
