"""Hyperspherical VAEs on MNIST (HVAE, HVAE-C, HVAE-L): models, prior-source classifier, training, experiment."""
