"""Every setting of a run, with its default, once: one frozen dataclass per stage of the data flow.

    data -> field -> sampler -> train -> export

The defaults are the GPU method; `device_preset` returns the lean CPU variant. The command line is generated
from the fields (`add_arguments`, flag = field name, help from the field's metadata), so a new setting is one
line here. The resolved config is saved in every checkpoint (`to_dict`) and restored on resume and `--test`
(`restore`): flags that would change what the checkpoint holds are refused, evaluation-only flags are allowed.
"""
import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Optional

# The normalised space: the object lies inside the sphere of this radius at the origin (the loaders put it
# there). The SDF is trained, sampled and meshed inside it.
SCENE_RADIUS = 1.0
# Upper bounds of the model's sizes: generous, but what one GPU can hold (32 levels of 2**24 rows are 2**29 rows
# of the int32-indexed hash table, 4 GB of float32 weights); the spherical-harmonics encoder has 8 bands at most.
MAX_LEVELS, MAX_LOG2_HASHMAP_SIZE, MAX_RESOLUTION, MAX_WIDTH, MAX_SH_DEGREE = 32, 24, 2**20, 1024, 8
# A marching-cubes lattice of 4096^3 is evaluated block by block in a few minutes on a GPU; beyond it, sizes overflow.
MAX_MC_RESOLUTION = 4096
# Network depth and samples per ray: far beyond any use, and small enough that one step's tensors can be allocated.
MAX_DEPTH, MAX_SAMPLES = 16, 4096
# Every float setting but the data's is 0 or within these magnitudes: they reach float32 tensors (range ~1e-38
# to 3e38), also as products of two settings (a learning rate times its ratio).
FLOAT_RANGE = (1e-15, 1e15)
MESH_FORMATS = ("ply", "obj", "glb")
# --downscale 0: photos beyond this longer side (a phone's 4032x3024) train at 1/2, 1/3, ... of their size; the rays a
# step are the same, and the loading, memory and held-out renders at full size would cost minutes for detail that
# 5000 steps do not reach. Scenes of up to 2000 px (DTU's 1600x1200) keep theirs.
AUTO_DOWNSCALE_SIDE = 2000
# --preset: a share of the device's training steps (the learning-rate warm-up scaled alike; the other schedules
# are fractions of the run already), and settings it changes. "fast": no validation renders, and half the rays
# guided by the error map, which a short run gains most from (BENCHMARKS.md, session 11).
PRESETS = {"fast": {"steps": 0.3, "settings": {"eval_every": 0, "error_sampling": 0.5}}}


class ConfigError(ValueError):
    """A bad setting: the message is one line naming the flag (`--name: problem`)."""


