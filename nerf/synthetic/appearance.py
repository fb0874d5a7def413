"""Appearance of the synthetic objects: view-independent albedo (a mesh's UV texture, or a smooth procedural 3D
colour field in world coordinates) times Lambertian shading from a fixed world light plus ambient."""
import numpy as np

from .geometry import normalize

# Light from above and slightly to one side, so the top is bright and the sides have visible shading gradients;
# ambient keeps the shadowed side textured (the photometric loss needs contrast everywhere).
LIGHT_DIR_WORLD = np.array([0.35, -0.45, 0.82])
AMBIENT = 0.35


def make_procedural_texture(rng):
    """Parameters of a smooth 3D colour field (a few sinusoids in 3D): palette [4, 3] RGB, wave [3, 3] wave vectors
    in radians per object radius, phase [3]."""
    palette = np.array([[0.85, 0.35, 0.20], [0.20, 0.55, 0.85], [0.95, 0.85, 0.30], [0.30, 0.75, 0.35]])
    palette = palette[rng.permutation(len(palette))]
    # wave vectors in cycles per object radius: two broad colour blends and one finer stripe pattern, so there is
    # texture at several scales
    dirs = normalize(rng.normal(size=(3, 3)))
    freqs = np.array([0.8, 1.1, 3.0]) * 2.0 * np.pi
    return {"palette": palette, "wave": dirs * freqs[:, None], "phase": rng.uniform(0, 2 * np.pi, 3)}


def procedural_albedo(points_world, centre, radius, tex):
    """Albedo [N, 3] in [0.08, 0.95] of world points [N, 3], a function of position only, for an object of
    bounding sphere (centre [3], radius) and texture parameters `tex` (make_procedural_texture)."""
    q = (points_world - centre) / radius
    s = 0.5 + 0.5 * np.sin(q @ tex["wave"].T + tex["phase"])  # (N, 3)
    pal = tex["palette"]
    base = (pal[0] * (1 - s[:, :1]) + pal[1] * s[:, :1]) * (1 - s[:, 1:2]) \
        + (pal[2] * (1 - s[:, :1]) + pal[3] * s[:, :1]) * s[:, 1:2]
    stripes = 0.7 + 0.3 * s[:, 2:3] ** 2
    return np.clip(base * stripes, 0.08, 0.95)


def sample_texture_bilinear(image, uv):
    """Colours [N, C] of image [H, W, C] at uv [N, 2] in [0, 1]^2, v = 0 at the image bottom (OBJ convention),
    bilinear with wrap-around."""
    h, w = image.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    x0w, x1w = x0 % w, (x0 + 1) % w
    y0w, y1w = y0 % h, (y0 + 1) % h
    top = image[y0w, x0w] * (1 - fx) + image[y0w, x1w] * fx
    bottom = image[y1w, x0w] * (1 - fx) + image[y1w, x1w] * fx
    return top * (1 - fy) + bottom * fy


def lambert(albedo, normals):
    """Shaded colour [N, 3] of albedo [N, 3] at unit world normals [N, 3] under the fixed light plus ambient."""
    light = normalize(LIGHT_DIR_WORLD)
    diffuse = np.clip(normals @ light, 0.0, None)[:, None]
    return albedo * (AMBIENT + (1.0 - AMBIENT) * diffuse)
