"""Cortextual's backend: datasets, models, analyses and the service that exposes them.

Nothing here imports the viewer; the viewer reaches the backend only through
:mod:`backend.service.client`.
"""

__version__ = "0.1.0"