def opt(default, help, minimum=None, maximum=None, exclusive=False, choices=None, cli=True):
    """A config field: `help` is the flag's help text; `minimum`, `maximum` (bounds of the value, themselves
    excluded when `exclusive`) and `choices` are checked by `validate`."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "maximum": maximum,
                                            "exclusive": exclusive, "choices": choices, "cli": cli})


@dataclass(frozen=True)
class DataConfig:
    path: Optional[str] = opt(None, "scene folder (NeuS, NeRF-synthetic or instant-ngp); for --test and resume "
                                    "the checkpoint knows it", cli=False)
    downscale: int = opt(0, f"load images downscaled by this integer factor (0: the smallest that brings their "
                            f"longer side to at most {AUTO_DOWNSCALE_SIDE} px)", minimum=0)
    holdout: int = opt(8, "hold out every N-th view for testing (0: none)", minimum=0)
    center: Optional[str] = opt(None, "x,y,z: centre of the region of interest in world units, with --radius; "
                                      "replaces the unit sphere that the scene's format gives or that is derived")
    radius: Optional[float] = opt(None, "radius of the region of interest in world units (with --center)",
                                  minimum=0.0)
    no_masks: bool = opt(False, "ignore the scene's masks (and alpha channels): train it as an unmasked capture, "
                                "with the background field (--test still scores the object and the backdrop apart "
                                "by the held-out views' masks)")


@dataclass(frozen=True)
class FieldConfig:
    num_levels: int = opt(16, "hash-grid levels (2 features each)", minimum=1, maximum=MAX_LEVELS)
    log2_hashmap_size: int = opt(19, "log2 of each level's table", minimum=4, maximum=MAX_LOG2_HASHMAP_SIZE)
    base_resolution: int = opt(16, "coarsest grid resolution", minimum=2)
    desired_resolution: int = opt(2048, "finest grid resolution", minimum=2, maximum=MAX_RESOLUTION)
    hidden_dim: int = opt(64, "MLP width", minimum=1, maximum=MAX_WIDTH)
    num_layers: int = opt(1, "hidden layers of the SDF MLP", minimum=1, maximum=MAX_DEPTH)
    color_layers: int = opt(2, "hidden layers of the colour MLP", minimum=1, maximum=MAX_DEPTH)
    feature_dim: int = opt(15, "geometry feature passed from the SDF MLP to the colour MLP", minimum=1,
                           maximum=MAX_WIDTH)
    sh_degree: int = opt(4, "spherical-harmonics degree of the view direction", minimum=1, maximum=MAX_SH_DEGREE)
    init_radius: float = opt(0.5, "radius of the sphere the SDF starts as (normalised units)", minimum=0.0,
                             maximum=SCENE_RADIUS, exclusive=True)
    # inv_s is clamped to [1e-6, 1e6] (v within about +-1.38): a v beyond that gets no gradient
    init_variance: float = opt(0.3, "initial NeuS variance v (inv_s = exp(10 v))", minimum=-1.0, maximum=1.0)
    normals: str = opt("analytic", "SDF gradient by autograd double backward, or by central finite differences",
                       choices=("analytic", "fd"))
    fd_eps_start: float = opt(5e-3, "finite-difference step at the start (--normals fd)", minimum=0.0,
                              exclusive=True)
    fd_eps_end: float = opt(5e-4, "finite-difference step at the end (geometric interpolation)", minimum=0.0,
                            exclusive=True)
    levels_start: int = opt(4, "hash levels active at the start", minimum=1)
    levels_until: float = opt(0.5, "fraction of training by which every hash level is active (coarse to fine; "
                                   "0: all from the start)", minimum=0.0)
    anneal_end: float = opt(0.1, "fraction of training over which NeuS cos annealing goes 0 -> 1", minimum=0.0)
    background: Optional[str] = opt(None, "what lies behind the object: 'nerf' a background field outside the "
                                          "sphere (the room of an unmasked capture), or a colour, 'random' per ray "
                                          "(masked scenes), 'white' or 'black' (default: random with masks, else "
                                          "nerf)", choices=("nerf", "random", "white", "black"))
    bg_num_levels: int = opt(8, "hash-grid levels of the background field (--background nerf)", minimum=1,
                             maximum=MAX_LEVELS)
    bg_log2_hashmap_size: int = opt(16, "log2 of each background level's table", minimum=4,
                                    maximum=MAX_LOG2_HASHMAP_SIZE)
    bg_desired_resolution: int = opt(256, "finest background grid resolution (over the contracted space)",
                                     minimum=2, maximum=MAX_RESOLUTION)
    bg_hidden_dim: int = opt(64, "MLP width of the background field", minimum=1, maximum=MAX_WIDTH)
    bg_sh_degree: int = opt(4, "spherical-harmonics degree of the background's view direction (lower: less "
                               "freedom to colour the backdrop per view; 1: none)", minimum=1,
                            maximum=MAX_SH_DEGREE)
    bg_levels_start: int = opt(2, "background hash levels active at the start", minimum=1, cli=False)
    # Coarse to fine, the backdrop's large shapes (the table, the room) settle before fine levels can paint each
    # view's pixels at a wrong depth: on unmasked DTU held-out views it gained 0.8 dB (median of 5-6 runs).
    bg_levels_until: float = opt(0.5, "fraction of training by which every background hash level is active "
                                      "(coarse to fine; 0: all from the start)", minimum=0.0)


@dataclass(frozen=True)
class SamplerConfig:
    bg_samples: int = opt(64, "background-field samples per ray, from where it enters the sphere to infinity "
                              "(--background nerf)", minimum=1, maximum=MAX_SAMPLES)
    # Where the background's samples begin: the sphere's entry lets it paint what the SDF leaves transparent inside
    # the sphere (DTU's cloth around the object) at its own depth, still composited behind the SDF; from the exit
    # (False, what checkpoints of older versions were trained with) it could only paint it from behind the sphere.
    bg_from_entry: bool = opt(True, "background samples begin where the ray enters the sphere", cli=False)
    cuda_ray: bool = opt(False, "sample only in occupied cells of an occupancy grid, at a fixed step, with our "
                                "raymarching kernels, stopping rays inside the object; each step marches a fixed "
                                "budget of num_rays x num_steps samples")
    num_steps: int = opt(64, "stratified samples per ray", minimum=1, maximum=MAX_SAMPLES)
    upsample_steps: int = opt(64, "NeuS importance samples per ray, a multiple of upsample_per_round", minimum=0,
                              maximum=MAX_SAMPLES)
    upsample_per_round: int = opt(16, "importance samples per up-sampling round", minimum=1)
    upsample_inv_s: float = opt(64.0, "inv_s of the first up-sampling round (doubled each round)", minimum=0.0)
    grid_resolution: int = opt(128, "occupancy-grid cells per axis (--cuda_ray)", minimum=2)
    steps_per_diagonal: int = opt(1024, "marching step = the unit box's diagonal / this (--cuda_ray)", minimum=1,
                                  maximum=MAX_SAMPLES * 16)
    grid_warmup_until: float = opt(0.3, "fraction of training during which every cell is occupied (--cuda_ray): "
                                        "parts that the early SDF misses, such as thin ones, are still sampled "
                                        "while it learns them", minimum=0.0)
    grid_update_every: int = opt(16, "steps between occupancy refreshes (--cuda_ray)", minimum=1)
    grid_threshold: float = opt(0.05, "cells whose NeuS alpha stays below this are skipped (--cuda_ray)",
                                minimum=0.0)
    grid_decay: float = opt(0.95, "occupancy decay per refresh (--cuda_ray)", minimum=0.0)
    stop_diagonals: float = opt(2.0, "rays stop in cells whose SDF is below -this many cell diagonals "
                                     "(--cuda_ray; 0: never)", minimum=0.0)


@dataclass(frozen=True)
class TrainConfig:
    preset: Optional[str] = opt(None, "'fast': a quick look, 30 % of the steps (schedules scaled with them), "
                                      "error-guided rays, no validation renders; flags still win (measured "
                                      "quality: BENCHMARKS.md)",
                                choices=tuple(PRESETS))
    # (10^8 steps are weeks on one GPU; a bound keeps step counts exact in float64 schedules and int64 tensors)
    iters: int = opt(5000, "training steps", minimum=1, maximum=10**8)
    # (2^24 rays of 64 samples are 10^9 samples a step, beyond any GPU's memory; more only fails allocating)
    num_rays: int = opt(4096, "rays per step (--cuda_ray: sets the sample budget num_rays x num_steps)", minimum=1,
                        maximum=2**24)
    # (Adam's first step is 10 x the learning rate, in float32: far above any useful rate, far below overflow)
    lr: float = opt(1e-2, "base learning rate (Adam; warm-up, then cosine decay)", minimum=0.0)
    warmup: int = opt(500, "learning-rate warm-up steps", minimum=0)
    lr_final_ratio: float = opt(0.05, "learning rate at the end, as a fraction of --lr", minimum=0.0)
    variance_lr_ratio: float = opt(0.1, "learning rate of the NeuS variance, as a fraction of --lr", minimum=0.0)
    weight_decay: float = opt(1e-6, "Adam weight decay of the MLPs (the hash grid has none)", minimum=0.0)
    fp16: bool = opt(False, "mixed precision (autocast + grad scaling) on GPU")
    seed: int = opt(0, "seeds every random number generator", minimum=0, maximum=2**32 - 1)  # NumPy's range
    rgb_weight: float = opt(10.0, "weight of the Huber colour loss", minimum=0.0)
    huber_delta: float = opt(0.1, "Huber loss delta (about L1 above it)", minimum=0.0, exclusive=True)
    lambda_eikonal: float = opt(0.1, "weight of the Eikonal loss", minimum=0.0)
    lambda_mask: float = opt(0.1, "weight of the mask BCE loss (when masks exist)", minimum=0.0)
    lambda_smoothness: float = opt(0.0, "weight of the normal smoothness loss: the surface's normals should "
                                        "change little over --smoothness_eps (flattens hash-grid bumps)",
                                   minimum=0.0)
    smoothness_eps: float = opt(0.005, "jitter of the normal smoothness loss (normalised units: the sphere's "
                                       "radius is 1)", minimum=0.0)
    error_sampling: float = opt(0.0, "share of each step's samples spent on rays drawn in the image tiles whose "
                                     "colour error is highest (a running error per 16x16-pixel tile); the rest on "
                                     "uniform rays (0: all)", minimum=0.0)
    cuda_graph: bool = opt(True, "replay each training step as a CUDA graph on GPU (--no_cuda_graph: launch "
                                 "every kernel from Python)")
    ckpt_every: int = opt(1000, "steps between checkpoints (0: only at the end)", minimum=0)
    ckpt_keep: int = opt(2, "checkpoints kept", minimum=1)
    eval_every: int = opt(2500, "steps between validation renders, at most half of --iters so that every run writes "
                                "one (0: never)", minimum=0)
    check_every: int = opt(10, "steps between looks at the divergence counter (the only wait for the GPU)",
                           minimum=1)
    bad_steps: int = opt(10, "non-finite steps in a row that count as divergence", minimum=1)
    max_recoveries: int = opt(2, "reloads of the last checkpoint after divergence before giving up", minimum=0)
    recovery_lr_factor: float = opt(0.5, "learning-rate factor applied at each recovery", minimum=0.0)


@dataclass(frozen=True)
class ExportConfig:
    mc_resolution: int = opt(512, "marching-cubes grid resolution", minimum=2, maximum=MAX_MC_RESOLUTION)
    eval_downscale: int = opt(2, "validation renders downscaled by this factor", minimum=1)
    eval_chunk: int = opt(16384, "rays per chunk when rendering images", minimum=1)
    mesh_format: str = opt("ply", "comma-separated formats of WORKSPACE/meshes/mesh.*: ply, obj, glb (OBJ and GLB "
                                  "carry the texture with --texture, else vertex colours)")
    mesh_faces: int = opt(0, "decimate the mesh to about this many faces (quadric error; 0: keep every face)",
                          minimum=0)
    mesh_clean: float = opt(0.0, "drop connected pieces smaller than this fraction of the largest piece's area "
                                 "(floaters; 1: keep only the largest)", minimum=0.0)
    unseen: str = opt("keep", "the surface no training camera sees: 'keep' the field's guess, or 'membrane': moved "
                              "onto the smooth membrane that the seen surface's rim spans (a hidden flat base comes "
                              "out flat, a round underside too: better on the bunny, worse on spot, BENCHMARKS.md; "
                              "0.23 s more at 512^3 on an H100)", choices=("keep", "membrane"))
    texture: int = opt(0, "bake the colours into a TEXTURE x TEXTURE image for OBJ and GLB (0: vertex colours "
                          "only; 2048 suits a mesh decimated to ~200k faces)", minimum=0)
    video_frames: int = opt(120, "frames of the orbit video that --test writes to results/orbit.mp4 (0: none)",
                            minimum=0, maximum=10000)
    video_downscale: int = opt(2, "orbit video frames downscaled by this factor from the training resolution",
                               minimum=1)


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    field: FieldConfig = FieldConfig()
    sampler: SamplerConfig = SamplerConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()


STAGES = {f.name: f.type for f in dataclasses.fields(Config)}
# What a checkpoint fixes: on resume and --test these come from it, and a flag that differs is refused.
# Training settings may change on resume (e.g. more --iters), not on --test; export settings always may.
MODEL_STAGES = ("field", "sampler")


def _stage_fields():
    """(stage name, dataclass field) for every setting, in declaration order."""
    return [(stage, f) for stage, cls in STAGES.items() for f in dataclasses.fields(cls)]


def device_preset(config: Config, device: str) -> Config:
    """The defaults for `device`: a GPU gets `config` as it is, a CPU a lean variant that trains a small scene
    in minutes (fewer and coarser hash levels, fewer rays and samples, a coarser marching-cubes grid)."""
    if device.startswith("cuda"):
        return config
    return override(config, {
        "iters": 1000, "num_rays": 512, "num_steps": 32, "upsample_steps": 32, "num_levels": 8,
        "log2_hashmap_size": 16, "desired_resolution": 256, "levels_start": 2, "mc_resolution": 256,
        "eval_chunk": 4096, "eval_downscale": 4, "video_frames": 24, "video_downscale": 4,
        "bg_samples": 32, "lambda_smoothness": 0.1, "error_sampling": 0.5,
    })


def apply_preset(config: Config, name: Optional[str]) -> Config:
    """`config` (already resolved for the device) with the named preset's changes; None: unchanged."""
    if name is None:
        return config
    if name not in PRESETS:
        raise ConfigError(f"--preset: must be one of {', '.join(PRESETS)}, got {name!r}")
    t = config.train
    steps = max(1, round(t.iters * PRESETS[name]["steps"]))
    return override(config, {"preset": name, "iters": steps, "warmup": round(t.warmup * steps / t.iters),
                             **PRESETS[name]["settings"]})


