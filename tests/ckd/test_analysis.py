"""The layer-claim measurements: the vMF pair against the network, affinity similarity, activations over training."""

import json
import math

import numpy as np
import pytest
import torch

from ckd.analysis import affinity_correlations, cosine_statistics, generative_pair, main


def test_the_pair_equals_the_network_when_the_layer_is_the_vmf_pair():
    # Unit rows, no bias, activations of norm r and kappa = r: W a = r cos(w_i, a) = the pair's logits exactly.
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.functional.normalize(torch.randn(5, 8, generator=generator), dim=1)
    features = 3.0 * torch.nn.functional.normalize(torch.randn(40, 8, generator=generator), dim=1)
    labels = torch.randint(0, 5, (40,), generator=generator)
    same = generative_pair(features, labels, weight, None, 3.0)
    assert same["agreement"] == 1.0 and same["mean_kl"] == pytest.approx(0.0, abs=1e-12)
    assert same["network_accuracy"] == same["pair_accuracy"]


def test_the_pair_kl_against_a_hand_computation():
    # Two classes, a = (1, 0), w_0 = (2, 0), w_1 = (0, 1), bias (0, 1): network logits (2, 1); pair (kappa, 0).
    features, weight = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    bias = torch.tensor([0.0, 1.0])
    kappa = 0.5
    p = np.exp([2.0, 1.0]) / np.exp([2.0, 1.0]).sum()
    q = np.exp([kappa, 0.0]) / np.exp([kappa, 0.0]).sum()
    result = generative_pair(features, torch.tensor([1]), weight, bias, kappa)
    assert result["mean_kl"] == pytest.approx(float((p * np.log(p / q)).sum()), rel=1e-10)
    assert result["agreement"] == 1.0 and result["network_accuracy"] == 0.0
    flipped = generative_pair(features, torch.tensor([1]), weight, torch.tensor([0.0, 3.0]), kappa)
    assert flipped["agreement"] == 0.0 and flipped["network_accuracy"] == 1.0  # logits (2, 3): class 1


