"""Section 2's check: the accuracy of a classifier before and after normalizing a and every w_i.

The vMF model says the class is carried by the direction of the penultimate activation a: a classifier that
predicts ``argmax_i cos(w_i, a)`` (a and every row of W scaled to unit length, the bias dropped) should lose
little accuracy against ``argmax_i (w_i . a + b_i)`` (the paper's Table 1, ImageNet).

This project's classifiers (model.pt of ``ckd.teacher`` / ``ckd.train``), on the clean test set::

    python -m ckd.normalization_check --checkpoint runs/ckd-mnist/teacher --dataset mnist --data PATH/mnist.npz

A torchvision ImageNet model, with weights from a local file and the ImageNet validation images in class
folders named by WordNet id (``val/n01440764/*.JPEG``, ...; sorted, they give torchvision's class indices)::

    python -m ckd.normalization_check --torchvision resnet50 --weights resnet50-11ad3fa6.pth --imagenet-val val/

The final layer is found as the last ``nn.Linear`` with 1000 outputs; a forward hook reads its input, so the
same code serves ResNets, VGGs, EfficientNets, MobileNets, RegNets and ViTs. Images get torchvision's standard
evaluation transform (resize to 256/224 of the crop, center crop, ImageNet mean and std).
"""

from __future__ import annotations

if __name__ == "__main__":  # --help and argument errors before the heavy imports below
    from ckd.config import CheckConfig
    from common.config import answer_early

    answer_early(CheckConfig, prog="python -m ckd.normalization_check", description=__doc__.split("\n\n")[0])

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ckd.config import CheckConfig
from common.cli import run_cli, select_device, set_threads
from common.config import parse_config

