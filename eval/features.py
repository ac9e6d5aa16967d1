"""torch-fidelity feature extractors built on this project's own classifiers.

The standard IS/FID use Inception-v3 weights that must be downloaded. For offline machines, CPU smoke
runs and tests, any classifier of this project can stand in: its penultimate features play the role
of Inception's 2048-d pool features (FID, KID, PRC) and its logits the role of Inception's logits (IS).
Scores from such an extractor are comparable only with scores from the same extractor (same weights).

    from eval.features import register_classifier_extractor
    register_classifier_extractor("cifar10-wrn", build_wrn, checkpoint="runs/wrn/classifier.pt")
    torch_fidelity.calculate_metrics(input1=..., feature_extractor="cifar10-wrn", isc=True, fid=True)

The classifier must expose `features(x) -> (B, d)` and `head` with `logits = head(features)`.
torch-fidelity hands every extractor uint8 images (N, 3, H, W); they are scaled to [0, 1] floats and
passed through `preprocess` (e.g. normalization, grey conversion) before `features`.
"""

import copy
import hashlib

import torch
import torch.nn as nn
from torch_fidelity import register_feature_extractor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from vmfprior.prior import read_state_dict

# Feature names this extractor provides (the analogues of Inception's "2048" and "logits").
FEATURE_PENULTIMATE = "penultimate"
FEATURE_LOGITS = "logits"
DEFAULT_FEATURE_FOR_METRIC = {
    "isc": FEATURE_LOGITS,
    "fid": FEATURE_PENULTIMATE,
    "kid": FEATURE_PENULTIMATE,
    "prc": FEATURE_PENULTIMATE,
}
INTERNAL_DTYPES = {None: torch.float32, "float32": torch.float32, "float64": torch.float64}


