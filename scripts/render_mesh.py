"""Picture of a mesh seen from one of a NeuS-format scene's cameras: shaded geometry beside vertex colours.

    python scripts/render_mesh.py MESH.ply DATA --view 0 --out mesh.png [--downscale 1]

The mesh must be in the scene's world frame (as main_sdf.py writes it). Rasterised on the CPU with the
generator's z-buffer (exact visibility at pixel centres); shading is a head-light Lambertian of face normals.
"""
import argparse
import os
import sys

import cv2
import numpy as np
import trimesh

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nerf.camera_geometry import decompose_projection  # noqa: E402
from nerf.synthetic import rasterize  # noqa: E402


def render(mesh, K, w2c, width, height):
    verts_cam = mesh.vertices @ w2c[:3, :3].T + w2c[:3, 3]
    faces = np.asarray(mesh.faces)
    front = (verts_cam[faces][:, :, 2] > 1e-6).all(1)  # drop faces behind the camera
    faces = faces[front]
    tri = rasterize(verts_cam, faces, K, width, height).reshape(height, width)
    hit = tri >= 0
    normals_cam = mesh.face_normals[front] @ w2c[:3, :3].T
    shade = np.zeros((height, width, 3))
    centres = verts_cam[faces[tri[hit]]].mean(1)
    view = -centres / np.linalg.norm(centres, axis=1, keepdims=True)
    shade[hit] = np.abs((normals_cam[tri[hit]] * view).sum(1, keepdims=True)) * 0.85 + 0.15
    shade[~hit] = 1.0
    colors = np.ones((height, width, 3))
    if mesh.visual.kind == "vertex":
        vc = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
        colors[hit] = vc[faces[tri[hit]]].mean(1)
    return np.concatenate([shade, colors], axis=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mesh")
    p.add_argument("data", help="NeuS-format scene folder (cameras_sphere.npz)")
    p.add_argument("--view", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--downscale", type=int, default=1)
    opt = p.parse_args()
    mesh = trimesh.load(opt.mesh, process=False)
    cams = np.load(os.path.join(opt.data, "cameras_sphere.npz"))
    K, c2w = decompose_projection(cams[f"world_mat_{opt.view}"][:3, :4].astype(np.float64))
    image = cv2.imread(sorted(os.path.join(opt.data, "image", f) for f in os.listdir(os.path.join(opt.data, "image")))[opt.view])
    height, width = image.shape[0] // opt.downscale, image.shape[1] // opt.downscale
    K[:2] /= opt.downscale
    K[:2, 2] += 0.5 / opt.downscale - 0.5
    picture = render(mesh, K, np.linalg.inv(c2w), width, height)
    photo = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1] / 255.0
    out = np.concatenate([photo, picture], axis=1)
    cv2.imwrite(opt.out, (np.clip(out, 0, 1)[..., ::-1] * 255).astype(np.uint8))
    print(f"{opt.out}: photo | shaded mesh | vertex colours, view {opt.view}")


if __name__ == "__main__":
    main()
