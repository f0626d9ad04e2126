"""Features that drive the simulated brains, and the plumbing shared by the simulations.

Early visual neurons respond to local contrast within their receptive field, so each image is
reduced to a grid of local contrast energy (mean gradient magnitude per cell).
"""

from __future__ import annotations

import numpy as np


def grayscale(images: np.ndarray) -> np.ndarray:
    """float32 [n, H, W] in 0..1 from uint8 [n, H, W, 3] (ITU-R 601 luma)."""
    rgb = images.astype(np.float32) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def contrast_energy_grid(images: np.ndarray, grid: int = 16) -> np.ndarray:
    """float32 [n, grid, grid]: mean gradient magnitude of the luma in each grid cell.

    images: uint8 [n, H, W, 3] with H and W divisible by ``grid``. Row 0 is the top of the image.
    """
    luma = grayscale(images)
    gy, gx = np.gradient(luma, axis=(1, 2))
    energy = np.sqrt(gx**2 + gy**2)
    n, h, w = energy.shape
    if h % grid or w % grid:
        raise ValueError(f"image size {h}x{w} is not divisible by the grid {grid}")
    return energy.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4))


def gaussian_receptive_fields(centres: np.ndarray, sizes: np.ndarray, grid: int) -> np.ndarray:
    """float32 [n_units, grid*grid]: unit-sum Gaussian weights over grid cells.

    centres: float [n_units, 2] as (x, y) in image fractions, x rightwards, y downwards, 0..1.
    sizes:   float [n_units], Gaussian sigma in image fractions.
    """
    cells = (np.arange(grid, dtype=np.float32) + 0.5) / grid
    cx, cy = np.meshgrid(cells, cells)  # cy indexes rows (downwards), cx columns
    d2 = (cx.ravel()[None, :] - centres[:, :1]) ** 2 + (cy.ravel()[None, :] - centres[:, 1:2]) ** 2
    w = np.exp(-d2 / (2 * sizes[:, None] ** 2)).astype(np.float32)
    return w / w.sum(axis=1, keepdims=True)


def standardise(x: np.ndarray) -> np.ndarray:
    """float32, columns to zero mean and unit variance over rows (constant columns become zero)."""
    x = x - x.mean(axis=0, keepdims=True)
    sd = x.std(axis=0, keepdims=True)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 1e-8).astype(np.float32)
