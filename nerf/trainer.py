"""The training loop, losses, checkpoints, logs, and the test-time outputs (mesh, renders, metrics).

Read `train` top to bottom: sample rays -> render -> losses -> step, with validation and checkpoints on a
schedule. Checkpoints are plain dicts written atomically (temporary file + rename) and hold everything needed
to resume the exact run: model, optimizer, grad scaler, step, every RNG state.
"""
import json
import math
import os
import random
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import tqdm

from .mesh import export_mesh, extract_mesh
from .metrics import psnr, ssim
from .provider import image_rays, sample_rays


class TrainingDiverged(RuntimeError):
    pass


def lr_factor(step, total_steps, warmup_steps, final_ratio=0.05):
    """Linear warm-up, then cosine decay to `final_ratio` of the base learning rate (as NeuS)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, lr, device):
    """Adam; the hash-grid embeddings get no weight decay (decay would erase rarely-seen cells).

    On CUDA it is fused (one kernel; the grad scaler skips a non-finite step without waiting for the GPU) and
    capturable with learning rates in device tensors, so that a step can be replayed as a CUDA graph: set them
    with `set_lr`."""
    encoding = list(model.sdf_net.encoder.parameters())
    encoding_ids = {id(p) for p in encoding}
    networks = [p for n, p in model.named_parameters() if id(p) not in encoding_ids and n != "variance"]
    groups = [
        {"params": encoding, "base_lr": lr, "weight_decay": 0.0},
        {"params": networks, "base_lr": lr, "weight_decay": 1e-6},
        {"params": [model.variance], "base_lr": lr * 0.1, "weight_decay": 0.0},
    ]
    cuda = torch.device(device).type == "cuda"
    for group in groups:
        group["lr"] = group["base_lr"]
    place_param_groups(groups, device)
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99), eps=1e-15, fused=cuda, capturable=cuda)


def place_param_groups(groups, device):
    """Adam group settings for `device` (before building the optimizer, and after loading a checkpoint made on
    another device): on CUDA fused and capturable, with each group's learning rate in a device tensor of its
    own (a shared one would tie the groups' rates); elsewhere plain floats."""
    cuda = torch.device(device).type == "cuda"
    for group in groups:
        group.update(fused=cuda, capturable=cuda)
        group["lr"] = torch.tensor(float(group["lr"]), device=device) if cuda else float(group["lr"])


def set_lr(group, value):
    if torch.is_tensor(group["lr"]):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


class GraphedStep:
    """Runs `body(batch)` (forward, backward, optimizer step) as a CUDA graph: captured once per batch shape,
    then replayed with the batch copied into the captured inputs, so the host launches one graph instead of a
    few hundred kernels. The step with a new shape runs eagerly on the capture stream first (it is a real
    step, and it performs lazy initialisations such as cuBLAS workspaces outside the capture).

    Everything the body reads must be a tensor updated in place (learning rates, step-dependent model knobs,
    the occupancy bitfield); shapes must depend on the batch shape only; nothing may wait for the GPU.
    """

    def __init__(self, body, log):
        self.body = body
        self.log = log
        self.stream = torch.cuda.Stream()
        self.enabled = True
        self.reset()

    def reset(self):
        """Forget the graph (after loading a checkpoint: the optimizer's state tensors are new)."""
        self.graph = self.key = self.static_batch = self.static_out = None

    def __call__(self, batch):
        if not self.enabled:
            return self.body(batch)
        key = tuple((k, None if v is None else tuple(v.shape)) for k, v in batch.items())
        if key == self.key:
            for k, v in batch.items():
                if v is not None:
                    self.static_batch[k].copy_(v)
            self.graph.replay()
            return self.static_out
        self.reset()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = self.body(batch)
            self.static_batch = {k: None if v is None else v.clone() for k, v in batch.items()}
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
                self.static_out = self.body(self.static_batch)
        except RuntimeError as e:  # something in the step waits for the GPU (e.g. a twin on CUDA): stay eager
            self.log(f"CUDA graph capture failed, training without graphs: {str(e).splitlines()[0]}")
            self.enabled = False
            self.reset()
        torch.cuda.current_stream().wait_stream(self.stream)
        self.key = key
        return out


def masked_mean(x, weights):
    """Mean of x [R, ...] over rows with weight 1 (weights [R] float, or None for all rows); 0 if none."""
    if weights is None:
        return x.mean()
    per_row = x.reshape(x.shape[0], -1).mean(-1)
    return (per_row * weights).sum() / weights.sum().clamp_min(1)


def write_atomic(path, write_fn):
    """Call write_fn(tmp_path), then rename onto `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    write_fn(tmp)
    os.replace(tmp, path)


def write_json(path, value):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)

    write_atomic(path, write)


def save_png(path, image):
    """image: [H, W, 3] float in [0, 1] or uint8."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    write_atomic(path, lambda p: cv2.imwrite(p, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)))


class Trainer:
    def __init__(self, opt, model, renderer, scene, workspace, device):
        self.opt = opt
        self.model = model.to(device)
        self.renderer = renderer.to(device)
        self.scene = scene
        self.workspace = workspace
        self.device = torch.device(device)
        self.optimizer = make_optimizer(self.model, opt.lr, self.device)
        self.use_amp = opt.fp16 and self.device.type == "cuda"
        # The scaler also skips steps whose gradients are not finite (with fused Adam, without waiting for the
        # GPU); in fp32 it stays at scale 1, halving only on such steps.
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=2.0**16 if self.use_amp else 1.0,
                                           growth_interval=2000 if self.use_amp else 2**30)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(opt.seed)
        self.step = 0
        self.lr_scale = 1.0  # halved on each recovery from divergence
        self.recoveries = 0
        self.ckpt_dir = os.path.join(workspace, "checkpoints")
        self.writer = None
        self.log_file = None
        # On the device, so that no step waits for the GPU: samples and rays rendered, and the current run of
        # steps with a non-finite loss (looked at every `check_every` steps).
        self.samples_seen = torch.zeros((), dtype=torch.int64, device=self.device)
        self.rays_seen = torch.zeros((), dtype=torch.int64, device=self.device)
        self.bad_streak = torch.zeros((), dtype=torch.int64, device=self.device)
        self.graphed_step = None
        if opt.cuda_graph and self.device.type == "cuda":
            self.graphed_step = GraphedStep(self.step_body, self.log)

    # ------------------------------------------------------------------------------------------------------
    # Logging

    def log(self, msg):
        if self.log_file is None:
            os.makedirs(self.workspace, exist_ok=True)
            self.log_file = open(os.path.join(self.workspace, "log.txt"), "a")
        self.log_file.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}\n")
        self.log_file.flush()

    def scalar(self, name, value):
        if self.writer is None:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(self.workspace, "run"))
        self.writer.add_scalar(name, value, self.step)

    def background(self, n_rays):
        if self.opt.background == "random":
            return torch.rand(n_rays, 3, generator=self.generator, device=self.device)
        value = 1.0 if self.opt.background == "white" else 0.0
        return torch.full((n_rays, 3), value, device=self.device)

    # ------------------------------------------------------------------------------------------------------
    # Training

    def losses(self, batch):
        """One forward pass: returns (total loss, dict of detached terms)."""
        opt = self.opt
        target, mask, bg = batch["rgb"], batch["mask"], batch["bg"]
        if mask is not None:  # the object on the step's background: the model must not learn the backdrop
            target = target * mask[:, None] + bg * (1 - mask[:, None])
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp, cache_enabled=False):
            out = self.renderer.render(batch["rays_o"], batch["rays_d"], bg, perturb=True, create_graph=True)
        ray_valid = out.get("ray_valid")  # rays the renderer dropped (fixed sample budget) count for nothing
        ray_weights = None if ray_valid is None else ray_valid.float()
        # Huber: ~L1 for large errors.
        loss_rgb = masked_mean(F.huber_loss(out["rgb"], target, delta=0.1, reduction="none"), ray_weights) * 10
        grad_norm = out["gradient"].float().norm(dim=-1)
        inside = out["inside"].float()
        loss_eikonal = (((grad_norm - 1) ** 2) * inside).sum() / inside.sum().clamp_min(1)
        loss = loss_rgb + opt.lambda_eikonal * loss_eikonal
        terms = {"rgb": loss_rgb.detach(), "eikonal": loss_eikonal.detach(),
                 "psnr_mse": masked_mean((out["rgb"].detach() - target) ** 2, ray_weights)}
        self.samples_seen += out["inside"].sum()
        self.rays_seen += target.shape[0] if ray_valid is None else ray_valid.sum()
        if mask is not None and opt.lambda_mask > 0:
            # Written out rather than F.binary_cross_entropy, which raises on NaN instead of letting the
            # divergence check see it.
            opacity = out["opacity"].clamp(1e-3, 1 - 1e-3)
            loss_mask = masked_mean(-(mask * torch.log(opacity) + (1 - mask) * torch.log(1 - opacity)), ray_weights)
            loss = loss + opt.lambda_mask * loss_mask
            terms["mask"] = loss_mask.detach()
        return loss, terms

    def step_body(self, batch):
        """Forward, backward and optimizer step on a batch; what a CUDA graph captures (no host waits)."""
        loss, terms = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # skipped if a gradient is not finite (NaN loss, fp16 overflow)
        self.scaler.update()
        loss = loss.detach()
        self.bad_streak.copy_(torch.where(torch.isfinite(loss), 0, self.bad_streak + 1))
        return loss, terms

    def train_step(self):
        self.model.train()
        self.model.update_step(self.step, self.opt.iters)
        self.renderer.update_step(self.step, self.opt.iters)
        factor = lr_factor(self.step, self.opt.iters, self.opt.warmup) * self.lr_scale
        for group in self.optimizer.param_groups:
            set_lr(group, group["base_lr"] * factor)
        n_rays = self.renderer.rays_per_step(self.opt.num_rays)
        batch = sample_rays(self.scene.train, n_rays, self.generator)
        batch["bg"] = self.background(n_rays)
        if self.graphed_step is not None:
            return self.graphed_step(batch)
        return self.step_body(batch)

    def train(self, until_step=None, check_every=10):
        """Train up to opt.iters (or `until_step`, for tests of interrupted runs), then save a checkpoint.

        Divergence: steps with a non-finite loss are skipped (by the grad scaler); every `check_every` steps the
        loop looks at how many came in a row, and after 10 reloads the last checkpoint (see `recover`)."""
        opt = self.opt
        end = opt.iters if until_step is None else min(until_step, opt.iters)
        self.log(f"training from step {self.step} to {end} on {self.device}: {len(self.scene.train)} views, "
                 f"{len(self.scene.test)} held out")
        bar = tqdm.tqdm(total=end, initial=self.step, dynamic_ncols=True, disable=opt.quiet)
        start_time, start_step = time.time(), self.step
        self.samples_seen.zero_()
        self.rays_seen.zero_()
        try:
            while self.step < end:
                loss, terms = self.train_step()
                self.step += 1
                bar.update(1)
                if self.step % check_every == 0 or self.step == end:
                    bad_steps = int(self.bad_streak)  # the only wait on the GPU, once per check_every steps
                    if bad_steps >= 10:
                        self.recover(float(loss), self.step - bad_steps)
                        bar.n = self.step
                        continue
                    if bad_steps == 0:
                        self.report(bar, loss, terms, (self.step - start_step) / (time.time() - start_time))
                if opt.eval_every > 0 and self.step % opt.eval_every == 0 and self.step < opt.iters:
                    self.validate()
                if opt.ckpt_every > 0 and self.step % opt.ckpt_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            bar.close()
            path = self.save_checkpoint()
            self.log(f"interrupted at step {self.step}; saved {path}")
            raise
        bar.close()
        self.save_checkpoint()
        elapsed = time.time() - start_time
        steps = self.step - start_step
        samples, rays = int(self.samples_seen), int(self.rays_seen)
        stats = {"steps": steps, "seconds": elapsed, "it_per_s": steps / max(elapsed, 1e-9),
                 "samples_per_s": samples / max(elapsed, 1e-9), "samples_per_step": samples / max(steps, 1),
                 "rays_per_step": rays / max(steps, 1)}
        write_json(os.path.join(self.workspace, "train_stats.json"), stats)
        self.log(f"trained {steps} steps in {elapsed:.1f} s: {stats['it_per_s']:.2f} it/s, "
                 f"{stats['samples_per_s']:.3g} samples/s")
        return stats

    def report(self, bar, loss, terms, its):
        values = {k: float(v) for k, v in terms.items()}
        train_psnr = -10 * math.log10(max(values.pop("psnr_mse"), 1e-10))
        inv_s = float(self.model.inv_s().detach())
        lr = float(self.optimizer.param_groups[0]["lr"])
        bar.set_postfix(loss=f"{float(loss):.4f}", psnr=f"{train_psnr:.2f}", inv_s=f"{inv_s:.0f}", lr=f"{lr:.2e}",
                        its=f"{its:.1f}")
        for k, v in values.items():
            self.scalar(f"train/loss_{k}", v)
        self.scalar("train/loss", float(loss))
        self.scalar("train/psnr", train_psnr)
        self.scalar("train/inv_s", inv_s)
        self.scalar("train/lr", lr)
        if self.step % 100 == 0 or self.step == self.opt.iters:
            self.log(f"step {self.step}: loss {float(loss):.4f} psnr {train_psnr:.2f} inv_s {inv_s:.1f} "
                     f"lr {lr:.2e} {its:.2f} it/s")

    def recover(self, loss_value, first_bad_step):
        """Divergence: reload the last checkpoint with half the learning rate, at most twice; else stop."""
        latest = self.latest_checkpoint()
        if latest is None or self.recoveries >= 2:
            raise TrainingDiverged(
                f"training diverged at step {first_bad_step} (loss {loss_value}) "
                + ("with no checkpoint to recover from" if latest is None else "after 2 recoveries"))
        self.recoveries += 1
        recoveries, lr_scale = self.recoveries, self.lr_scale * 0.5
        self.load_checkpoint(latest)
        self.recoveries, self.lr_scale = recoveries, lr_scale
        self.bad_streak.zero_()
        self.log(f"loss {loss_value} for 10 steps from step {first_bad_step}: reloaded {latest}, "
                 f"learning rate x{self.lr_scale}")

    # ------------------------------------------------------------------------------------------------------
    # Checkpoints

    def latest_checkpoint(self):
        if not os.path.isdir(self.ckpt_dir):
            return None
        files = sorted(f for f in os.listdir(self.ckpt_dir) if f.startswith("ckpt_") and f.endswith(".pth"))
        return os.path.join(self.ckpt_dir, files[-1]) if files else None

    def save_checkpoint(self, keep=2):
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "renderer": self.renderer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "lr_scale": self.lr_scale,
            "recoveries": self.recoveries,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "sampler": self.generator.get_state(),
            },
            "options": vars(self.opt),
        }
        path = os.path.join(self.ckpt_dir, f"ckpt_{self.step:07d}.pth")
        write_atomic(path, lambda p: torch.save(state, p))
        old = sorted(f for f in os.listdir(self.ckpt_dir) if f.startswith("ckpt_") and f.endswith(".pth"))
        for f in old[:-keep]:
            os.remove(os.path.join(self.ckpt_dir, f))
        return path

    def load_checkpoint(self, path):
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.renderer.load_state_dict(state["renderer"])
        self.optimizer.load_state_dict(state["optimizer"])
        place_param_groups(self.optimizer.param_groups, self.device)
        if self.graphed_step is not None:
            self.graphed_step.reset()  # the graph refers to the optimizer's old state tensors
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.lr_scale = state.get("lr_scale", 1.0)
        self.recoveries = state.get("recoveries", 0)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.generator.set_state(rng["sampler"].cpu())
        self.model.update_step(self.step, self.opt.iters)
        self.log(f"loaded {path} (step {self.step})")

    # ------------------------------------------------------------------------------------------------------
    # Evaluation and outputs

    def render_view(self, views, index, downscale=1):
        """Render one view -> dict of numpy images: rgb, normal [H, W, 3] in [0, 1], depth [H, W] (world units,
        NaN where the ray hits nothing), opacity, and the ground truth rgb (on the scene's background)."""
        self.model.eval()
        rays = image_rays(views, index, downscale)
        h, w = rays["rays_o"].shape[:2]
        bg_value = 0.0 if self.opt.background == "black" else 1.0  # random -> white for viewing
        bg = torch.full((3,), bg_value, device=self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            out = self.renderer.render_chunked(rays["rays_o"].reshape(-1, 3), rays["rays_d"].reshape(-1, 3), bg,
                                               chunk=self.opt.eval_chunk)
        gt = rays["rgb"]
        if rays["mask"] is not None:
            gt = gt * rays["mask"][..., None] + bg * (1 - rays["mask"][..., None])
        opacity = out["opacity"].reshape(h, w)
        depth = out["depth"].reshape(h, w) / opacity.clamp_min(1e-6) * self.scene.world_scale
        depth = torch.where(opacity > 0.5, depth, torch.full_like(depth, float("nan")))
        normal = F.normalize(out["normal"].reshape(h, w, 3), dim=-1)
        # Normals shown in the camera frame, as is usual: (x right, y up, z towards the viewer) -> RGB.
        c2w = views.c2w[index][:3, :3]
        normal_cam = normal @ c2w * torch.tensor([1.0, -1.0, -1.0], device=self.device)
        normal_img = (normal_cam * 0.5 + 0.5) * opacity[..., None] + (1 - opacity[..., None])
        return {
            "rgb": out["rgb"].reshape(h, w, 3).clamp(0, 1).cpu().numpy(),
            "normal": normal_img.clamp(0, 1).cpu().numpy(),
            "depth": depth.cpu().numpy(),
            "opacity": opacity.cpu().numpy(),
            "gt": gt.cpu().numpy(),
        }

    def validate(self):
        views = self.scene.test if len(self.scene.test) else self.scene.train
        index = (self.step // max(self.opt.eval_every, 1)) % len(views)
        res = self.render_view(views, index, downscale=self.opt.eval_downscale)
        value = psnr(torch.from_numpy(res["rgb"]), torch.from_numpy(res["gt"]))
        image = np.concatenate([res["gt"], res["rgb"], res["normal"]], axis=1)
        save_png(os.path.join(self.workspace, "validation", f"step_{self.step:07d}.png"), image)
        self.scalar("val/psnr", value)
        if self.writer is not None:
            self.writer.add_image("val/gt_rgb_normal", image, self.step, dataformats="HWC")
        self.log(f"validation at step {self.step}: view {views.names[index]} PSNR {value:.2f}")
        return value

    def export_mesh(self):
        mesh = extract_mesh(self.model, self.opt.mc_resolution, self.scene.to_world, self.device)
        path = os.path.join(self.workspace, "meshes", "mesh.ply")
        export_mesh(mesh, path)
        self.log(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces -> {path}")
        return path

    def test(self):
        """Render every held-out view (rgb, normal, depth) and write results/metrics.json."""
        results = os.path.join(self.workspace, "results")
        per_view = {}
        for i, name in enumerate(self.scene.test.names):
            res = self.render_view(self.scene.test, i)
            rgb, gt = torch.from_numpy(res["rgb"]), torch.from_numpy(res["gt"])
            per_view[name] = {"psnr": psnr(rgb, gt), "ssim": ssim(rgb, gt)}
            save_png(os.path.join(results, f"{name}_rgb.png"), res["rgb"])
            save_png(os.path.join(results, f"{name}_normal.png"), res["normal"])
            depth = res["depth"]
            valid = np.isfinite(depth)
            lo, hi = (np.nanmin(depth), np.nanmax(depth)) if valid.any() else (0.0, 1.0)
            depth_img = np.where(valid, 1 - (depth - lo) / max(hi - lo, 1e-8), 0.0)
            save_png(os.path.join(results, f"{name}_depth.png"), np.repeat(depth_img[..., None], 3, -1))
            write_atomic(os.path.join(results, f"{name}_depth.npy"), lambda p: np.save(p, depth))
        metrics = {
            "views": per_view,
            "mean_psnr": float(np.mean([v["psnr"] for v in per_view.values()])) if per_view else None,
            "mean_ssim": float(np.mean([v["ssim"] for v in per_view.values()])) if per_view else None,
            "step": self.step,
            "depth_units": "world (input frame), distance along the ray; NaN where nothing is hit",
        }
        path = os.path.join(results, "metrics.json")
        write_json(path, metrics)
        self.log(f"test: {len(per_view)} views, PSNR {metrics['mean_psnr']}, SSIM {metrics['mean_ssim']}")
        return metrics
