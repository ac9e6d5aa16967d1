"""Constants of eval/ that the commands' configs name in their options; no torch here (``--help`` needs them).

``eval.loglik`` and ``eval.fidelity`` re-export them.
"""

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_CHUNK_SIZE", "INCEPTION_WEIGHTS_FILE", "REFERENCE_SPLITS"]

DEFAULT_BATCH_SIZE = 100
DEFAULT_CHUNK_SIZE = 100
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
REFERENCE_SPLITS = ("train", "test")