def override(config: Config, values: dict) -> Config:
    """`config` with settings replaced by name (names are unique across stages)."""
    stage_of = {f.name: stage for stage, f in _stage_fields()}
    changes = {}
    for name, value in values.items():
        if name not in stage_of:
            raise ConfigError(f"--{name}: unknown setting")
        changes.setdefault(stage_of[name], {})[name] = value
    return dataclasses.replace(config, **{
        stage: dataclasses.replace(getattr(config, stage), **fields) for stage, fields in changes.items()})


def flat(config: Config) -> dict:
    """{setting name: value} over every stage."""
    return {f.name: getattr(getattr(config, stage), f.name) for stage, f in _stage_fields()}


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def from_dict(values: dict) -> Config:
    """Inverse of `to_dict`; settings the saving version did not have keep today's defaults, except those that
    would change the saved model's shape, which keep the value the saving version used."""
    field = values.get("field", {})
    if "sh_degree" in field and "bg_sh_degree" not in field:  # older versions: the background used sh_degree
        values = {**values, "field": {**field, "bg_sh_degree": field["sh_degree"]}}
    if "bg_levels_until" not in field:  # older versions: every background level from the start
        values = {**values, "field": {**values.get("field", {}), "bg_levels_until": 0.0}}
    sampler = values.get("sampler", {})
    if "bg_from_entry" not in sampler:  # older versions: the background began where the ray leaves the sphere
        values = {**values, "sampler": {**sampler, "bg_from_entry": False}}
    known = {stage: {f.name for f in dataclasses.fields(cls)} for stage, cls in STAGES.items()}
    return Config(**{stage: STAGES[stage](**{k: v for k, v in values.get(stage, {}).items() if k in known[stage]})
                     for stage in STAGES})


