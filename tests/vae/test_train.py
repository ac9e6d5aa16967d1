"""Tests for vae.train, vae.classifier and vae.sampling on tiny synthetic data: resume equals an
uninterrupted run, config changes are refused, a non-finite loss keeps the last good checkpoint."""

import json
import math

import pytest
import torch

from common.data import DataUnavailableError
from common.run import RunError, read_config, read_metrics
from vae import train as train_module
from vae.checkpoints import load_model
from vae.classifier import ClassifierConfig, MNISTClassifier, train_classifier
from vae.sampling import load_sampler
from vae.train import TrainConfig, check_config, train

TINY = {"num_validation": 60, "batch_size": 64, "progress": False, "figures": False, "cpu": True}


def _config(tmp_path, name="run", **overrides):
    return TrainConfig(**{**TINY, "model": "hvae", "latent_dim": 3, "out": str(tmp_path / name), **overrides})


def _state(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)


def test_resume_continues_exactly(tmp_path, tiny_data):
    straight = train(_config(tmp_path, "straight", epochs=4), data=tiny_data, log=lambda *_: None)
    assert straight["epochs"] == 4 and straight["stopped"] == "epochs"
    first = train(_config(tmp_path, "split", epochs=2), data=tiny_data, log=lambda *_: None)
    assert first["epochs"] == 2
    second = train(_config(tmp_path, "split", epochs=4, resume=True), data=tiny_data, log=lambda *_: None)
    assert second["epochs"] == 4
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "split")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["state"] == b["state"]

    def drop(records):
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in records]

    assert drop(read_metrics(tmp_path / "straight" / "metrics.jsonl")) == drop(
        read_metrics(tmp_path / "split" / "metrics.jsonl")
    )
    assert len(read_metrics(tmp_path / "split" / "metrics.jsonl")) == 4


def test_resume_refuses_a_different_config_naming_the_keys(tmp_path, tiny_data):
    train(_config(tmp_path, epochs=1), data=tiny_data, log=lambda *_: None)
    with pytest.raises(ValueError, match=r"latent_dim: 3 -> 4; learning_rate: 0.001 -> 0.01"):
        train(_config(tmp_path, epochs=2, resume=True, learning_rate=0.01, latent_dim=4), data=tiny_data)
    with pytest.raises(RunError, match="--resume"):
        train(_config(tmp_path, epochs=2), data=tiny_data)
    with pytest.raises(RunError, match="no last.pt"):
        train(_config(tmp_path, "missing", resume=True), data=tiny_data)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, monkeypatch):
    config = _config(tmp_path, epochs=3)
    original = train_module.HypersphericalVAE.elbo
    calls = {"count": 0}
    steps_per_epoch = math.ceil(240 / 64)

    def failing_elbo(self, x, y=None, kl_weight=1.0):
        terms = original(self, x, y, kl_weight)
        if self.training:
            calls["count"] += 1
            if calls["count"] > steps_per_epoch:  # the first step of epoch 2
                return terms._replace(elbo=terms.elbo * float("nan"))
        return terms

    monkeypatch.setattr(train_module.HypersphericalVAE, "elbo", failing_elbo)
    messages = []
    summary = train(config, data=tiny_data, log=messages.append)
    assert summary["stopped"] == "non-finite loss" and summary["epochs"] == 1
    assert any("non-finite loss" in m and "epoch 1" in m for m in messages)
    assert _state(tmp_path / "run")["step"] == 1
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert records[-1] == {"event": "non-finite loss", "epoch": 2, "step": 0}