__all__ = [
    "CheckConfig",
    "normalized_accuracy",
    "check_model_checkpoint",
    "check_torchvision",
    "final_linear_layer",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _counts(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """(correct with W a + b, correct with the cosines) for one batch, as a (2,) int64 tensor."""
    logits = features @ weight.T + (bias if bias is not None else 0)
    cosines = F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T
    return torch.stack([(logits.argmax(1) == labels).sum(), (cosines.argmax(1) == labels).sum()]).cpu()


def normalized_accuracy(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> dict:
    """Top-1 accuracy of ``W a + b`` and of ``argmax_i cos(w_i, a)`` on given penultimate activations.

    Args:
        features: (N, d) penultimate activations a.
        labels: (N,) true classes.
        weight: (C, d) final-layer weight.
        bias: (C,) final-layer bias, or None.

    Returns:
        {"accuracy": float, "normalized_accuracy": float, "count": N}.
    """
    if features.dim() != 2 or weight.dim() != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(
            f"features (N, d) and weight (C, d) must agree in d, got {tuple(features.shape)} and {tuple(weight.shape)}"
        )
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    correct = _counts(features, labels, weight, bias)
    count = max(features.shape[0], 1)
    return {
        "accuracy": float(correct[0]) / count,
        "normalized_accuracy": float(correct[1]) / count,
        "count": features.shape[0],
    }


def check_model_checkpoint(path: str, dataset: str, data: str | None, device) -> dict:
    """:func:`normalized_accuracy` of a ckd model.pt on its dataset's clean test images."""
    from ckd.train import features_of, load_dataset, load_model

    model, checkpoint = load_model(path, device)
    if checkpoint.get("dataset") not in (None, dataset):
        raise ValueError(
            f"{path} was trained on {checkpoint['dataset']}, not {dataset}: pass --dataset {checkpoint['dataset']}"
        )
    images = load_dataset(dataset, data)
    features = features_of(model, images.x_test)
    head = model.head.cpu()
    bias = head.bias.detach() if head.bias is not None else None
    return normalized_accuracy(features, images.y_test, head.weight.detach(), bias)


def final_linear_layer(model: nn.Module, num_classes: int = 1000) -> nn.Linear:
    """The last ``nn.Linear`` with ``num_classes`` outputs in ``model``'s module order (its classification layer)."""
    candidates = [
        module for module in model.modules() if isinstance(module, nn.Linear) and module.out_features == num_classes
    ]
    if not candidates:
        raise ValueError(f"the model has no nn.Linear layer with {num_classes} outputs")
    return candidates[-1]


def check_torchvision(
    name: str,
    weights: str,
    image_folder: str,
    device,
    batch_size: int = 64,
    limit: int | None = None,
    image_size: int = 224,
    workers: int = 4,
    progress: bool = True,
    num_classes: int = 1000,
) -> dict:
    """:func:`normalized_accuracy` of a torchvision classifier on an ImageNet-style validation folder.

    Args:
        name: a ``torchvision.models`` builder name ("resnet50", "vgg16", "vit_b_16", ...).
        weights: path of the model's state dict (``torch.save``'d; loaded with weights_only=True).
        image_folder: folder of class sub-folders (sorted names give the class indices).
        device: where to run.
        batch_size: images per forward pass.
        limit: score only the first this-many images (in the folder's sorted order).
        image_size: center-crop size (the resize is to ``image_size * 256 / 224``).
        workers: data-loading processes.
        progress: a tqdm bar.
        num_classes: outputs of the model (1000 for ImageNet).

    Returns:
        {"accuracy", "normalized_accuracy", "count"}.
    """
    import torchvision
    from torchvision import transforms

    from common.run import load_checkpoint

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (ValueError, KeyError) as error:
        raise ValueError(f"--torchvision {name!r} is not a torchvision model name ({error})") from None
    state = load_checkpoint(weights, what=f"state dict of torchvision {name}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"--weights {weights!r} does not fit torchvision {name}: {str(error).splitlines()[0]}"
        ) from None
    model = model.to(device).eval()
    if not Path(image_folder).is_dir():
        raise FileNotFoundError(f"--imagenet-val {image_folder!r} is not a folder")
    transform = transforms.Compose(
        [
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(image_folder, transform=transform)
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    layer = final_linear_layer(model, num_classes)
    captured = {}
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.update(features=inputs[0]))
    totals = torch.zeros(2, dtype=torch.int64)
    count = 0
    try:
        with torch.no_grad():
            for images, labels in tqdm(loader, desc=f"{name} normalization check", disable=not progress):
                model(images.to(device))
                totals += _counts(
                    captured["features"].float(),
                    labels.to(device),
                    layer.weight.float(),
                    None if layer.bias is None else layer.bias.float(),
                )
                count += labels.shape[0]
    finally:
        hook.remove()
    return {
        "accuracy": float(totals[0]) / max(count, 1),
        "normalized_accuracy": float(totals[1]) / max(count, 1),
        "count": count,
    }


def main(argv=None) -> dict:
    """Command-line entry point: prints one line per model."""
    args = parse_config(
        CheckConfig, argv, prog="python -m ckd.normalization_check", description=__doc__.split("\n\n")[0]
    )
    set_threads(args.threads)
    if (args.checkpoint is None) == (args.torchvision is None):
        raise ValueError(
            "pass either --checkpoint RUN [RUN ...] or --torchvision NAME --weights PATH --imagenet-val DIR"
        )
    device = select_device(args.cpu)
    results = {}
    if args.torchvision is not None:
        if not args.weights or not args.imagenet_val:
            raise ValueError("--torchvision needs --weights PATH (a local state dict) and --imagenet-val DIR")
        results[args.torchvision] = check_torchvision(
            args.torchvision,
            args.weights,
            args.imagenet_val,
            device,
            args.batch_size,
            args.limit,
            args.image_size,
            args.workers,
            num_classes=args.num_classes,
        )
    else:
        for path in args.checkpoint:
            results[path] = check_model_checkpoint(path, args.dataset, args.data, device)
    for name, result in results.items():
        print(
            f"{name}: accuracy {100 * result['accuracy']:.2f} %, with a and every w_i normalized (no bias) "
            f"{100 * result['normalized_accuracy']:.2f} % ({result['count']} images)"
        )
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
