"""What lies around the object in an unmasked scene (every pixel the object does not cover), which a background
model must explain and which must not become surface:

* 'room': a textured floor below the object and a textured dome around it, both outside the scene's unit sphere.
* 'table': as DTU's captures: the object stands over a white, textureless table top that cuts the unit sphere's
  lower cap and reaches TABLE_RADIUS, in a dark, faintly textured room (the dome). The table's depth is not
  pinned down by any texture, which is where unmasked training leaves smoky blobs in held-out views."""
import numpy as np

from .appearance import lambert, procedural_albedo
from .cameras import pixel_rays

FLOOR_BELOW = 1.6  # 'room': floor plane this many object radii below the object centre
TABLE_BELOW = 1.0  # 'table': the table top this many object radii below the centre (inside the unit sphere)
TABLE_RADIUS = 5.0  # 'table': its edge, in object radii from the centre's foot
TABLE_ALBEDO = 0.9
TABLE_ROOM_DIMMING = 0.15  # 'table': the dome's texture this much darker (a dark room beyond the table)
DOME_RADIUS = 8.0  # the dome around it, in object radii
KINDS = ("room", "table")


def backdrop_colors(K, R, t, width, height, centre, radius, tex, kind="room"):
    """Colour [H * W, 3] of the backdrop `kind` (KINDS) seen through every pixel of the camera K [3, 3], R [3, 3],
    t [3] (world -> camera), for an object of bounding sphere (centre [3], radius): the first hit of the floor
    (world up is +z) or else of the dome (radius DOME_RADIUS radius about the centre), under the scene's light.
    'room': the floor at FLOOR_BELOW radii and the dome with their own procedural textures (`tex`, at the object's
    scale on the floor, coarser on the dome); 'table': a plain white disc at TABLE_BELOW radii and a dark dome."""
    if kind not in KINDS:
        raise ValueError(f"backdrop must be one of {', '.join(KINDS)}, got {kind!r}")
    origin, dirs = pixel_rays(K, R, t, width, height)
    floor_z = centre[2] - (FLOOR_BELOW if kind == "room" else TABLE_BELOW) * radius
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dirs[:, 2] < -1e-9, (floor_z - origin[2]) / dirs[:, 2], np.inf)
    offset = origin - centre  # the camera is inside the dome: the far root of |o + t d - c| = R
    b = dirs @ offset
    t_dome = -b + np.sqrt(b * b - (offset @ offset - (DOME_RADIUS * radius) ** 2))
    on_floor = t_floor < t_dome
    if kind == "table":
        foot = origin + dirs * np.where(on_floor, t_floor, 0.0)[:, None] - centre
        on_floor &= np.hypot(foot[:, 0], foot[:, 1]) < TABLE_RADIUS * radius
    hit_t = np.where(on_floor, t_floor, t_dome)
    points = origin + dirs * hit_t[:, None]
    normals = np.where(on_floor[:, None], np.array([0.0, 0.0, 1.0]), -(points - centre) / (DOME_RADIUS * radius))
    if kind == "room":  # the floor's texture at the object's scale, the dome's twice as coarse, colours swapped round
        floor = procedural_albedo(points, centre, radius, tex)
        dome = procedural_albedo(points, centre, 2.0 * radius, tex)[:, ::-1]
    else:
        floor = np.full_like(points, TABLE_ALBEDO)
        dome = TABLE_ROOM_DIMMING * procedural_albedo(points, centre, 2.0 * radius, tex)
    return lambert(np.where(on_floor[:, None], floor, dome), normals)
