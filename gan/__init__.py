"""Conditional SNGAN on CIFAR-10 with latent noise from a classifier's vMF prior: layers, models, losses, training."""
