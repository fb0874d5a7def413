"""Checkpoints: plain dicts written atomically (hidden temporary file, then rename), holding everything needed
to resume the exact run (model, sampler, optimizer, grad scaler, step, every RNG state) and the resolved
config, so that resuming and `--test` need no flags repeated."""
import io
import math
import os
import random
import re
import threading

import numpy as np
import torch

from .config import STAGES, ConfigError, from_dict, validate
from .files import write_atomic

CHECKPOINT_NAME = re.compile(r"ckpt_(\d{7})\.pth")
# What `Trainer.state_dict` saves, with the types a resume can use; "error_map" and "views" are missing from
# checkpoints written before the error map and the scene's view count were saved.
CONTENTS = {"config": dict, "step": int, "model": dict, "sampler": dict, "optimizer": dict, "scaler": dict,
            "lr_scale": (int, float), "recoveries": int, "ray_budget": (dict, type(None)), "rng": dict}
OPTIONAL_CONTENTS = {"error_map": (dict, type(None)), "views": str}


# What a checkpoint holds besides tensors and Python's plain types: NumPy's RNG state (an array). `torch.load`
# with weights_only refuses every other global, so a crafted file cannot run code while it is read.
NUMPY_GLOBALS = [np.zeros(1).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def checkpoint_dir(workspace):
    return os.path.join(workspace, "checkpoints")


def checkpoint_path(folder, step):
    return os.path.join(folder, f"ckpt_{step:07d}.pth")


def list_checkpoints(folder):
    """Paths of the complete checkpoints in `folder`, oldest first (a temporary file never matches)."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if CHECKPOINT_NAME.fullmatch(f)]


def latest_checkpoint(folder):
    paths = list_checkpoints(folder)
    return paths[-1] if paths else None


def save_checkpoint(folder, state, keep):
    """Write `state` (a dict with "step") as folder/ckpt_NNNNNNN.pth and keep only the newest `keep` up to its
    step (none of a later one)."""
    path = checkpoint_path(folder, state["step"])
    # Serialised in memory first: torch.save into a file on a full disk raises a RuntimeError from its zip
    # writer; a plain write raises the OSError (ENOSPC) that the run reports as one line.
    buffer = io.BytesIO()
    torch.save(state, buffer)

    def write(p):
        with open(p, "wb") as f:
            f.write(buffer.getbuffer())

    write_atomic(path, write)
    # Checkpoints of later steps belong to a history this run has left (it began from scratch or from an earlier
    # checkpoint): kept, they would be what "latest" resumes, and the pruning by name would delete this run's.
    steps = [(int(CHECKPOINT_NAME.fullmatch(os.path.basename(p)).group(1)), p) for p in list_checkpoints(folder)]
    superseded = [p for step, p in steps if step > state["step"]]
    current = [p for step, p in steps if step <= state["step"]]
    for old in superseded + current[:-keep]:
        os.remove(old)
    return path


def to_host(state):
    """A copy of `state` (nested dicts, lists, tuples) whose tensors are on the CPU and share no memory with the
    originals, which training goes on changing."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: to_host(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_host(v) for v in state)
    return state


class CheckpointWriter:
    """Saves checkpoints one at a time, in order; a background save copies the state to the host at once (the
    only wait for the GPU) and serialises and writes it on a thread while training goes on (a 146-MB checkpoint
    takes ~0.7 s on a 2-core CPU). The error of a background write is raised by the next `save` or `wait`."""

    def __init__(self, folder, keep):
        self.folder, self.keep = folder, keep
        self.thread = self.error = None

    def save(self, state, background=False):
        """Path of the checkpoint of `state` (written, or being written when `background`)."""
        self.wait()
        if not background:  # (torch.save copies device tensors to the host itself)
            return save_checkpoint(self.folder, state, self.keep)
        state = to_host(state)

        def write():
            try:
                save_checkpoint(self.folder, state, self.keep)
            except BaseException as e:  # raised in the loop's thread by the next save or wait
                self.error = e

        # Not a daemon: a run that stops meanwhile (an error, Ctrl-C) still finishes the file before exiting.
        self.thread = threading.Thread(target=write, name="checkpoint-writer")
        self.thread.start()
        return checkpoint_path(self.folder, state["step"])

    def wait(self):
        """Until the background save (if any) is on disk; raises its error."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def load_checkpoint(path, device):
    """The dict saved by `save_checkpoint`, tensors on `device`; CheckpointError if it cannot be read, is not
    ours, or its contents are not what a resume needs (`check_contents`)."""
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS):
            state = torch.load(path, map_location=device, weights_only=True)
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
    except Exception:  # truncated, not a torch file, or objects other than plain data (the error's type varies)
        raise CheckpointError(f"{path}: unreadable checkpoint (damaged, or not plain data)") from None
    check_contents(state, path)
    return state


def check_contents(state, path):
    """CheckpointError unless the loaded `state` has every entry of `CONTENTS` with its type (and those of
    `OPTIONAL_CONTENTS` it has), a step >= 0, weights that are finite tensors, and a saved config of dicts that
    this version accepts."""
    if not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of this version (no config)")
    for key, kind in {**CONTENTS, **{k: v for k, v in OPTIONAL_CONTENTS.items() if k in state}}.items():
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint has no {key!r}")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise CheckpointError(f"{path}: checkpoint's {key!r} is of type {type(state[key]).__name__}")
    if state["step"] < 0:
        raise CheckpointError(f"{path}: checkpoint's step is {state['step']}")
    if not all(isinstance(t, torch.Tensor) for t in state["model"].values()):
        raise CheckpointError(f"{path}: checkpoint's 'model' holds something other than tensors")
    if not all_finite(t for t in state["model"].values() if t.is_floating_point()):
        raise CheckpointError(f"{path}: checkpoint holds non-finite weights")
    for key in ("optimizer", "sampler", "scaler", "error_map", "ray_budget"):  # a resume would train on them
        if not finite_contents(state.get(key)):
            raise CheckpointError(f"{path}: checkpoint's {key!r} holds non-finite values")
    if not (math.isfinite(state["lr_scale"]) and state["lr_scale"] >= 0):  # a product of --recovery_lr_factor
        raise CheckpointError(f"{path}: checkpoint's lr_scale is {state['lr_scale']}")
    if state["recoveries"] < 0:
        raise CheckpointError(f"{path}: checkpoint's recoveries is {state['recoveries']}")
    saved = state["config"]
    stage = next((name for name in STAGES if not isinstance(saved.get(name, {}), dict)), None)
    if stage is not None:
        raise CheckpointError(f"{path}: checkpoint's config has a {type(saved[stage]).__name__} for its {stage!r}")
    if not isinstance(saved.get("data", {}).get("path"), str):  # training always saves the scene's folder
        raise CheckpointError(f"{path}: checkpoint's config has no scene folder")
    try:
        validate(from_dict(saved))
    except ConfigError as e:
        raise CheckpointError(f"{path}: checkpoint's config is not valid ({e})") from None


def leaves(value):
    """The tensors and floats in nested dicts, lists and tuples."""
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from leaves(v)
    elif isinstance(value, (torch.Tensor, float)):
        yield value


def finite_contents(value):
    """Whether every float and every floating-point tensor value in `value` (nested) is finite."""
    found = list(leaves(value))
    return all(math.isfinite(v) for v in found if isinstance(v, float)) and all_finite(
        t for t in found if isinstance(t, torch.Tensor) and t.is_floating_point())


def all_finite(tensors):
    """Whether every value of every tensor is finite, with one wait for the GPU (not one per tensor)."""
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


def load_latest_valid(folder, device, warn):
    """(path, state) of the newest checkpoint in `folder` that loads, or (None, None) if there is none; each
    newer one that does not load is reported through `warn` (one line) and skipped. If there are checkpoints
    but none loads, the newest one's CheckpointError (and no warning)."""
    skipped = []
    for path in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(path, device)
        except CheckpointError as e:
            skipped.append(e)
            continue
        for e in skipped:
            warn(f"warning: {e}; trying the previous checkpoint")
        return path, state
    if skipped:
        raise skipped[0]
    return None, None


def rng_state(generator: torch.Generator) -> dict:
    """Every random number generator a run draws from: torch (CPU, CUDA), NumPy, Python, the ray sampler's."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "sampler": generator.get_state(),
    }


def set_rng_state(state: dict, generator: torch.Generator):
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["sampler"].cpu())
