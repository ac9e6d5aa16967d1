"""What the experiments share: datasets, run folders and checkpoints, command-line plumbing, the WRN.

Imports point one way: ``vmfprior`` <- ``common`` <- ``eval`` <- {``vae``, ``gan``, ``ckd``}.
"""
