"""Cached pipeline stages over a dataset: captions, text and image embeddings, generated images.

Each stage looks every output up in the content-addressed :class:`backend.cache.Store` first and
loads a model only for what is missing, so a repeated request is served from disk without
touching the model. Keys hold everything an output depends on: the model id and the exact
weights (``weights.fingerprint``), the generation parameters and the input's content hash.
"""
