"""Evaluation: render a held-out view, score it (nerf/metrics.py), and write the `--test` outputs."""
import os

import numpy as np
import torch
import torch.nn.functional as F
import tqdm

from .files import save_png, write_atomic, write_json
from .metrics import psnr, ssim
from .provider import image_rays


def view_background(kind, device):
    """[3] colour behind the object in rendered views: black for a black background, else white (a random
    training background is shown white)."""
    return torch.full((3,), 0.0 if kind == "black" else 1.0, device=device)


def normal_image(normal, opacity, c2w):
    """normal [H, W, 3] (world frame, any length), opacity [H, W], c2w [4, 4] (OpenCV axes) -> [H, W, 3] in
    [0, 1]: the normals in the camera frame, as is usual (x right, y up, z towards the viewer), as RGB over white."""
    normal_cam = F.normalize(normal, dim=-1) @ c2w[:3, :3] * torch.tensor([1.0, -1.0, -1.0], device=normal.device)
    return ((normal_cam * 0.5 + 0.5) * opacity[..., None] + (1 - opacity[..., None])).clamp(0, 1)


@torch.no_grad()
def render_view(renderer, views, index, bg_color, world_scale, chunk, downscale=1, use_amp=False):
    """Render view `index` of `views` -> dict of numpy images: rgb, normal [H, W, 3] in [0, 1], depth [H, W]
    (world units, NaN where the ray hits nothing), opacity [H, W], and the ground truth rgb on `bg_color` [3]."""
    renderer.eval()
    rays = image_rays(views, index, downscale)
    h, w = rays["rays_o"].shape[:2]
    with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
        out = renderer.render_chunked(rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3), bg_color, chunk)
    gt = rays["rgb"]
    if rays["mask"] is not None and renderer.model.background is None:  # else the whole image is rendered
        gt = gt * rays["mask"][..., None] + bg_color * (1 - rays["mask"][..., None])
    opacity = out["opacity"].reshape(h, w)
    depth = out["depth"].reshape(h, w) / opacity.clamp_min(1e-6) * world_scale
    depth = torch.where(opacity > 0.5, depth, torch.full_like(depth, float("nan")))
    normal_img = normal_image(out["normal"].reshape(h, w, 3), opacity, views.c2w[index])
    return {
        "rgb": out["rgb"].reshape(h, w, 3).clamp(0, 1).cpu().numpy(),
        "normal": normal_img.cpu().numpy(),
        "depth": depth.cpu().numpy(),
        "opacity": opacity.cpu().numpy(),
        "gt": gt.cpu().numpy(),
    }


def image_scores(res):
    """PSNR and SSIM of a `render_view` result against its ground truth."""
    rgb, gt = torch.from_numpy(res["rgb"]), torch.from_numpy(res["gt"])
    return {"psnr": psnr(rgb, gt), "ssim": ssim(rgb, gt)}


def region_scores(res, mask, backdrop_rendered):
    """PSNR of a `render_view` result on the object (inside `mask` [H, W], the scene's mask of that view) and,
    when the backdrop was rendered rather than filled with the background colour, on the backdrop; a region with
    no pixel gets None."""
    inside = torch.from_numpy(np.asarray(mask) > 127)
    rgb, gt = torch.from_numpy(res["rgb"]), torch.from_numpy(res["gt"])
    regions = {"psnr_object": inside, **({"psnr_backdrop": ~inside} if backdrop_rendered else {})}
    return {name: psnr(rgb[region], gt[region]) if region.any() else None for name, region in regions.items()}


def validation_image(renderer, views, index, config, world_scale, device, use_amp=False):
    """(PSNR, gt | render | normals [H, 3W, 3]) of view `index`, downscaled as `config.export` says."""
    e = config.export
    res = render_view(renderer, views, index, view_background(config.field.background, device), world_scale,
                      e.eval_chunk, e.eval_downscale, use_amp)
    return image_scores(res)["psnr"], np.concatenate([res["gt"], res["rgb"], res["normal"]], axis=1)


def depth_image(depth):
    """depth [H, W] (NaN: no surface) -> [H, W, 3] in [0, 1], near bright, nothing black."""
    valid = np.isfinite(depth)
    lo, hi = (np.nanmin(depth), np.nanmax(depth)) if valid.any() else (0.0, 1.0)
    image = np.where(valid, 1 - (depth - lo) / max(hi - lo, 1e-8), 0.0)
    return np.repeat(image[..., None], 3, -1)


def write_test_results(renderer, scene, bg_color, chunk, results_dir, step, use_amp=False, quiet=False):
    """Render every held-out view at full size (rgb, normal, depth PNGs, depth .npy in world units) and write
    results_dir/metrics.json (PSNR and SSIM per view and their means; where the scene has masks, also the PSNR on
    the object and, when the backdrop was rendered, on the backdrop); returns the metrics."""
    masks = scene.test.masks if scene.test.masks is not None else scene.test_score_masks
    # render_view fills a masked view's backdrop with bg_color unless a background field renders it
    backdrop_rendered = scene.test.masks is None or renderer.model.background is not None
    per_view = {}
    for i, name in enumerate(tqdm.tqdm(scene.test.names, desc="held-out views", disable=quiet)):
        res = render_view(renderer, scene.test, i, bg_color, scene.world_scale, chunk, use_amp=use_amp)
        per_view[name] = image_scores(res)
        if masks is not None:
            per_view[name].update(region_scores(res, masks[i].cpu().numpy(), backdrop_rendered))
        save_png(os.path.join(results_dir, f"{name}_rgb.png"), res["rgb"])
        save_png(os.path.join(results_dir, f"{name}_normal.png"), res["normal"])
        save_png(os.path.join(results_dir, f"{name}_depth.png"), depth_image(res["depth"]))
        write_atomic(os.path.join(results_dir, f"{name}_depth.npy"), lambda p: np.save(p, res["depth"]))
    means = {f"mean_{k}": float(np.mean([v[k] for v in per_view.values()])) if per_view else None
             for k in ("psnr", "ssim")}
    for k in ("psnr_object", "psnr_backdrop"):  # over the views that have the region
        values = [v[k] for v in per_view.values() if v.get(k) is not None]
        if values:
            means[f"mean_{k}"] = float(np.mean(values))
    metrics = {"views": per_view, **means, "step": step,
               "depth_units": "world (input frame), distance along the ray; NaN where nothing is hit"}
    write_json(os.path.join(results_dir, "metrics.json"), metrics)
    return metrics
