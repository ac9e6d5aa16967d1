"""Evaluation shared by vae/ and gan/: log-likelihood, IS/FID through torch-fidelity, image grids, reports."""
