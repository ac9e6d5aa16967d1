"""Section 2's normalization check against independent computations."""

import numpy as np
import pytest
import torch

from ckd.normalization_check import check_torchvision, final_linear_layer, normalized_accuracy


def test_normalized_accuracy_against_numpy():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3)) * rng.uniform(0.1, 5, size=(200, 1))
    weight = rng.normal(size=(4, 3)) * np.array([[0.2], [1.0], [3.0], [0.5]])  # unequal row norms matter
    bias = rng.normal(size=4) * 2
    labels = rng.integers(0, 4, size=200)
    plain = np.argmax(features @ weight.T + bias, axis=1)
    cosine = np.argmax(
        (features / np.linalg.norm(features, axis=1, keepdims=True))
        @ (weight / np.linalg.norm(weight, axis=1, keepdims=True)).T,
        axis=1,
    )
    result = normalized_accuracy(torch.tensor(features), torch.tensor(labels), torch.tensor(weight), torch.tensor(bias))
    assert result["accuracy"] == pytest.approx(np.mean(plain == labels), abs=1e-12)
    assert result["normalized_accuracy"] == pytest.approx(np.mean(cosine == labels), abs=1e-12)
    assert result["count"] == 200
    assert np.mean(plain != cosine) > 0.1  # the construction makes the two rules disagree
    with pytest.raises(ValueError, match="agree in d"):
        normalized_accuracy(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long), torch.zeros(4, 3))


def test_torchvision_path_on_a_fake_imagenet_folder(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from PIL import Image

    torch.manual_seed(0)
    # Two classes, so that a random network's predictions hit the labels of a two-folder "ImageNet".
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=2).eval()
    weights = tmp_path / "weights.pth"
    torch.save(model.state_dict(), weights)
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        for index in range(8):
            Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(
                tmp_path / "val" / wnid / f"{index}.png"
            )
    result = check_torchvision(
        "mobilenet_v3_small",
        str(weights),
        str(tmp_path / "val"),
        "cpu",
        batch_size=4,
        image_size=32,
        workers=0,
        progress=False,
        num_classes=2,
    )
    # Independent: the full model's logits, and the cosines from the classifier's input computed by hand.
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(round(32 * 256 / 224)),
            transforms.CenterCrop(32),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(str(tmp_path / "val"), transform=transform)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        logits = model(images)
        hidden = model.classifier[:-1](torch.flatten(model.avgpool(model.features(images)), 1))
    layer = model.classifier[-1]
    assert final_linear_layer(model, 2) is layer
    cosines = torch.nn.functional.normalize(hidden, dim=1) @ torch.nn.functional.normalize(layer.weight, dim=1).T
    assert result["count"] == 16
    assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert result["normalized_accuracy"] == pytest.approx(float((cosines.argmax(1) == labels).float().mean()))


@pytest.mark.parametrize("architecture", ["mnist-conv-2", "mnist-conv-2-cosine"])
def test_the_check_on_a_ckd_model(tmp_path, tiny_npz, tiny_data, architecture):
    from ckd.models import build_model
    from ckd.normalization_check import check_model_checkpoint
    from common.run import atomic_save

    torch.manual_seed(0)
    model = build_model(architecture, 10, (1, 28, 28)).eval()
    atomic_save(
        {
            "model": model.state_dict(),
            "architecture": architecture,
            "num_classes": 10,
            "image_shape": [1, 28, 28],
            "dataset": "mnist",
            "test_accuracy": 0.0,
        },
        tmp_path / "model.pt",
    )
    result = check_model_checkpoint(str(tmp_path), "mnist", str(tiny_npz), "cpu")
    with torch.no_grad():
        features = model.features(tiny_data.x_test.float() / 255)
        logits = model(tiny_data.x_test.float() / 255)
    weight = model.head.weight.detach()
    cosines = torch.nn.functional.normalize(features, dim=1) @ torch.nn.functional.normalize(weight, dim=1).T
    assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == tiny_data.y_test).float().mean()))
    assert result["normalized_accuracy"] == pytest.approx(float((cosines.argmax(1) == tiny_data.y_test).float().mean()))
    if architecture.endswith("cosine"):  # no bias, unit rows: normalizing a changes no argmax
        assert result["normalized_accuracy"] == result["accuracy"]
