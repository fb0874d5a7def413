"""Building a trainer through the real command-line path, for the training tests (CPU and GPU)."""
import time

import main_sdf
from nerf.run import StageClock, prepare


def make_trainer(root, workspace, *flags, device="cpu"):
    """(config, scene, trainer) as `main_sdf.py root --workspace workspace flags...` would build them (resuming
    the workspace's latest checkpoint if there is one)."""
    args = main_sdf.parse_args([root, "--workspace", workspace, "--device", device, "--quiet", *flags])
    return prepare(args, device, StageClock(time.time()))


# A model small enough to train in seconds on a CPU (the schedules of the real one, fewer parameters).
TINY_MODEL = ["--num_rays", "64", "--num_levels", "4", "--log2_hashmap_size", "12", "--desired_resolution", "64",
              "--num_steps", "16", "--upsample_steps", "16", "--warmup", "5", "--eval_every", "0"]
