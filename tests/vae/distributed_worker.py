"""Run by tests/vae/test_distributed.py on 2 CPU processes (torchrun, gloo); not a test module itself.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.vae.distributed_worker OUT \\
        [--nan-on-rank-1]

Trains a tiny HVAE with vae.train.train on synthetic data whose training images carry their index in two
pixels, records which images each process binarizes in each epoch, and writes OUT/rank_<rank>.json with those
indices and the run's summary. With ``--nan-on-rank-1`` the third training batch of process 1 (only) is NaN.
With ``--resume`` it instead trains OUT/straight for 4 epochs, and OUT/split for 2 epochs and then resumed to 4.
"""

import json
import os
import sys
from pathlib import Path

import torch

from common.data import ImageData
from common.run import close_process_group
from tests.vae.conftest import synthetic_arrays
from vae import train as train_module

NUM_TRAIN, NUM_VALIDATION = 300, 60
ID_BASE = 250  # index = pixel(0, 0) * 250 + pixel(0, 1): both stay below 256


def resume_check(out: Path) -> None:
    """OUT/straight: 4 epochs in one go; OUT/split: stopped after 2, then resumed (in this launch) to 4."""
    data = _data()
    settings = {
        "model": "hvae",
        "latent_dim": 3,
        "num_validation": NUM_VALIDATION,
        "batch_size": 16,
        "learning_rate": 0.01,
        "epochs": 4,
        "patience": 100,
        "progress": False,
        "figures": False,
        "cpu": True,
    }
    train_module.train(train_module.TrainConfig(out=str(out / "straight"), **settings), data=data, log=lambda *_: None)
    train_module.train(
        train_module.TrainConfig(out=str(out / "split"), stop_after=2, **settings), data=data, log=lambda *_: None
    )
    train_module.train(
        train_module.TrainConfig(out=str(out / "split"), resume=True, **settings), data=data, log=lambda *_: None
    )


def _data() -> ImageData:
    arrays = synthetic_arrays(num_train=NUM_TRAIN + NUM_VALIDATION, num_test=20)
    x_train = torch.from_numpy(arrays["x_train"]).unsqueeze(1)  # (N, 1, 28, 28) uint8
    index = torch.arange(NUM_TRAIN + NUM_VALIDATION)
    x_train[:, 0, 0, 0], x_train[:, 0, 0, 1] = (index // ID_BASE).to(torch.uint8), (index % ID_BASE).to(torch.uint8)
    return ImageData(
        x_train=x_train,
        y_train=torch.from_numpy(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"]).unsqueeze(1),
        y_test=torch.from_numpy(arrays["y_test"]),
    )


def main(out: Path, nan_on_rank_1: bool = False) -> None:
    rank = int(os.environ["RANK"])
    data = _data()

    epochs = [[]]
    binarize, validation_elbo = train_module.binarize, train_module.validation_elbo

    def recording_binarize(images, generator=None):
        epochs[-1].extend((images[:, 0, 0, 0].long() * ID_BASE + images[:, 0, 0, 1].long()).tolist())
        if nan_on_rank_1 and rank == 1 and len(epochs) == 1 and len(epochs[0]) > 2 * images.shape[0]:
            return torch.full(images.shape, float("nan"))
        return binarize(images, generator)

    def recording_validation(*args, **kwargs):
        epochs.append([])  # validation closes an epoch
        return validation_elbo(*args, **kwargs)

    train_module.binarize, train_module.validation_elbo = recording_binarize, recording_validation
    # A large step size makes the validation ELBO stall within a few epochs, so patience 1 stops the run early.
    config = train_module.TrainConfig(
        model="hvae",
        latent_dim=3,
        out=str(out / "run"),
        num_validation=NUM_VALIDATION,
        batch_size=16,
        learning_rate=0.05,
        epochs=12,
        patience=1,
        progress=False,
        figures=False,
        cpu=True,
    )
    summary = train_module.train(config, data=data, log=lambda *_: None)
    (out / f"rank_{rank}.json").write_text(json.dumps({"epochs": epochs[:-1], "summary": summary}))


if __name__ == "__main__":
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    if "--resume" in sys.argv[2:]:
        resume_check(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]), nan_on_rank_1="--nan-on-rank-1" in sys.argv[2:])
    close_process_group()  # exiting with the group open can abort a process while its peer still uses it
