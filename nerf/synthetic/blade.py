"""The 'blade' shape: a thin upright plate with rounded corners standing in a puck-shaped base (one solid), to test
that thin parts survive reconstruction. The plate is 1 % of the bounding radius thick."""
import numpy as np

from .unit_shape import ThinPart, UnitShape

# base: a puck of radius BASE_RADIUS and half-height BASE_HALF_HEIGHT centred at z = BASE_Z, edges rounded by
# BASE_ROUNDING
BASE_RADIUS, BASE_HALF_HEIGHT, BASE_Z, BASE_ROUNDING = 0.5, 0.1, -0.55, 0.04
# plate in the x-z plane: |x| <= PLATE_HALF_WIDTH (inside the base's footprint), BASE_Z <= z <= PLATE_TOP (its
# foot is buried in the base), the two top corners rounded by PLATE_CORNER
PLATE_HALF_WIDTH, PLATE_TOP, PLATE_CORNER = 0.45, 0.8, 0.2
THICKNESS_OF_RADIUS = 0.01
# marching-cubes cells across the plate: with >= 3 samples across, the lattice always has inside samples on
# the same side of the mid-plane as the face, so flat parts come out exact
CELLS_ACROSS = 3
# surface more than this above the base's top belongs to the plate (the fillet-free crease stays out of it)
THIN_MARGIN = 0.03


def bounding_sphere():
    """Centre [3] and radius of the sphere about the bounding box holding the plate's rounded corners and the
    base's rounded rim."""
    z_lo, z_hi = BASE_Z - BASE_HALF_HEIGHT, PLATE_TOP
    centre = np.array([0.0, 0.0, 0.5 * (z_lo + z_hi)])
    # farthest points: on the rounding circles, seen in the (horizontal distance, z) plane
    plate_corner = np.hypot(PLATE_HALF_WIDTH - PLATE_CORNER, PLATE_TOP - PLATE_CORNER - centre[2]) + PLATE_CORNER
    base_rim = np.hypot(BASE_RADIUS - BASE_ROUNDING,
                        BASE_Z - BASE_HALF_HEIGHT + BASE_ROUNDING - centre[2]) + BASE_ROUNDING
    return centre, max(plate_corner, base_rim)


def puck_sdf(q):
    """Exact SDF [...] of the base at unit points q [..., 3]."""
    radial = np.hypot(q[..., 0], q[..., 1]) - (BASE_RADIUS - BASE_ROUNDING)
    axial = np.abs(q[..., 2] - BASE_Z) - (BASE_HALF_HEIGHT - BASE_ROUNDING)
    return (np.minimum(np.maximum(radial, axial), 0.0) + np.hypot(np.maximum(radial, 0.0), np.maximum(axial, 0.0))
            - BASE_ROUNDING)


def plate_sdf(q, thickness):
    """SDF [...] (1-Lipschitz, exact outside the base) of the plate at unit points q [..., 3]: a rounded
    rectangle in x-z, mirrored about z = BASE_Z so only its top corners are rounded, extruded `thickness` along y
    and cut at z = BASE_Z (inside the base)."""
    ex = np.abs(q[..., 0]) - (PLATE_HALF_WIDTH - PLATE_CORNER)
    ez = np.abs(q[..., 2] - BASE_Z) - (PLATE_TOP - BASE_Z - PLATE_CORNER)
    in_plane = (np.hypot(np.maximum(ex, 0.0), np.maximum(ez, 0.0)) + np.minimum(np.maximum(ex, ez), 0.0)
                - PLATE_CORNER)
    across = np.abs(q[..., 1]) - 0.5 * thickness
    slab = (np.minimum(np.maximum(in_plane, across), 0.0)
            + np.hypot(np.maximum(in_plane, 0.0), np.maximum(across, 0.0)))
    # the intersection (max) of two 1-Lipschitz functions is 1-Lipschitz
    return np.maximum(slab, BASE_Z - q[..., 2])


def blade_shape():
    """The blade as a UnitShape; its thin part is the plate above the base."""
    centre, radius = bounding_sphere()
    thickness = THICKNESS_OF_RADIUS * radius
    base_top = BASE_Z + BASE_HALF_HEIGHT

    def sdf(q):
        # a hard union: the minimum of two 1-Lipschitz functions stays 1-Lipschitz
        return np.minimum(puck_sdf(q), plate_sdf(q, thickness))

    def on_plate(q):
        return q[..., 2] > base_top + THIN_MARGIN

    thin = ThinPart("blade", on_plate, thickness,
                    {"half_width": PLATE_HALF_WIDTH, "height_above_base": PLATE_TOP - base_top})
    return UnitShape(sdf, centre, radius, gt_cell=thickness / CELLS_ACROSS, thin_part=thin)
