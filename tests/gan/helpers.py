"""Shared arguments for the gan training tests."""


def tiny_args(data, out, *extra):
    """Arguments of a run that takes well under a second per iteration on a CPU."""
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        "--latent-dim",
        "16",
        "--g-channels",
        "8",
        "--d-channels",
        "8",
        "--batch-size-d",
        "4",
        "--batch-size-g",
        "4",
        "--n-dis",
        "1",
        "--log-every",
        "1",
        *extra,
    ]
