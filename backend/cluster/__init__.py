"""Dataset-wide work on a Ray cluster (optional extra ``.[ray]``; ``launch.py batch``).

``workers`` holds what runs on the cluster (model actors, encoding tasks); ``batch`` is the driver
that plans the work from the store, streams it through Ray and writes results back shard by shard.
"""
