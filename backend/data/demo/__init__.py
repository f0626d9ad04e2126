"""The demo world: pictogram scenes with known captions, simulated captioners and brains.

``pictograms`` holds the OpenMoji categories, ``scenes`` the scene grammar (sample, caption,
parse, render) and ``captioners`` the simulated captioners of graded quality.
"""