@pytest.mark.parametrize(
    "scores, patience, stopped_at, best_epoch",
    [
        ([-100.0, -101.0, -102.0, -103.0, -104.0], 2, 3, 1),  # never improves after epoch 1
        ([-100.0, -101.0, -99.0, -99.5, -99.7, -98.0], 2, 5, 3),
    ],  # an improvement resets the count
)
def test_early_stopping_stops_on_patience(tmp_path, tiny_data, monkeypatch, scores, patience, stopped_at, best_epoch):
    sequence = iter(scores)
    monkeypatch.setattr(train_module, "validation_elbo", lambda *args, **kwargs: next(sequence))
    summary = train(_config(tmp_path, epochs=8, patience=patience), data=tiny_data, log=lambda *_: None)
    assert summary["stopped"] == "patience"
    assert summary["epochs"] == stopped_at and summary["best_epoch"] == best_epoch
    assert summary["best_validation_elbo"] == scores[best_epoch - 1]
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["epoch"] == best_epoch
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["validation_elbo"] for r in records] == scores[:stopped_at]
    # Resuming a run that stopped early does nothing.
    again = train(_config(tmp_path, epochs=8, patience=patience, resume=True), data=tiny_data, log=lambda *_: None)
    assert again["epochs"] == stopped_at and again["stopped"] == "already finished"


def test_kl_warmup_weight_enters_the_loss(tmp_path, tiny_data, monkeypatch):
    """Every step's loss is -(reconstruction - w * KL + log p(y)).mean() with w rising linearly over 2 epochs."""
    from accelerate import Accelerator

    from vae.models import HypersphericalVAE

    terms_seen, losses_seen = [], []
    original_elbo, original_backward = HypersphericalVAE.elbo, Accelerator.backward

    def recording_elbo(self, x, y=None, kl_weight=1.0):
        terms = original_elbo(self, x, y, kl_weight)
        if self.training:
            terms_seen.append(terms)
        return terms

    def recording_backward(self, loss, **kwargs):
        losses_seen.append(loss.detach())
        return original_backward(self, loss, **kwargs)

    monkeypatch.setattr(HypersphericalVAE, "elbo", recording_elbo)
    monkeypatch.setattr(Accelerator, "backward", recording_backward)
    train(_config(tmp_path, model="hvae-c", epochs=3, kl_warmup_epochs=2.0), data=tiny_data, log=lambda *_: None)
    steps = math.ceil(240 / 64)  # 300 tiny images minus 60 for validation, batch 64
    assert len(losses_seen) == len(terms_seen) == 3 * steps
    for index, (terms, loss) in enumerate(zip(terms_seen, losses_seen)):
        epoch, step = divmod(index, steps)
        weight = min(1.0, (epoch + step / steps) / 2.0)
        expected = -(terms.reconstruction - weight * terms.kl - math.log(10)).mean()
        assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-6), (epoch, step)
    assert any(0 < min(1.0, (e + s / steps) / 2.0) < 1 for e in range(3) for s in range(steps))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "vae"}, "--model"),
        ({"latent_dim": 1}, "--latent-dim"),
        ({"model": "hvae-l"}, "--classifier"),
        ({"batch_size": 0}, "--batch-size"),
        ({"learning_rate": -1.0}, "--learning-rate"),
        ({"kl_warmup_epochs": -1.0}, "--kl-warmup-epochs"),
        ({"train_subset": 0}, "--train-subset"),
    ],
)
def test_bad_configs_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        check_config(_config(tmp_path, **overrides))


