"""Cut data/mnist-quick.npz, the quick run's embedded MNIST subset, from a full MNIST .npz.

    python data/make_mnist_quick.py FULL_MNIST.npz [--out data/mnist-quick.npz]

x_train: training images 0-4999 followed by 50000-50999 (the first 1,000 of the full runs' validation split,
so the last 1,000 rows are the quick run's validation split); x_test: test images 0-999. Original order, uint8.
"""

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="full MNIST .npz with x_train, y_train, x_test, y_test in the original order")
    parser.add_argument("--out", default="data/mnist-quick.npz")
    args = parser.parse_args()
    with np.load(args.source, allow_pickle=False) as full:
        rows = np.r_[0:5000, 50000:51000]
        np.savez_compressed(
            args.out,
            x_train=full["x_train"][rows],
            y_train=full["y_train"][rows].astype(np.int64),
            x_test=full["x_test"][:1000],
            y_test=full["y_test"][:1000].astype(np.int64),
        )


if __name__ == "__main__":
    main()
