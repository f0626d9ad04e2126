"""Analyses as plain functions over arrays: encoding (ridge) and its scores, decoding, RSA.

Nothing here imports :mod:`backend.models` or :mod:`backend.service`; inputs and outputs are
numpy arrays (or torch tensors where a function says so).
"""
