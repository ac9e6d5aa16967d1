"""WRN classifier: architecture, augmentation, and a checkpoint the vMF prior and eval.features can read."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.classifier import head_statistics_of
from common.run import load_checkpoint, read_metrics
from common.wrn import WideResNet, augment
from eval.classifiers import ConvNet
from gan import table5
from gan.classifier import load_classifier, main
from gan.latent import build_latent_sampler
from vmfprior import VMFPrior

ROOT = Path(__file__).resolve().parent.parent.parent


def test_wrn_40_2_shapes_and_size():
    model = WideResNet(depth=40, width=2)
    assert model.feature_dim == 128  # the prior's d for SNGAN-vMF
    assert sum(p.numel() for p in model.parameters()) == 2_243_546  # WRN-40-2 with a linear head: ~2.2M
    small = WideResNet(depth=10, width=1).eval()
    images = torch.rand(3, 3, 32, 32)
    assert small.features(images).shape == (3, 64)
    torch.testing.assert_close(small(images), small.head(small.features(images)))


@pytest.mark.parametrize("depth", [12, 3])
def test_bad_depth_raises(depth):
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        WideResNet(depth=depth)


def test_augment_returns_crops_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    out = augment(images)
    padded = F.pad(images, [4] * 4, mode="reflect")
    for index in range(6):
        candidates = [padded[index, :, top : top + 32, left : left + 32] for top in range(9) for left in range(9)]
        candidates += [crop.flip(-1) for crop in candidates]
        assert any(torch.equal(out[index], crop) for crop in candidates)


def test_train_saves_a_checkpoint_the_prior_reads(fake_cifar, tmp_path):
    out = tmp_path / "wrn"
    result = main(
        ["--preset", "tiny", "--data", str(fake_cifar), "--out", str(out), "--batch-size", "8", "--stats-images", "30"]
    )
    assert result["stopped"] == "epochs" and 0.0 <= result["test_accuracy"] <= 1.0
    saved = load_checkpoint(result["checkpoint"], what="classifier.pt")
    assert saved["kind"] == "gan-classifier" and saved["stats_images"] == 30
    assert saved["config"]["optimizer"] == "sgd" and saved["config"]["schedule"] == "cosine"
    # 40 images, batch 8: one epoch is 5 steps
    assert [record["epoch"] for record in read_metrics(out / "metrics.jsonl")] == [1, 1]
    prior = VMFPrior.from_checkpoint(result["checkpoint"], concentration=10.0)
    model = load_classifier(out)  # the run folder works as well as its classifier.pt
    assert isinstance(model, WideResNet) and (prior.num_classes, prior.dim) == (10, 64)
    weight = model.head.weight.detach()
    torch.testing.assert_close(prior.mean_directions, weight / weight.norm(dim=1, keepdim=True))
    assert prior.activation_norm == pytest.approx(saved["mean_activation_norm"])
    assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, 64)
    # a finished run is not trained again; a different setting on the same folder is refused
    assert (
        main(
            [
                "--preset",
                "tiny",
                "--data",
                str(fake_cifar),
                "--out",
                str(out),
                "--batch-size",
                "8",
                "--stats-images",
                "30",
                "--resume",
            ]
        )["stopped"]
        == "already finished"
    )
    with pytest.raises(ValueError, match="learning_rate: 0.1 -> 0.2"):
        main(
            [
                "--preset",
                "tiny",
                "--data",
                str(fake_cifar),
                "--out",
                str(out),
                "--batch-size",
                "8",
                "--stats-images",
                "30",
                "--resume",
                "--learning-rate",
                "0.2",
            ]
        )


COMMITTED = {  # checkpoints of the trainer before common.classifier: config keys lr and max_steps, concentration_mle
    "wrn-tiny": (ROOT / "results/gan-table5-small/wrn-tiny/classifier.pt", WideResNet, 64, 24.91198457716281),
    "evaluator-convnet-32": (
        ROOT / "results/gan-table5-small/evaluator-convnet-32/classifier.pt",
        ConvNet,
        128,
        66.4215406228617,
    ),
}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_checkpoints_of_the_earlier_trainer_still_load(name, tmp_path, capsys):
    path, architecture, dim, kappa = COMMITTED[name]
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert "concentration_mle" in stored and "kappa_mle" not in stored and "lr" in stored["config"]
    model = load_classifier(path)
    assert isinstance(model, architecture) and not model.training
    for key, value in stored["model"].items():  # every saved tensor is in the rebuilt model, unchanged
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, dim)
    assert head_statistics_of(stored) == {"kappa_mle": kappa, "mean_activation_norm": None}
    prior = VMFPrior.from_checkpoint(path, concentration=kappa)
    weight = stored["model"]["head.weight"]
    torch.testing.assert_close(prior.mean_directions, weight / weight.norm(dim=1, keepdim=True))
    if name == "wrn-tiny":  # the prior of the committed small Table 5: vmf noise, and the kappa table5 passes on
        sampler = build_latent_sampler("vmf", dim, num_classes=10, prior_checkpoint=str(path), concentration=kappa)
        z = sampler.sample(torch.arange(10))
        assert z.shape == (10, dim)
        torch.testing.assert_close(z.norm(dim=1), torch.full((10,), dim**0.5))
        table5.main(
            [
                "--preset",
                "small",
                "--samplers",
                "vmf",
                "--seeds",
                "0",
                "--runs-dir",
                str(tmp_path),
                "--prior-checkpoint",
                str(path),
                "--num-samples",
                "2000",
                "--dry-run",
            ]
        )
        assert f"--concentration {kappa:.4f}" in capsys.readouterr().out


def test_a_run_folder_of_the_earlier_trainer_is_refused_with_what_to_do(fake_cifar, tmp_path, capsys):
    import shutil

    from common.cli import run_cli

    folder = tmp_path / "wrn-tiny"
    shutil.copytree(ROOT / "results/gan-table5-small/wrn-tiny", folder)
    before = sorted((path.name, path.read_bytes()) for path in folder.iterdir())
    for extra in ([], ["--resume"]):
        assert run_cli(main, ["--preset", "tiny", "--data", str(fake_cifar), "--out", str(folder), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "earlier gan.classifier" in err and "choose another --out" in err
    assert sorted((path.name, path.read_bytes()) for path in folder.iterdir()) == before  # nothing was touched