def state_fingerprint(model):
    """Short SHA-256 of a module's parameters and buffers: names cached statistics after the exact weights.

    Args:
        model: nn.Module.

    Returns:
        12 hexadecimal characters.
    """
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(value.dtype).encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def check_classifier(model):
    """Raise TypeError unless `model` is an nn.Module with callable `features` and `head`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (or a callable returning one), got {type(model).__name__}")
    for name in ("features", "head"):
        if not callable(getattr(model, name, None)):
            raise TypeError(
                f"model {type(model).__name__} must provide a callable `{name}`: features(x) -> (B, d) penultimate "
                "activations and head(features) -> (B, C) logits"
            )


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """Penultimate features and logits of a classifier, as a torch-fidelity feature extractor.

    Not registered itself: `register_classifier_extractor` registers a subclass per name that carries
    the classifier weights (`template`), the input `preprocess` and the weights' `fingerprint`.
    torch-fidelity constructs it as cls(name, features_list, **calculate_metrics_kwargs).
    """

    template = None  # nn.Module, copied for every instance
    preprocess = None  # callable (B, 3, H, W) float in [0, 1] -> classifier input, or None
    fingerprint = None  # str: hash of the template's weights

    def __init__(
        self, name, features_list, feature_extractor_weights_path=None, feature_extractor_internal_dtype=None, **kwargs
    ):
        """
        Args:
            name: the registered name.
            features_list: requested features, a subset of ("penultimate", "logits").
            feature_extractor_weights_path: optional checkpoint that replaces the registered weights.
            feature_extractor_internal_dtype: "float32" (default) or "float64".
            **kwargs: the remaining calculate_metrics options (unused).
        """
        super().__init__(name, features_list)
        vassert(self.template is not None, "Use register_classifier_extractor to create classifier extractors")
        vassert(
            feature_extractor_internal_dtype in INTERNAL_DTYPES,
            f"feature_extractor_internal_dtype must be one of {sorted(k for k in INTERNAL_DTYPES if k)}, "
            f"got {feature_extractor_internal_dtype!r}",
        )
        self.internal_dtype = INTERNAL_DTYPES[feature_extractor_internal_dtype]
        self.model = copy.deepcopy(self.template)
        if feature_extractor_weights_path is not None:
            self.model.load_state_dict(read_state_dict(feature_extractor_weights_path))
        self.model.to(self.internal_dtype)

    @staticmethod
    def get_provided_features_list():
        return (FEATURE_PENULTIMATE, FEATURE_LOGITS)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        vassert(metric in DEFAULT_FEATURE_FOR_METRIC, f"No default feature for metric {metric!r}")
        return DEFAULT_FEATURE_FOR_METRIC[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, images):
        """
        Args:
            images: (N, 3, H, W) uint8 images, as torch-fidelity passes them.

        Returns:
            tuple of float64 tensors in the order of `features_list`: penultimate (N, d), logits (N, C).
        """
        vassert(
            torch.is_tensor(images) and images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == 3,
            f"Expecting uint8 images of shape (N, 3, H, W), got {getattr(images, 'dtype', type(images))} "
            f"{tuple(getattr(images, 'shape', ()))}",
        )
        x = images.to(self.internal_dtype) / 255.0  # (N, 3, H, W) in [0, 1]
        if self.preprocess is not None:
            x = self.preprocess(x)
        features = self.model.features(x)  # (N, d)
        computed = {FEATURE_PENULTIMATE: features, FEATURE_LOGITS: self.model.head(features)}  # logits (N, C)
        # float64 so that FID's covariance and matrix square root add no float32 noise
        return tuple(computed[name].flatten(1).double() for name in self.features_list)


def register_classifier_extractor(name, model, checkpoint=None, preprocess=None, replace=False):
    """Register a classifier with torch-fidelity under `name` (for `feature_extractor=name`).

    Args:
        name: registry name (no whitespace at the ends, no path separators).
        model: nn.Module with `features` and `head`, or a zero-argument callable that builds one
            (e.g. the classifier's constructor). The module is copied; later changes to it are not seen.
        checkpoint: optional torch.save'd state_dict (or dict with a "model" state_dict) loaded into it.
        preprocess: optional callable mapping (B, 3, H, W) float images in [0, 1] to the classifier's input
            (normalization, grey conversion, ...). Default: images in [0, 1] as they are.
        replace: allow replacing an extractor previously registered by this function under `name`.

    Returns:
        The registered ClassifierFeatureExtractor subclass (its `fingerprint` names the weights).
    """
    if not isinstance(name, str) or not name or name.strip() != name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a non-empty string without surrounding blanks or slashes, got {name!r}")
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable or None, got {type(preprocess).__name__}")
    previous = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if previous is not None:
        if not (replace and issubclass(previous, ClassifierFeatureExtractor)):
            raise ValueError(
                f"name {name!r} is already registered with torch-fidelity"
                + ("" if issubclass(previous, ClassifierFeatureExtractor) else " (a built-in extractor)")
                + "; pass replace=True to replace a classifier extractor, or choose another name"
            )
    built = model if isinstance(model, nn.Module) else model() if callable(model) else model
    check_classifier(built)
    template = copy.deepcopy(built).cpu().eval().requires_grad_(False)
    if checkpoint is not None:
        template.load_state_dict(read_state_dict(checkpoint))
    attributes = {
        "template": template,
        "preprocess": staticmethod(preprocess) if preprocess else None,
        "fingerprint": state_fingerprint(template),
    }
    cls = type(f"ClassifierFeatureExtractor_{attributes['fingerprint']}", (ClassifierFeatureExtractor,), attributes)
    if previous is not None:
        del FEATURE_EXTRACTORS_REGISTRY[name]  # replace=True was checked above
    register_feature_extractor(name, cls)
    return cls


def extractor_fingerprint(name):
    """The weights fingerprint of a classifier extractor registered under `name`, or None for other extractors."""
    cls = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if cls is not None and issubclass(cls, ClassifierFeatureExtractor):
        return cls.fingerprint
    return None