def test_classifier_prior_hvae_l_and_sampler(tmp_path, tiny_data):
    result = train_classifier(
        ClassifierConfig(latent_dim=3, out=str(tmp_path / "clf"), epochs=15, learning_rate=3e-3, num_validation=60),
        data=tiny_data,
        log=lambda *_: None,
    )
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["test_accuracy"] > 0.3  # 10 well-separated blocks
    assert read_config(tmp_path / "clf")[0] == "vae-classifier"
    saved = torch.load(result["checkpoint"], weights_only=True)
    head_weight = saved["model"]["head.weight"]
    assert head_weight.shape == (10, 3)

    config = _config(
        tmp_path, "hvae-l", model="hvae-l", classifier=result["checkpoint"], epochs=1, prior_concentration=50.0
    )
    train(config, data=tiny_data, log=lambda *_: None)
    model = load_model(tmp_path / "hvae-l")
    directions = torch.nn.functional.normalize(head_weight, dim=-1)
    torch.testing.assert_close(model.class_prior.mean_directions, directions)

    sampler = load_sampler(tmp_path / "hvae-l")
    assert sampler.num_classes == 10 and sampler.latent_dim == 3 and sampler.spherical
    labels = torch.tensor([2] * 4000)
    torch.manual_seed(0)
    z = sampler.sample_latent(labels)
    assert z.shape == (4000, 3)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(4000))
    # E[mu^T z] = A_3(50) = coth(50) - 1/50 for the prior of class 2.
    alignment = (z @ directions[2]).mean()
    assert abs(float(alignment) - (1 / math.tanh(50.0) - 1 / 50.0)) < 5 * float((z @ directions[2]).std()) / 60
    images = sampler.decode(z[:6], torch.nn.functional.one_hot(labels[:6], 10).float())
    assert images.shape == (6, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ValueError, match="label_probs"):
        sampler.decode(z[:6], torch.ones(6, 3))


def test_uniform_sampler_and_classifier_heads(tmp_path, tiny_data):
    train(_config(tmp_path, "c", model="hvae-c", epochs=1), data=tiny_data, log=lambda *_: None)
    sampler = load_sampler(tmp_path / "c")
    torch.manual_seed(0)
    z = sampler.sample_latent(torch.zeros(20000, dtype=torch.long))
    # Uniform on S^2: mean 0, each coordinate has variance 1/3 (tolerance: 5 standard errors).
    assert z.mean(0).abs().max() < 5 * math.sqrt(1 / 3 / 20000)
    assert abs(float((z[:, 0] ** 2).mean()) - 1 / 3) < 5 * math.sqrt(4 / 45 / 20000)
    fixed = MNISTClassifier(3, head="random")
    assert not any(p.requires_grad for p in fixed.head.parameters())


def test_command_lines_write_run_folders_and_loglik_json(tmp_path, tiny_npz):
    from vae.loglik import main as loglik_main
    from vae.train import main as train_main

    out = tmp_path / "cli"
    summary = train_main(
        [
            "--model",
            "hvae",
            "--latent-dim",
            "3",
            "--data",
            str(tiny_npz),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--num-validation",
            "60",
            "--no-progress",
            "--cpu",
        ]
    )
    assert summary["epochs"] == 1
    for name in (
        "config.json",
        "last.pt",
        "best.pt",
        "metrics.jsonl",
        "reconstructions.png",
        "samples.png",
        "interpolations.png",
        "learning_curve.png",
    ):
        assert (out / name).is_file(), name
    result = loglik_main(["--run", str(out), "--num-samples", "5", "--data", str(tiny_npz), "--num-test", "20"])
    written = json.loads((out / "loglik-K5-n20.json").read_text())
    assert written["num_examples"] == 20 and written["model"] == "hvae" and written["binarization_seed"] == 0
    assert written["log_px"] == pytest.approx(result["log_px"]) and written["log_px"] < 0
    with pytest.raises(DataUnavailableError):
        train_main(
            [
                "--model",
                "hvae",
                "--latent-dim",
                "3",
                "--data",
                str(tmp_path / "missing.npz"),
                "--out",
                str(tmp_path / "x"),
            ]
        )


def test_a_validation_split_larger_than_the_data_names_the_flag_and_leaves_no_folder(tmp_path, tiny_npz, capsys):
    from common.cli import run_cli
    from vae.train import main as train_main

    out = tmp_path / "never"
    status = run_cli(
        train_main, ["--data", str(tiny_npz), "--out", str(out), "--epochs", "1", "--cpu", "--num-validation", "10000"]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith("error: --num-validation 10000:") and "holds 300 images" in lines[0]
    assert "1..299" in lines[0] and not out.exists()
