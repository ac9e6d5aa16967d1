"""Run by tests/vae/test_distributed.py on 2 CPU processes (torchrun, gloo); not a test module itself.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/vae/distributed_worker.py OUT [--nan-on-rank-1]

Trains a tiny HVAE with vae.train.train on synthetic data whose training images carry their index in two
pixels, records which images each process binarizes in each epoch, and writes OUT/rank_<rank>.json with those
indices and the run's summary. With ``--nan-on-rank-1`` the third training batch of process 1 (only) is NaN.
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from common.data import ImageData  # noqa: E402
from tests.vae.conftest import synthetic_arrays  # noqa: E402
from vae import train as train_module  # noqa: E402

NUM_TRAIN, NUM_VALIDATION = 300, 60
ID_BASE = 250  # index = pixel(0, 0) * 250 + pixel(0, 1): both stay below 256


def main(out: Path, nan_on_rank_1: bool = False) -> None:
    rank = int(os.environ["RANK"])
    arrays = synthetic_arrays(num_train=NUM_TRAIN + NUM_VALIDATION, num_test=20)
    x_train = torch.from_numpy(arrays["x_train"]).unsqueeze(1)  # (N, 1, 28, 28) uint8
    index = torch.arange(NUM_TRAIN + NUM_VALIDATION)
    x_train[:, 0, 0, 0], x_train[:, 0, 0, 1] = (index // ID_BASE).to(torch.uint8), (index % ID_BASE).to(torch.uint8)
    data = ImageData(x_train=x_train, y_train=torch.from_numpy(arrays["y_train"]),
                     x_test=torch.from_numpy(arrays["x_test"]).unsqueeze(1), y_test=torch.from_numpy(arrays["y_test"]))

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
    config = train_module.TrainConfig(model="hvae", latent_dim=3, out=str(out / "run"), num_validation=NUM_VALIDATION,
                                      batch_size=16, learning_rate=0.05, max_epochs=12, patience=1, progress=False,
                                      figures=False, cpu=True)
    summary = train_module.train(config, data=data, log=lambda *_: None)
    (out / f"rank_{rank}.json").write_text(json.dumps({"epochs": epochs[:-1], "summary": summary}))


if __name__ == "__main__":
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    main(Path(sys.argv[1]), nan_on_rank_1="--nan-on-rank-1" in sys.argv[2:])
