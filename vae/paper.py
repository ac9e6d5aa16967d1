"""The paper's Table 4 numbers and the models' display names, shared by vae.report's tables and vae.plots' plot."""

__all__ = ["PAPER_LL", "DAVIDSON_SVAE_LL", "MODEL_NAMES"]

PAPER_LL = {  # Table 4 of the paper (ICLR 2020 version), log-likelihood at d = 3, 5, 10, 20
    "hvae": {3: -135.0, 5: -115.3, 10: -97.7, 20: -95.0},
    "hvae-c": {3: -139.4, 5: -119.6, 10: -98.4, 20: -94.7},
    "hvae-l": {3: -133.0, 5: -114.3, 10: -95.6, 20: -92.8},
}
DAVIDSON_SVAE_LL = {11: (-93.16, 0.31)}
"""Davidson et al. (2018), S-VAE on MNIST with latent S^10, whose ambient dimension is this project's d = 11:
log-likelihood mean ± sd as they report it for MNIST."""
MODEL_NAMES = {
    "hvae": "HVAE",
    "hvae-c": "HVAE-C",
    "hvae-l": "HVAE-L",
    "hvae-c-enc": "HVAE-C, q(z|x,y)",
    "hvae-l-enc": "HVAE-L, q(z|x,y)",
}
