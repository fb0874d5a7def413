"""Ground-truth synthetic scenes for NeuS-style surface reconstruction (CLI: scripts/make_synthetic.py).

Renders an object with known geometry from a cap of cameras and writes the scene in the NeuS/IDR layout
(``image/``, ``mask/``, ``cameras_sphere.npz``) and/or the instant-ngp layout (``transforms.json``), together
with the true surface (``gt_mesh.ply``) so reconstructions can be scored with nerf.mesh_metrics
(``scripts/eval_mesh.py``).

Conventions (all written files follow these; ``scene.json`` repeats them):

* World units are millimetres. World "up" is +z.
* Cameras use OpenCV axes: x right, y down, z forward (into the scene).
* Pixel (u, v) -- u column, v row -- has its CENTRE at integer coordinates: the ray of pixel (u, v) is the one
  through K^-1 [u, v, 1]^T. Every pixel is rendered with exactly that single ray (no anti-aliasing), so the mask is
  the exact silhouette sampled at pixel centres.
* ``world_mat_i`` = K4 @ W2C_i (4x4), K4 = [[K, 0], [0, 0, 0, 1]], so world_mat_i @ [X, Y, Z, 1] =
  w * [u, v, 1, 1/depth] (same as DTU/IDR).
* ``scale_mat_i`` = [[r, 0, 0, cx], [0, r, 0, cy], [0, 0, r, cz], [0, 0, 0, 1]] maps the unit sphere of the
  normalised space onto a world sphere of radius r = SCALE_MAT_MARGIN * object radius centred on the object
  centre; it is the same for every view.
* ``transforms.json`` (instant-ngp): pixel centres at +0.5, so its cx, cy are the OpenCV ones + 0.5;
  ``transform_matrix`` is camera-to-world in OpenGL axes (x right, y up, z backward), i.e.
  C2W_opencv @ diag(1, -1, -1, 1).

Cameras (cameras.py): ``views`` cameras on a full 360 degree ring-shaped cap (elevation 10..60 degrees above the
object centre), laid out along a golden-angle spiral so any number of views covers the cap evenly, at 2.6..2.9
object radii from the centre, each looking at the object centre plus a small random offset and with a small random
roll. The object's underside (below ~-10 degrees) is never seen, as in DTU.

Appearance (appearance.py) is view-independent: albedo (the mesh's UV texture when it has one, otherwise a smooth
procedural 3D colour field in world coordinates) times Lambertian shading from a fixed world light plus ambient.

Objects: analytic SDFs sphere traced (analytic.py) or triangle meshes rasterised (mesh_shape.py, rasterizer.py);
files written by writers.py; all put together by scene.make_scene.

Analytic shapes (each its UnitShape, unit_shape.py): sphere, torus, blob (basic_shapes.py), and, to measure mesh
quality, blade (blade.py: an upright plate 1 % of the radius thick standing in a puck), wire (wire.py: a loop of
tube radius 1 % of the radius sunk in a ball), relief (relief.py: a sphere with latitude ridges 1 % of the radius
high) and checker (checker.py: the sphere, coloured by a high-contrast longitude/latitude checkerboard instead of
the procedural texture). gt_mesh.ply is marching cubes of the SDF (sdf_mesh.py) on the ``gt_resolution`` grid,
raised to the grid a shape's finest feature needs (3 cells across the plate, 2 per tube radius, 12 per ridge
wavelength). blade and wire also write ``gt_thin.ply``: the faces of gt_mesh.ply on the thin part (the plate above
the puck; the loop outside the ball), described under ``thin_part`` in scene.json (null for the other shapes), for
nerf.mesh_metrics' thin_recall.
"""
from .mesh_shape import shared_mesh_dirs
from .rasterizer import rasterize
from .scene import SHAPES, make_scene

__all__ = ["SHAPES", "make_scene", "rasterize", "shared_mesh_dirs"]
