"""The 'relief' shape: a sphere carrying fine ridges (latitude bands 1 % of the radius high), to test that fine
relief is kept rather than smoothed away."""
import numpy as np

from .unit_shape import UnitShape

# ridges: radius 1 + RIDGE_AMPLITUDE * sin(2 pi z / RIDGE_WAVELENGTH), i.e. peak-to-valley 1 % of the radius
RIDGE_AMPLITUDE, RIDGE_WAVELENGTH = 0.005, 0.08
# marching-cubes cells per ridge wavelength in the ground truth: the sag of a chord across a ridge crest is then
# ~2 % of the ridge amplitude
CELLS_PER_WAVELENGTH = 12


def relief_shape():
    """The relief sphere as a UnitShape.

    g(q) = |q| - 1 - a sin(w q_z) has |grad g| <= 1 + a w (the radial and the band terms at most add up), so
    g / (1 + a w) is 1-Lipschitz with the same zero set: sphere tracing on it never overshoots.
    """
    wavenumber = 2.0 * np.pi / RIDGE_WAVELENGTH
    lipschitz = 1.0 + RIDGE_AMPLITUDE * wavenumber

    def sdf(q):
        bands = RIDGE_AMPLITUDE * np.sin(wavenumber * q[..., 2])
        return (np.linalg.norm(q, axis=-1) - 1.0 - bands) / lipschitz

    return UnitShape(sdf, np.zeros(3), 1.0 + RIDGE_AMPLITUDE, gt_cell=RIDGE_WAVELENGTH / CELLS_PER_WAVELENGTH)