def test_affinity_correlations_of_off_diagonal_logs():
    generator = torch.Generator().manual_seed(1)
    base = torch.softmax(torch.randn(6, 6, generator=generator) + 4 * torch.eye(6), dim=1)
    noisy = torch.softmax(base.log() + 0.1 * torch.randn(6, 6, generator=generator), dim=1)
    other = torch.softmax(torch.randn(6, 6, generator=generator) + 4 * torch.eye(6), dim=1)
    correlations = affinity_correlations([base, noisy, other])
    off = ~np.eye(6, dtype=bool)
    logs = [a.double().log().numpy()[off] for a in (base, noisy, other)]
    np.testing.assert_allclose(correlations.numpy(), np.corrcoef(logs), rtol=1e-10)
    assert correlations[0, 1] > 0.9 and abs(float(correlations[0, 2])) < 0.6
    # The diagonal is excluded: two affinities with equal diagonals and unrelated off-diagonals stay uncorrelated.
    assert correlations[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two"):
        affinity_correlations([base])


def test_cosine_statistics_mean_cosine_and_norm():
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    features = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    stats = cosine_statistics(features, labels, weight)
    assert stats["mean_cosine"] == pytest.approx((1 + 1 + 1 / math.sqrt(2)) / 3)
    assert stats["mean_norm"] == pytest.approx((3 + 1 + math.sqrt(2)) / 3)


def test_activations_and_similarity_and_pair_commands(tmp_path, tiny_npz, tiny_teacher, single_thread):
    out = tmp_path / "activations"
    result = main(
        [
            "activations",
            "--architecture",
            "mnist-conv-2",
            "--epochs",
            "1",
            "2",
            "--data",
            str(tiny_npz),
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    assert [record["epoch"] for record in result["epochs"]] == [1, 2]
    assert (out / "activations.png").stat().st_size > 10_000
    # The epoch-2 measurement is of the finished model (the run's last epoch).
    assert result["epochs"][1]["accuracy"] == pytest.approx(
        torch.load(out / "run" / "classifier.pt", weights_only=False)["test_accuracy"]
    )
    teacher_dir, _ = tiny_teacher
    similarity = main(
        [
            "similarity",
            "--teachers",
            str(teacher_dir),
            str(teacher_dir),
            "--samples",
            "300",
            "--figure",
            str(tmp_path / "similarity.png"),
            "--data",
            str(tiny_npz),
        ]
    )
    assert similarity["mean_pairwise_correlation"] == pytest.approx(1.0)  # the same teacher twice, the same seed
    assert (tmp_path / "similarity.png").stat().st_size > 10_000
    pair = main(["pair", "--checkpoints", str(teacher_dir), "--data", str(tiny_npz)])
    entry = pair[str(teacher_dir)]
    assert 0 <= entry["agreement"] <= 1 and entry["mean_kl"] >= 0 and entry["kappa_mle"] > 0


def test_activations_train_like_the_recipe_and_measure_training_images(tmp_path, tiny_npz, single_thread):
    from ckd.train import load_model
    from common.config import ConfigError

    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        '{"architecture": "mnist-conv-2", "optimizer": "sgd", "learning_rate": 0.05, "weight_decay": 0.001, '
        '"schedule": "cosine", "batch_size": 32}'
    )
    out = tmp_path / "activations"
    argv = ["activations", "--recipe", str(recipe), "--feature-dim", "8", "--epochs", "1", "2"]
    result = main([*argv, "--data", str(tiny_npz), "--out", str(out), "--threads", "1"])
    config = json.loads((out / "run" / "config.json").read_text())["config"]
    expected = {"architecture": "mnist-conv-2", "optimizer": "sgd", "learning_rate": 0.05, "weight_decay": 0.001}
    expected |= {"schedule": "cosine", "batch_size": 32, "feature_dim": 8, "epochs": 2, "dataset": "mnist"}
    assert {key: config[key] for key in expected} == expected
    # The training-image numbers are of the first len(x_test) clean training images, recomputed here by hand.
    model, _ = load_model(str(out / "run"))
    arrays = np.load(tiny_npz)
    count = len(arrays["y_test"])
    images = torch.from_numpy(arrays["x_train"][:count]).float().reshape(count, 1, 28, 28) / 255.0
    labels = torch.from_numpy(arrays["y_train"][:count]).long()
    with torch.no_grad():
        features = model.features(images)
    directions = torch.nn.functional.normalize(model.head.weight, dim=1)[labels]
    cosines = (torch.nn.functional.normalize(features, dim=1) * directions).sum(1)
    assert result["epochs"][1]["train_mean_cosine"] == pytest.approx(cosines.mean().item(), rel=1e-4)
    assert result["epochs"][1]["train_mean_cosine"] != pytest.approx(result["epochs"][1]["mean_cosine"], rel=1e-4)
    with pytest.raises(ConfigError, match="--recipe"):
        main(["activations", "--recipe", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")])


def test_activations_rerun_reads_its_stops_and_refuses_a_run_past_a_missing_one(
    tmp_path, tiny_npz, single_thread, monkeypatch
):
    import ckd.teacher

    out = tmp_path / "activations"
    argv = ["activations", "--architecture", "mnist-conv-2", "--epochs", "1", "2", "--data", str(tiny_npz)]
    first = main([*argv, "--out", str(out)])

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun trained again")

    monkeypatch.setattr(ckd.teacher, "train_teacher", no_training)
    again = main([*argv, "--out", str(out)])  # every stop is read back: nothing trains, the same numbers
    assert again["epochs"] == first["epochs"]
    (out / "run" / "stop-1.pt").unlink()  # the epoch-1 model is gone and last.pt is at epoch 2
    with pytest.raises(ValueError, match="already past epoch 1"):
        main([*argv, "--out", str(out)])
    with pytest.raises(ValueError, match="other settings"):  # stop-2.pt was trained for 2 epochs, not 3
        main(
            [
                "activations",
                "--architecture",
                "mnist-conv-2",
                "--epochs",
                "2",
                "3",
                "--data",
                str(tiny_npz),
                "--out",
                str(out),
            ]
        )
