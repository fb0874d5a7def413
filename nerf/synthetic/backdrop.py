"""A room behind the object, for unmasked scenes: a textured floor below it and a textured dome around it,
both outside the scene's unit sphere, so that every pixel the object does not cover shows structure that a
background model must explain (and that must not become surface)."""
import numpy as np

from .appearance import lambert, procedural_albedo
from .cameras import pixel_rays

FLOOR_BELOW = 1.6  # floor plane this many object radii below the object centre
DOME_RADIUS = 8.0  # the dome around it, in object radii


def backdrop_colors(K, R, t, width, height, centre, radius, tex):
    """Colour [H * W, 3] of the backdrop seen through every pixel of the camera K [3, 3], R [3, 3], t [3]
    (world -> camera), for an object of bounding sphere (centre [3], radius): the first hit of the floor
    (z = centre_z - FLOOR_BELOW radius, world up is +z) or else of the dome (radius DOME_RADIUS radius about the
    centre), each with its own procedural texture (`tex`, at the object's scale on the floor, coarser on the dome) under the scene's light."""
    origin, dirs = pixel_rays(K, R, t, width, height)
    floor_z = centre[2] - FLOOR_BELOW * radius
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dirs[:, 2] < -1e-9, (floor_z - origin[2]) / dirs[:, 2], np.inf)
    offset = origin - centre  # the camera is inside the dome: the far root of |o + t d - c| = R
    b = dirs @ offset
    t_dome = -b + np.sqrt(b * b - (offset @ offset - (DOME_RADIUS * radius) ** 2))
    on_floor = t_floor < t_dome
    hit_t = np.where(on_floor, t_floor, t_dome)
    points = origin + dirs * hit_t[:, None]
    normals = np.where(on_floor[:, None], np.array([0.0, 0.0, 1.0]), -(points - centre) / (DOME_RADIUS * radius))
    # The floor's texture at the object's scale, the dome's twice as coarse with its colours swapped round.
    albedo = np.where(on_floor[:, None], procedural_albedo(points, centre, radius, tex),
                      procedural_albedo(points, centre, 2.0 * radius, tex)[:, ::-1])
    return lambert(albedo, normals)