def validate(config: Config) -> Config:
    """Range and choice checks of every setting, and the few that relate two settings; returns `config`."""
    for stage, f in _stage_fields():
        value, meta = getattr(getattr(config, stage), f.name), f.metadata
        if value is None:
            continue
        kinds = setting_types(f)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(f"--{f.name}: must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise ConfigError(f"--{f.name}: must be one of {', '.join(meta['choices'])}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(f"--{f.name}: must be a finite number, got {value}")
            low, high, exclusive = meta["minimum"], meta["maximum"], meta["exclusive"]
            if low is not None and (value <= low if exclusive else value < low):
                raise ConfigError(f"--{f.name}: must be {'>' if exclusive else '>='} {low}, got {value}")
            if high is not None and (value >= high if exclusive else value > high):
                raise ConfigError(f"--{f.name}: must be {'<' if exclusive else '<='} {high}, got {value}")
            if (stage != "data" and isinstance(value, float) and value  # (world units: region_of_interest's)
                    and not FLOAT_RANGE[0] <= abs(value) <= FLOAT_RANGE[1]):
                raise ConfigError(f"--{f.name}: must be 0 or of magnitude {FLOAT_RANGE[0]:g} to {FLOAT_RANGE[1]:g}, "
                                  f"got {value}")
    region_of_interest(config.data)
    e = config.export
    formats = [f.strip().lower() for f in e.mesh_format.split(",")]
    if not all(f in MESH_FORMATS for f in formats):
        raise ConfigError(f"--mesh_format: comma-separated formats among {', '.join(MESH_FORMATS)}, got "
                          f"{e.mesh_format!r}")
    if 0 < e.mesh_faces < 4:
        raise ConfigError(f"--mesh_faces: 0 (no decimation) or at least 4, got {e.mesh_faces}")
    if e.mesh_clean > 1:
        raise ConfigError(f"--mesh_clean: a fraction in [0, 1], got {e.mesh_clean}")
    if e.texture and not 64 <= e.texture <= 8192:
        raise ConfigError(f"--texture: 0 (vertex colours) or a size from 64 to 8192, got {e.texture}")
    if config.train.error_sampling > 1:
        raise ConfigError(f"--error_sampling: a share in [0, 1], got {config.train.error_sampling}")
    s = config.sampler
    if s.upsample_steps % s.upsample_per_round:
        raise ConfigError(f"--upsample_steps: must be a multiple of {s.upsample_per_round} (rounds of "
                          f"{s.upsample_per_round}), got {s.upsample_steps}")
    if s.grid_resolution**3 % 8:
        raise ConfigError(f"--grid_resolution: its cube must be a multiple of 8 (bitfield bytes), got "
                          f"{s.grid_resolution}")
    if config.field.desired_resolution < config.field.base_resolution:
        raise ConfigError(f"--desired_resolution: must be >= --base_resolution ({config.field.base_resolution}), "
                          f"got {config.field.desired_resolution}")
    return config


def setting_types(f) -> tuple:
    """The types a setting's value may have (None aside): its annotation's, an int also where a float is."""
    kinds = tuple(t for t in (f.type, *typing.get_args(f.type)) if t is not type(None))
    return kinds + (int,) if float in kinds else kinds


def region_of_interest(data: DataConfig):
    """(centre [3] floats, radius) from --center and --radius, or None when neither is given."""
    if (data.center is None) != (data.radius is None):
        raise ConfigError("--center: give both --center x,y,z and --radius r (world units), or neither")
    if data.center is None:
        return None
    try:
        centre = [float(v) for v in data.center.split(",")]
    except ValueError:
        centre = []
    if len(centre) != 3:
        raise ConfigError(f"--center: expected three numbers x,y,z, got {data.center!r}")
    from .camera_geometry import check_sphere  # the bound the scene formats' regions of interest share
    from .input_checks import DatasetError

    try:
        check_sphere(centre, data.radius)
    except DatasetError as e:
        raise ConfigError(str(e)) from None
    return centre, data.radius


# ----------------------------------------------------------------------------------------------------------
# The command line


def add_arguments(parser: argparse.ArgumentParser):
    """One flag per setting, grouped by stage. Every default is None (argparse.SUPPRESS): a flag the user did
    not give stays absent, so that the device preset and the checkpoint can fill it (`explicit_settings`)."""
    for stage, cls in STAGES.items():
        group = parser.add_argument_group(stage)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if not meta["cli"]:
                continue
            text = meta["help"].replace("%", "%%")  # argparse %-formats help strings
            if f.type is bool:
                flag = f"--no_{f.name}" if f.default else f"--{f.name}"
                group.add_argument(flag, dest=f.name, action="store_const", const=not f.default,
                                   default=argparse.SUPPRESS, help=text)
                continue
            kind = next((t for t in (f.type, *typing.get_args(f.type)) if t in (int, float)), str)  # Optional too
            group.add_argument(f"--{f.name}", type=kind, default=argparse.SUPPRESS, choices=meta["choices"],
                               help=f"{text} (default {f.default})" if f.default is not None else text)


def join_dashed_values(parser: argparse.ArgumentParser, argv: list) -> list:
    """argv with `--center -28.5,-13,641` written as `--center=-28.5,-13,641`: argparse takes a value that starts
    with '-' and is not a plain number for a flag of its own ("expected one argument")."""
    takes_value = {s for a in parser._actions if a.nargs is None for s in a.option_strings}
    out = []
    for token in argv:
        if out and out[-1] in takes_value and token.startswith("-") and token not in parser._option_string_actions:
            token = f"{out.pop()}={token}"
        out.append(token)
    return out


def explicit_settings(args: argparse.Namespace) -> dict:
    """The settings given on the command line, by name."""
    names = {f.name for _, f in _stage_fields()}
    return {k: v for k, v in vars(args).items() if k in names}


def resolve(explicit: dict, device: str, data_path: Optional[str]) -> Config:
    """A new run's config: defaults, then the device preset, then the flags."""
    config = apply_preset(device_preset(Config(), device), explicit.get("preset"))
    config = override(config, explicit)
    return validate(override(config, {"path": data_path}))


def restore(saved: dict, explicit: dict, data_path: Optional[str], testing: bool) -> Config:
    """The config of a run that continues from a checkpoint (`saved` = `to_dict` of its config): the saved
    settings, with the flags that may change applied. A flag that would change the checkpoint's model (or, for
    --test, its training) raises ConfigError with one line naming it."""
    config = from_dict(saved)
    fixed = MODEL_STAGES + (("train", "data") if testing else ("data",))
    stage_of = {f.name: stage for stage, f in _stage_fields()}
    for name, value in explicit.items():
        current = getattr(getattr(config, stage_of[name]), name)
        if (stage_of[name] in fixed or name == "preset") and name != "downscale" and value != current:
            raise ConfigError(f"--{name}: the checkpoint was trained with {current!r}; "
                              f"{'--test' if testing else 'resuming'} uses the checkpoint's setting (drop the flag, "
                              f"or train in a new --workspace)")
    if data_path is not None:
        explicit = {**explicit, "path": data_path}
    return validate(override(config, explicit))
