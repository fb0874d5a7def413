"""The training loop. Read `train` top to bottom: each `train_step` sets every schedule for its step
(`update_step`), draws rays, renders, takes the losses and an optimizer step; validation, checkpoints and the
divergence check come on a schedule.

On GPU a step waits for nothing on the host and is replayed as a CUDA graph (cuda_graph.py); the only wait is
the look at the counter of non-finite steps every `check_every` steps.
"""
import math
import os
import time

import torch
import tqdm

from . import losses
from .checkpoint import (CheckpointError, CheckpointWriter, all_finite, checkpoint_dir, load_latest_valid, rng_state,
                         set_rng_state)
from .config import to_dict
from .cuda_graph import GraphedStep
from .error_map import ErrorMap
from .evaluation import validation_image, view_background
from .files import save_png, write_json
from .interrupts import DeferredInterrupt
from .optim import lr_factor, make_optimizer, place_param_groups, set_lrs
from .provider import sample_rays
from .ray_budget import RayBudget


class TrainingDiverged(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the state of the last completed step was saved."""

    def __init__(self, step):
        super().__init__(step)
        self.step = step


def train_stats(steps, seconds, samples, rays, inv_s):
    """What a training run did, for WORKSPACE/train_stats.json (inv_s: the NeuS sharpness it ended at)."""
    return {"steps": steps, "seconds": seconds, "it_per_s": steps / max(seconds, 1e-9),
            "samples_per_s": samples / max(seconds, 1e-9), "samples_per_step": samples / max(steps, 1),
            "rays_per_step": rays / max(steps, 1), "inv_s": inv_s}


def views_shape(views):
    """'N views of WxH': what the error map's state depends on (its tiles), saved so that a resume on other
    views is refused."""
    return f"{len(views)} views of {views.width}x{views.height}"


class Trainer:
    """The optimisation state of one run: renderer (model + sampler), optimizer, grad scaler, the ray sampler's
    generator, the ray budget (`--cuda_ray`), the step, and the divergence bookkeeping."""

    def __init__(self, config, renderer, scene, workspace, device, logger, quiet=False):
        self.config, self.train_cfg = config, config.train
        self.device = torch.device(device)
        self.renderer = renderer.to(self.device)
        self.model = renderer.model
        self.scene, self.workspace, self.logger, self.quiet = scene, workspace, logger, quiet
        self.ckpt_dir = checkpoint_dir(workspace)
        self.checkpoints = CheckpointWriter(self.ckpt_dir, self.train_cfg.ckpt_keep)
        self.optimizer = make_optimizer(self.model, self.train_cfg, self.device)
        self.use_amp = self.train_cfg.fp16 and self.device.type == "cuda"
        # The scaler also skips steps whose gradients are not finite (with fused Adam, without waiting for the
        # GPU); in fp32 it stays at scale 1, halving only on such steps.
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=2.0**16 if self.use_amp else 1.0,
                                           growth_interval=2000 if self.use_amp else 2**30)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.train_cfg.seed)
        s = config.sampler  # --cuda_ray: a fixed budget of samples, about those of the PyTorch path's coarse pass
        self.ray_budget = RayBudget(self.train_cfg.num_rays * s.num_steps, self.train_cfg.num_rays,
                                    self.device) if s.cuda_ray else None
        self.error_map = ErrorMap(scene.train, self.device) if self.train_cfg.error_sampling > 0 else None
        self.step, self.lr_scale, self.recoveries = 0, 1.0, 0
        self.last_validation = None  # (step, PSNR) of the latest validation render
        self.last_scalars = {}  # the latest reported training scalars (loss, PSNR, inv_s, lr), for observers
        # Called as hook(trainer) after every step (e.g. the live viewer); a hook must not wait on the GPU.
        self.step_hooks = []
        # On the device, so that no step waits for the GPU: samples and rays rendered, and the current run of
        # steps with a non-finite loss.
        self.samples_seen = torch.zeros((), dtype=torch.int64, device=self.device)
        self.rays_seen = torch.zeros((), dtype=torch.int64, device=self.device)
        self.bad_streak = torch.zeros((), dtype=torch.int64, device=self.device)
        use_graph = self.train_cfg.cuda_graph and self.device.type == "cuda"
        self.graphed_step = GraphedStep(self.step_body, logger.log) if use_graph else None

    @property
    def eval_interval(self):
        """Steps between validations: --eval_every, but at most half the run, so that a short run (the CPU
        demo) writes one too; 0: never."""
        t = self.train_cfg
        return min(t.eval_every, max(t.iters // 2, 1)) if t.eval_every > 0 else 0

    def update_step(self):
        """Every step-dependent value for `self.step`: fd step, cos annealing, hash levels, occupancy, lr."""
        t = self.train_cfg
        self.renderer.update_step(self.step, t.iters)
        set_lrs(self.optimizer, lr_factor(self.step, t.iters, t.warmup, t.lr_final_ratio) * self.lr_scale)

    def draw_batch(self):
        if self.ray_budget and self.step % self.train_cfg.check_every == 0:
            self.ray_budget.refresh()  # where `train` has just waited on the GPU: no new wait
        n_rays = self.ray_budget.rays_per_step() if self.ray_budget else self.train_cfg.num_rays
        if self.error_map is not None:
            # A share of the step's samples: of its rays on the PyTorch path (a fixed count of samples a ray).
            share = self.train_cfg.error_sampling
            n_guided = self.ray_budget.guided_rays(share, n_rays) if self.ray_budget else round(share * n_rays)
            batch = self.error_map.draw(self.scene.train, n_rays, n_guided, self.generator)
        else:
            batch = sample_rays(self.scene.train, n_rays, self.generator)
        if self.config.field.background == "random":
            batch["bg"] = torch.rand(n_rays, 3, generator=self.generator, device=self.device)
        else:
            batch["bg"] = view_background(self.config.field.background, self.device).expand(n_rays, 3)
        return batch

    def losses(self, batch):
        """One forward pass: returns (total loss, dict of detached terms, each ray's colour error [R] for the
        error map (-1: a dropped ray) or None without one)."""
        t = self.train_cfg
        target, mask, bg = batch["rgb"], batch["mask"], batch["bg"]
        if mask is not None and self.model.background is None:
            # The object on the step's background colour: the model must not learn the backdrop. (A background
            # field learns the backdrop instead; the mask loss still tells the SDF where the object is.)
            target = target * mask[:, None] + bg * (1 - mask[:, None])
        capacity = self.ray_budget.capacity if self.ray_budget else None
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp, cache_enabled=False):
            out = self.renderer.render(batch["rays_o"], batch["rays_d"], bg, perturb=True, create_graph=True,
                                       capacity=capacity)
            # One jittered query per ray, at the samples of highest weight (under autocast, as the render).
            loss_smooth = (losses.normal_smoothness_loss(self.model, out["points"], out["normals"], out["weights"],
                                                         len(target), t.smoothness_eps)
                           if t.lambda_smoothness > 0 else None)
        ray_weights = out["ray_valid"].float()  # rays the fixed-budget march dropped count for nothing
        loss_rgb = losses.color_loss(out["rgb"], target, ray_weights, t.huber_delta) * t.rgb_weight
        loss_eikonal = losses.eikonal_loss(out["gradient"], out["inside"])
        loss = loss_rgb + t.lambda_eikonal * loss_eikonal
        terms = {"rgb": loss_rgb.detach(), "eikonal": loss_eikonal.detach(),
                 "psnr_mse": losses.mse(out["rgb"], target, ray_weights)}
        if loss_smooth is not None:
            loss = loss + t.lambda_smoothness * loss_smooth
            terms["smoothness"] = loss_smooth.detach()
        if mask is not None and t.lambda_mask > 0:
            loss_mask = losses.mask_loss(out["opacity"], mask, ray_weights)
            loss = loss + t.lambda_mask * loss_mask
            terms["mask"] = loss_mask.detach()
        self.samples_seen += out["inside"].sum()
        self.rays_seen += out["ray_valid"].sum()
        if self.ray_budget:
            self.ray_budget.record(out["ray_samples"], out["ray_valid"], batch.get("guided"))
        ray_error = None
        if self.error_map is not None:
            ray_error = torch.where(out["ray_valid"], (out["rgb"].detach().float() - target).abs().mean(-1), -1.0)
        return loss, terms, ray_error

    def step_body(self, batch):
        """Forward, backward and optimizer step on a batch; what a CUDA graph captures (no host waits)."""
        loss, terms, ray_error = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # skipped if a gradient is not finite (NaN loss, fp16 overflow)
        self.scaler.update()
        loss = loss.detach()
        self.bad_streak.copy_(torch.where(torch.isfinite(loss), 0, self.bad_streak + 1))
        return loss, terms, ray_error

    def train_step(self):
        """One training step at `self.step`, which it advances; returns (loss, terms) as device tensors."""
        self.renderer.train()
        self.update_step()
        batch = self.draw_batch()
        loss, terms, ray_error = (self.graphed_step or self.step_body)(batch)
        if self.error_map is not None:
            self.error_map.update(batch["tile"], ray_error)
        self.step += 1
        return loss, terms

    def train(self, until_step=None):
        """Train up to `iters` (or `until_step`, for tests of interrupted runs), then save a checkpoint.

        Ctrl-C stops after the step in flight and saves that state (TrainingInterrupted), so a resume continues
        exactly; a second Ctrl-C stops at once, keeping the last checkpoint."""
        t = self.train_cfg
        end = t.iters if until_step is None else min(until_step, t.iters)
        self.logger.log(f"training from step {self.step} to {end} on {self.device}: {len(self.scene.train)} views, "
                        f"{len(self.scene.test)} held out")
        bar = tqdm.tqdm(total=end, initial=self.step, dynamic_ncols=True, disable=self.quiet)
        start_time, start_step = time.time(), self.step
        self.samples_seen.zero_()
        self.rays_seen.zero_()
        with DeferredInterrupt() as interrupt, bar:
            while self.step < end:
                loss, terms = self.train_step()
                bar.update(1)
                for hook in self.step_hooks:
                    hook(self)
                if self.step % t.check_every == 0 or self.step == end:
                    bad_steps = int(self.bad_streak)  # the only wait on the GPU
                    # At the end any non-finite loss counts: a run whose last steps diverged must not export.
                    if bad_steps >= t.bad_steps or (self.step == end and (bad_steps > 0 or not self.weights_finite())):
                        self.recover(float(loss), self.step - bad_steps)
                        bar.n = self.step
                        continue
                    if bad_steps == 0:
                        self.report(bar, loss, terms, (self.step - start_step) / (time.time() - start_time))
                if self.eval_interval and self.step % self.eval_interval == 0 and self.step < t.iters:
                    self.validate()
                if t.ckpt_every > 0 and self.step % t.ckpt_every == 0 and self.step < end:
                    self.save(background=True)  # (the last step's is the save below)
                if interrupt.requested:
                    path = self.save()
                    self.logger.log(f"interrupted at step {self.step}; saved {path}")
                    raise TrainingInterrupted(self.step)
        self.save()
        elapsed, steps = time.time() - start_time, self.step - start_step
        stats = train_stats(steps, elapsed, int(self.samples_seen), int(self.rays_seen),
                            float(self.model.inv_s().detach()))
        write_json(os.path.join(self.workspace, "train_stats.json"), stats)
        self.logger.log(f"trained {steps} steps in {elapsed:.1f} s: {stats['it_per_s']:.2f} it/s, "
                        f"{stats['samples_per_s']:.3g} samples/s")
        return stats

    def report(self, bar, loss, terms, its):
        values = {f"train/loss_{k}": float(v) for k, v in terms.items() if k != "psnr_mse"}
        train_psnr = -10 * math.log10(max(float(terms["psnr_mse"]), 1e-10))
        inv_s = float(self.model.inv_s().detach())
        lr = float(self.optimizer.param_groups[0]["lr"])
        bar.set_postfix(loss=f"{float(loss):.4f}", psnr=f"{train_psnr:.2f}", inv_s=f"{inv_s:.0f}", lr=f"{lr:.2e}",
                        its=f"{its:.1f}")
        values.update({"train/loss": float(loss), "train/psnr": train_psnr, "train/inv_s": inv_s, "train/lr": lr})
        self.logger.scalars(values, self.step)
        self.last_scalars = {"step": self.step, **values}
        if self.step % 100 == 0 or self.step == self.train_cfg.iters:
            self.logger.log(f"step {self.step}: loss {float(loss):.4f} psnr {train_psnr:.2f} inv_s {inv_s:.1f} "
                            f"lr {lr:.2e} {its:.2f} it/s")

    def validate(self):
        """Render one held-out view (a different one each time): log its PSNR, save gt | render | normals."""
        views = self.scene.test if len(self.scene.test) else self.scene.train
        index = (self.step // self.eval_interval) % len(views)
        value, image = validation_image(self.renderer, views, index, self.config, self.scene.world_scale,
                                        self.device, self.use_amp)
        save_png(os.path.join(self.workspace, "validation", f"step_{self.step:07d}.png"), image)
        self.logger.scalars({"val/psnr": value}, self.step)
        self.logger.image("val/gt_rgb_normal", image, self.step)
        self.logger.log(f"validation at step {self.step}: view {views.names[index]} PSNR {value:.2f}")
        self.last_validation = (self.step, value)
        return value

    def recover(self, loss_value, first_bad_step):
        """Divergence: reload the last checkpoint with a lower learning rate, a few times at most; else stop."""
        t = self.train_cfg
        self.checkpoints.wait()
        try:
            latest, state = load_latest_valid(self.ckpt_dir, self.device, self.logger.log)
        except CheckpointError as e:  # every checkpoint is broken: none to recover from
            self.logger.log(f"warning: {e}")
            latest = None
        if latest is None or self.recoveries >= t.max_recoveries:
            raise TrainingDiverged(
                f"training diverged at step {first_bad_step} (loss {loss_value}) "
                + ("with no checkpoint to recover from" if latest is None else f"after {t.max_recoveries} recoveries"))
        recoveries, lr_scale = self.recoveries + 1, self.lr_scale * t.recovery_lr_factor
        self.load_state_dict(state)
        self.recoveries, self.lr_scale = recoveries, lr_scale
        self.bad_streak.zero_()
        self.logger.log(f"loss {loss_value} from step {first_bad_step}: reloaded {latest}, learning rate "
                        f"x{self.lr_scale}")

    # ------------------------------------------------------------------------------------------------------
    # Checkpoints: the whole state as one dict (checkpoint.py writes and reads it)

    def state_dict(self):
        return {"config": to_dict(self.config), "step": self.step, "model": self.model.state_dict(),
                "sampler": self.renderer.sampler.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "lr_scale": self.lr_scale, "recoveries": self.recoveries,
                "ray_budget": self.ray_budget.state_dict() if self.ray_budget else None,
                "error_map": self.error_map.state_dict() if self.error_map else None,
                "views": views_shape(self.scene.train), "rng": rng_state(self.generator)}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.renderer.sampler.load_state_dict(state["sampler"])
        self.optimizer.load_state_dict(state["optimizer"])
        place_param_groups(self.optimizer.param_groups, self.device)
        if self.graphed_step is not None:
            self.graphed_step.reset()  # the graph refers to the optimizer's old state tensors
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.lr_scale, self.recoveries = state["step"], state["lr_scale"], state["recoveries"]
        if self.ray_budget:
            self.ray_budget.load_state_dict(state["ray_budget"])
        if self.error_map and state.get("error_map") is not None:  # (none in a checkpoint from before the map)
            self.error_map.load_state_dict(state["error_map"])
        set_rng_state(state["rng"], self.generator)
        self.model.update_step(self.step, self.train_cfg.iters)

    def weights_finite(self):
        return all_finite(self.model.parameters())

    def save(self, background=False):
        """A checkpoint of the current state (written on a thread while training goes on, if `background`),
        unless the last loss or a weight is not finite (it would betray a resume or a recovery)."""
        if int(self.bad_streak) > 0 or not self.weights_finite():
            self.logger.log(f"step {self.step}: loss or weights not finite, checkpoint not saved")
            return None
        return self.checkpoints.save(self.state_dict(), background)
