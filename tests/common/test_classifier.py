"""common.classifier: what one training step contains, exact resume, the head statistics against scipy, and the
checkpoint the vMF prior reads."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import optimize, special

from common.classifier import CHECKPOINT_NAME, ClassifierSettings, head_statistics, head_statistics_of, train_classifier
from common.data import ImageData
from common.run import epoch_order, load_checkpoint, read_metrics
from vmfprior import VMFPrior


class Recorder(torch.nn.Module):
    """A linear classifier on 4 pixels that records the images of every training forward pass."""

    def __init__(self, nan_after=None):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 3)
        self.head = torch.nn.Linear(3, 2)
        self.seen = []
        self.nan_after = nan_after

    def penultimate(self, x):
        return self.hidden(x.reshape(x.shape[0], -1))

    def forward(self, x):
        logits = self.head(self.penultimate(x))
        if self.training:
            self.seen.append(x.detach().clone())
            if self.nan_after is not None and len(self.seen) > self.nan_after:
                logits = logits * float("nan")
        return logits


def _data(n_train=24, n_test=10):
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_test, 1, 2, 2), dtype=torch.uint8, generator=generator)
    y = (x.float().reshape(-1, 4).mean(1) > 127).long()
    return ImageData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=2)


def _config(tmp_path, name, **overrides):
    return dataclasses.replace(
        ClassifierSettings(
            out=str(tmp_path / name), epochs=3, batch_size=8, stats_images=20, learning_rate=0.05, num_validation=4
        ),
        **overrides,
    )


def _train(config, model=None, **kwargs):
    torch.manual_seed(config.seed)
    model = model or Recorder()
    result = train_classifier(config, model, _data(), kind="toy-classifier", log=lambda *_: None, **kwargs)
    return model, result


def test_each_epoch_sees_every_training_image_once_in_epoch_order(tmp_path):
    data = _data()
    model, result = _train(_config(tmp_path, "a"))
    x_train = data.x_train[:-4].float() / 255.0  # the last 4 are the validation split
    assert len(model.seen) == 3 * (20 // 8)  # steps: floor(20 / 8) per epoch, 3 epochs
    for epoch in (1, 2, 3):
        order = epoch_order(20, 0, epoch)
        expected = torch.cat([x_train[order[s * 8 : (s + 1) * 8]] for s in range(2)])
        torch.testing.assert_close(torch.cat(model.seen[2 * (epoch - 1) : 2 * epoch]), expected)
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 3] and "test_accuracy" in records[-1]
    assert 0 <= result["test_accuracy"] <= 1


def test_augmentation_sees_the_batch_and_cosine_schedule_sets_the_rate(tmp_path, monkeypatch):
    rates = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    model, _ = _train(_config(tmp_path, "a", schedule="cosine", epochs=2), augment=lambda x: 1.0 - x)
    x_train = _data().x_train[:-4].float() / 255.0
    torch.testing.assert_close(model.seen[0], 1.0 - x_train[epoch_order(20, 0, 1)[:8]])
    assert rates == pytest.approx([0.05 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)])


def test_interrupted_classifier_resumes_exactly(tmp_path):
    _, straight = _train(_config(tmp_path, "a"))
    _, partial = _train(_config(tmp_path, "b", stop_after=1))
    assert partial["stopped"] == "stop_after" and not (tmp_path / "b" / CHECKPOINT_NAME).exists()
    _, resumed = _train(_config(tmp_path, "b", resume=True))
    a = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    b = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert straight["kappa_mle"] == resumed["kappa_mle"]
    again = _train(_config(tmp_path, "b", resume=True))[1]
    assert again["stopped"] == "already finished" and again["test_accuracy"] == resumed["test_accuracy"]


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    _, result = _train(_config(tmp_path, "a"), model=Recorder(nan_after=3))
    assert result["stopped"] == "non-finite loss" and result["epochs"] == 1
    assert load_checkpoint(tmp_path / "a" / "last.pt")["step"] == 1


def test_checkpoint_schema_feeds_the_prior(tmp_path):
    _, result = _train(_config(tmp_path, "a"))
    saved = load_checkpoint(result["checkpoint"])
    assert {
        "model",
        "config",
        "num_classes",
        "feature_dim",
        "kappa_mle",
        "mean_activation_norm",
        "test_accuracy",
        "validation_accuracy",
        "stats_images",
    } <= set(saved)
    assert saved["num_classes"] == 2 and saved["feature_dim"] == 3 and saved["stats_images"] == 20
    prior = VMFPrior.from_checkpoint(result["checkpoint"], saved["kappa_mle"])
    torch.testing.assert_close(prior.mean_directions, torch.nn.functional.normalize(saved["model"]["head.weight"]))
    assert head_statistics_of({"concentration_mle": 2.0, "activation_norm": 3.0}) == {
        "kappa_mle": 2.0,
        "mean_activation_norm": 3.0,
    }


def test_head_statistics_against_scipy():
    torch.manual_seed(1)
    model = Recorder()
    images = torch.randint(0, 256, (200, 1, 2, 2), dtype=torch.uint8)
    labels = torch.randint(0, 2, (200,))
    with torch.no_grad():
        features = model.penultimate(images.float() / 255.0)
        model.head.weight.copy_(torch.stack([features[labels == c].mean(0) for c in (0, 1)]))  # cosines > 0
        features = features.double().numpy()
    stats = head_statistics(model, images, labels)
    directions = model.head.weight.detach().double().numpy()
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    cosine = np.mean(np.sum(features * directions[labels.numpy()], axis=1) / np.linalg.norm(features, axis=1))
    d = 3
    assert cosine > 0
    kappa = optimize.brentq(lambda k: special.ive(d / 2, k) / special.ive(d / 2 - 1, k) - cosine, 1e-8, 1e4)
    assert stats["kappa_mle"] == pytest.approx(kappa, rel=1e-4)
    assert stats["mean_activation_norm"] == pytest.approx(np.linalg.norm(features, axis=1).mean(), rel=1e-5)
