"""Where the mesh stage's time goes: each part of `main_sdf.py`'s mesh stage, timed with the device synchronised.

    python scripts/profile_mesh.py --workspace W [--repeat 3] [--mc_resolution 512] [--unseen membrane]

Loads the workspace's checkpoint (as `--test` does), then runs the mesh stage (nerf.run.write_mesh: lattice,
marching cubes, colours, dropping unseen parts, files) `--repeat` times into a temporary folder (the workspace's
mesh is left alone) and prints, per part, the median seconds over the repeats. Parts nest (marching cubes holds
the kernel, `raymarching.marching_cubes` on a GPU, and the welding; the stage holds everything), so the rows do
not add up to the stage.
"""
import collections
import functools
import importlib
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import main_sdf  # noqa: E402
from nerf import run  # noqa: E402
from nerf.cli import OneLineParser, positive_int, report  # noqa: E402
from nerf.checkpoint import CheckpointError  # noqa: E402
from nerf.config import ConfigError  # noqa: E402
from nerf.input_checks import DatasetError  # noqa: E402

# (module, function) pairs timed: each looked up through its module at call time, so wrapping the attribute times it
# (rows are named by the function; a second function of the same name by module.function)
PARTS = [("nerf.mesh", "block_corners"), ("nerf.mesh", "surface_blocks"), ("nerf.mesh", "upsample"),
         ("nerf.mesh", "fill_blocks"), ("nerf.mesh", "restore_thin_parts"), ("nerf.mesh", "marching_cubes"),
         ("raymarching", "marching_cubes"),
         ("nerf.mesh", "weld_lattice_points"), ("nerf.mesh", "extract_surface"), ("nerf.mesh", "extract_mesh"),
         ("nerf.mesh_export", "component_labels"), ("nerf.mesh_export", "drop_unseen"),
         ("nerf.mesh_export", "relax_unseen_part"),
         ("nerf.mesh_export", "clean_components"), ("nerf.mesh_export", "write_mesh_files"),
         ("nerf.texture", "evaluate_colors"), ("nerf.run", "write_mesh")]


def timed(fn, seconds, stage, sync):
    """fn, adding its seconds (device synchronised) to seconds[stage[0]]."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        sync()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        sync()
        seconds[stage[0]] += time.perf_counter() - start
        return result

    return wrapper


def main():
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", required=True, help="a trained workspace")
    p.add_argument("--repeat", type=positive_int, default=3, help="mesh stages timed (the first one included)")
    p.add_argument("--mc_resolution", type=positive_int, help="lattice resolution (default: the checkpoint's)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when present)")
    p.add_argument("--unseen", help="keep or membrane: what the export does with the surface no camera sees "
                                    "(default: the checkpoint's)")
    args = p.parse_args()
    try:  # bad input as main_sdf.py reports it: one line, exit code 2
        device = run.pick_device(args.device)
        flags = ["--workspace", args.workspace, "--test", "--quiet", "--device", device]
        flags += ["--mc_resolution", str(args.mc_resolution)] if args.mc_resolution is not None else []
        flags += ["--unseen", args.unseen] if args.unseen is not None else []
        config, scene, trainer = run.prepare(main_sdf.parse_args(flags), device, run.StageClock(time.time()))
    except (main_sdf.UsageError, ConfigError, DatasetError, CheckpointError) as e:
        report(e)
        return 2
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times, stage = {}, [0]
    modules = {name: importlib.import_module(name) for name in dict.fromkeys(module for module, _ in PARTS)}
    for module, name in PARTS:
        fn = getattr(modules[module], name)
        row = name if name not in times else f"{module}.{name}"
        times[row] = collections.defaultdict(float)  # stage -> seconds
        # the stage's callers import some parts by name: wrap the name in every module that holds it
        for holder in modules.values():
            if getattr(holder, name, None) is fn:
                setattr(holder, name, timed(fn, times[row], stage, sync))
    faces = 0
    with tempfile.TemporaryDirectory() as out:
        os.makedirs(os.path.join(out, "meshes"))
        for stage[0] in range(args.repeat):
            _, _, mesh = run.write_mesh(config, scene, trainer, device, out)
            faces = len(mesh.faces)
    print(f"{args.workspace}: {config.export.mc_resolution}^3 lattice, {faces} faces, {device}; seconds a stage, "
          f"median of {args.repeat} (the first stage's)")
    for name, seconds in times.items():
        if seconds:
            per_stage = [seconds[k] for k in range(args.repeat)]
            print(f"  {name:26s} {np.median(per_stage):8.3f}  ({per_stage[0]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
