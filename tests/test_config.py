"""The config: one default per setting, the CPU preset, range checks, the command line generated from it, and
what a checkpoint's saved config allows on resume and --test."""
import argparse
import dataclasses
import os
import re

import pytest
import torch

from nerf import config as cfg


def parse(argv):
    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser)
    return cfg.explicit_settings(parser.parse_args(argv))


def test_every_setting_has_one_flag_and_a_help_text():
    names = [f.name for _, f in cfg._stage_fields()]
    assert len(names) == len(set(names))  # unique across stages: flags and `override` address them by name
    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser)
    flags = {a.dest: a for a in parser._actions}
    for stage, f in cfg._stage_fields():
        assert f.metadata["help"], f.name
        assert (f.name in flags) == f.metadata["cli"], f.name


def test_flags_given_are_the_only_explicit_settings():
    explicit = parse(["--iters", "7", "--cuda_ray", "--no_cuda_graph", "--lr", "0.5", "--background", "black"])
    assert explicit == {"iters": 7, "cuda_ray": True, "cuda_graph": False, "lr": 0.5, "background": "black"}
    assert parse([]) == {}


def test_a_value_that_starts_with_a_minus_is_a_value():
    """A centre below the world's origin (`--center -28.5,-13,641`) is the flag's value, not an unknown flag; a
    flag given without its value is still an error."""
    import main_sdf

    args = main_sdf.parse_args(["scene", "--workspace", "w", "--center", "-28.5,-13,641", "--radius", "300"])
    assert (args.center, args.radius, args.workspace) == ("-28.5,-13,641", 300.0, "w")
    assert cfg.region_of_interest(cfg.DataConfig(center=args.center, radius=args.radius)) == ([-28.5, -13.0, 641.0],
                                                                                             300.0)
    with pytest.raises(main_sdf.UsageError, match="^--center: expected one argument$"):
        main_sdf.parse_args(["scene", "--workspace", "w", "--center", "--radius", "3"])


def test_help_lists_every_setting(capsys):
    """--help formats every flag's help (argparse %-formats them: a literal % must not break it)."""
    import main_sdf

    with pytest.raises(SystemExit) as exit_info:
        main_sdf.parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--preset {fast}" in out and "30 % of the steps" in out and "--mc_resolution" in out


def test_cpu_preset_is_lean_and_flags_win_over_it():
    gpu, cpu = cfg.resolve({}, "cuda", "scene"), cfg.resolve({}, "cpu", "scene")
    assert gpu == dataclasses.replace(cfg.Config(), data=cfg.DataConfig(path="scene"))
    assert (cpu.train.iters, cpu.train.num_rays, cpu.field.num_levels, cpu.export.mc_resolution) == (1000, 512, 8, 256)
    assert cfg.resolve({"num_levels": 3}, "cpu", "scene").field.num_levels == 3


def test_fast_preset_scales_the_device_schedule_and_flags_win_over_it():
    gpu, fast = cfg.resolve({}, "cuda", "scene"), cfg.resolve({"preset": "fast"}, "cuda", "scene")
    assert (fast.train.iters, fast.train.warmup, fast.train.eval_every) == (1500, 150, 0)
    assert (gpu.train.error_sampling, fast.train.error_sampling) == (0.0, 0.5)
    assert fast.field == gpu.field and fast.sampler == gpu.sampler  # the same model, trained shorter
    cpu_fast = cfg.resolve({"preset": "fast"}, "cpu", "scene")
    assert cpu_fast.train.iters == 300 and cpu_fast.field == cfg.resolve({}, "cpu", "scene").field
    assert cfg.resolve({"preset": "fast", "iters": 2000}, "cuda", "scene").train.iters == 2000
    assert cfg.resolve({"preset": "fast", "error_sampling": 0.0}, "cuda", "scene").train.error_sampling == 0.0
    with pytest.raises(cfg.ConfigError, match="--preset: the checkpoint was trained with None"):
        cfg.restore(cfg.to_dict(gpu), {"preset": "fast"}, None, testing=False)
    with pytest.raises(cfg.ConfigError, match="--preset: must be one of fast"):
        cfg.resolve({"preset": "slow"}, "cuda", "scene")


@pytest.mark.parametrize("flags, message", [
    ({"num_rays": 0}, "--num_rays: must be >= 1, got 0"),
    ({"iters": -5}, "--iters: must be >= 1, got -5"),
    ({"lr": float("nan")}, "--lr: must be a finite number"),
    ({"downscale": -1}, "--downscale: must be >= 0"),
    ({"upsample_steps": 20}, "--upsample_steps: must be a multiple of 16"),
    ({"grid_resolution": 3}, "--grid_resolution: its cube must be a multiple of 8"),
    ({"normals": "exact"}, "--normals: must be one of analytic, fd"),
    ({"desired_resolution": 8}, "--desired_resolution: must be >= --base_resolution"),
    ({"no_such_thing": 1}, "--no_such_thing: unknown setting"),
    ({"seed": -1}, "--seed: must be >= 0, got -1"),
    ({"seed": 2**32}, "--seed: must be <= 4294967295"),
    ({"mc_resolution": 99999999}, "--mc_resolution: must be <= 4096"),
    ({"sh_degree": 9}, "--sh_degree: must be <= 8, got 9"),
    ({"bg_sh_degree": 12}, "--bg_sh_degree: must be <= 8, got 12"),
    ({"num_levels": 100000}, "--num_levels: must be <= 32"),
    ({"log2_hashmap_size": 40}, "--log2_hashmap_size: must be <= 24"),
    ({"desired_resolution": 10**11}, "--desired_resolution: must be <= 1048576"),
    ({"hidden_dim": 10**8}, "--hidden_dim: must be <= 1024"),
    ({"feature_dim": 10**8}, "--feature_dim: must be <= 1024"),
    ({"lr": 1e300}, "--lr: must be 0 or of magnitude 1e-15 to 1e+15, got 1e+300"),
    ({"huber_delta": 1e-320}, "--huber_delta: must be 0 or of magnitude 1e-15 to 1e+15"),
    ({"variance_lr_ratio": 1e308}, "--variance_lr_ratio: must be 0 or of magnitude"),
    ({"num_layers": 10**8}, "--num_layers: must be <= 16"),
    ({"color_layers": 10**8}, "--color_layers: must be <= 16"),
    ({"num_steps": 10**9}, "--num_steps: must be <= 4096"),
    ({"iters": 10**18}, "--iters: must be <= 100000000"),
    ({"upsample_steps": 16 * 10**8}, "--upsample_steps: must be <= 4096"),
    ({"bg_samples": 10**9}, "--bg_samples: must be <= 4096"),
    ({"steps_per_diagonal": 10**12}, "--steps_per_diagonal: must be <= 65536"),
    ({"video_frames": 10**9}, "--video_frames: must be <= 10000"),
    ({"init_variance": 1e300}, "--init_variance: must be <= 1.0"),
    ({"huber_delta": 0.0}, "--huber_delta: must be > 0.0, got 0.0"),
    ({"fd_eps_start": 0.0}, "--fd_eps_start: must be > 0.0"),
    ({"fd_eps_end": 0.0}, "--fd_eps_end: must be > 0.0"),
    ({"init_radius": 0.0}, "--init_radius: must be > 0.0"),
    ({"init_radius": 1.0}, "--init_radius: must be < 1.0"),
    ({"iters": "many"}, "--iters: must be int, got 'many'"),  # (a saved config's value; flags are typed)
    ({"cuda_ray": 1}, "--cuda_ray: must be bool, got 1"),
    ({"lr": True}, "--lr: must be float or int, got True"),
])
def test_bad_settings_are_refused_naming_the_flag(flags, message):
    with pytest.raises(cfg.ConfigError, match=re.escape(message)):
        cfg.resolve(flags, "cpu", "scene")


def test_the_sh_degree_bound_is_the_encoders():
    from shencoder.torch_impl import MAX_DEGREE

    assert cfg.MAX_SH_DEGREE == MAX_DEGREE


def test_saved_config_round_trips_and_ignores_unknown_settings():
    config = cfg.resolve({"num_levels": 6, "cuda_ray": True}, "cpu", "scene")
    saved = cfg.to_dict(config)
    assert cfg.from_dict(saved) == config
    saved["field"]["a_setting_of_a_later_version"] = 1
    assert cfg.from_dict(saved) == config


def test_a_saved_config_from_before_a_model_setting_keeps_the_saved_models_shape():
    saved = cfg.to_dict(cfg.resolve({"sh_degree": 3}, "cpu", "scene"))
    del saved["field"]["bg_sh_degree"]  # as written before the background had its own degree
    assert cfg.from_dict(saved).field.bg_sh_degree == 3


def test_restore_takes_the_checkpoints_settings():
    saved = cfg.to_dict(cfg.resolve({"num_levels": 6, "hidden_dim": 32, "cuda_ray": True}, "cpu", "/data/a"))
    # --test with no flags: everything from the checkpoint, on whatever device (no preset applies).
    restored = cfg.restore(saved, {}, None, testing=True)
    assert restored == cfg.from_dict(saved)
    # DATA overrides the scene path; eval-only flags are allowed.
    restored = cfg.restore(saved, {"mc_resolution": 64, "eval_chunk": 99, "downscale": 2}, "/data/b", testing=True)
    assert (restored.data.path, restored.export.mc_resolution, restored.data.downscale) == ("/data/b", 64, 2)
    # The same value as the checkpoint's is not a change.
    assert cfg.restore(saved, {"num_levels": 6}, None, testing=True).field.num_levels == 6
    # Resuming may extend training; --test may not change it.
    assert cfg.restore(saved, {"iters": 9000}, None, testing=False).train.iters == 9000
    with pytest.raises(cfg.ConfigError, match="--iters: the checkpoint was trained with 1000; --test"):
        cfg.restore(saved, {"iters": 9000}, None, testing=True)


@pytest.mark.parametrize("testing", [True, False])
@pytest.mark.parametrize("flags", [{"num_levels": 16}, {"cuda_ray": False}, {"hidden_dim": 64}, {"holdout": 4}])
def test_restore_refuses_flags_that_change_the_model(flags, testing):
    saved = cfg.to_dict(cfg.resolve({"num_levels": 6, "hidden_dim": 32, "cuda_ray": True}, "cpu", "/data/a"))
    name = next(iter(flags))
    with pytest.raises(cfg.ConfigError, match=f"^--{name}: the checkpoint was trained with"):
        cfg.restore(saved, flags, None, testing=testing)


@pytest.mark.parametrize("flags, message", [
    (["--num_rays", "0"], "error: --num_rays: must be >= 1, got 0"),
    (["--upsample_steps", "20"], "error: --upsample_steps: must be a multiple of 16"),
    (["--device", "tpu9"], "error: --device: unknown device 'tpu9'"),
    (["--ckpt", "/no/such/ckpt.pth"], "error: /no/such/ckpt.pth: checkpoint not found"),
    (["--test"], "error: {ws}/checkpoints: no checkpoint to test; train first"),
    (["--viewer", "70000"], "error: --viewer: a port from 1 to 65535"),
    # viser would wait forever on an address not of this machine (TEST-NET-1), or a name that does not resolve
    (["--viewer", "18767", "--viewer_host", "192.0.2.1"], "error: --viewer_host: cannot listen on '192.0.2.1'"),
    (["--viewer", "18767", "--viewer_host", "no.such.host.invalid"],
     "error: --viewer_host: cannot listen on 'no.such.host.invalid'"),
    (["--center", "1e6,1e6,1e6", "--radius", "1"], "error: --center: no training camera sees the region of interest"),
    (["--seed", "-1"], "error: --seed: must be >= 0, got -1"),
    (["--huber_delta", "0"], "error: --huber_delta: must be > 0.0, got 0.0"),
    (["--mesh_format", "ply,stl"], "error: --mesh_format: comma-separated formats among ply, obj, glb"),
    (["--mesh_faces", "3"], "error: --mesh_faces: 0 (no decimation) or at least 4"),
    (["--texture", "32"], "error: --texture: 0 (vertex colours) or a size from 64 to 8192"),
    (["--mesh_clean", "1.5"], "error: --mesh_clean: a fraction in [0, 1]"),
    (["--error_sampling", "1.5"], "error: --error_sampling: a share in [0, 1]"),
    (["--error_sampling", "-0.1"], "error: --error_sampling: must be >= 0.0"),
    (["--background", "sky"], "error: --background: invalid choice: 'sky'"),
    (["--num_rays", "many"], "error: --num_rays: invalid int value: 'many'"),
    (["--no_such_flag"], "error: unrecognized arguments: --no_such_flag"),
])
def test_bad_flags_give_one_error_line_and_write_nothing(small_scene, tmp_path, capsys, flags, message):
    import main_sdf

    workspace = str(tmp_path / "ws")
    code = main_sdf.main([small_scene[0], "--workspace", workspace, "--device", "cpu"] + flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(message.format(ws=workspace)), err
    assert not (tmp_path / "ws").exists()


def tree(folder):
    """Every path under `folder` (relative), with whether it is a folder and a file's contents."""
    import os

    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder)
            if os.path.isdir(path) or os.path.islink(path):
                found[relative] = None
            else:
                with open(path, "rb") as f:
                    found[relative] = f.read()
    return found


@pytest.mark.parametrize("kind, message", [
    ("file", "{ws}: --workspace is not a folder"),
    ("under_a_file", "{ws}: --workspace cannot be created"),
    ("dangling_link", "{ws}: --workspace is a dangling symbolic link"),
    ("empty", "--workspace: empty path"),
    ("name_too_long", "{ws}: --workspace has a name of 300 bytes, the file system allows"),
    # What the run writes inside, of the wrong kind: refused at once, not once the run gets there
    ("checkpoints_a_file", "{ws}/checkpoints: not a folder (the run writes into it; move it away)"),
    ("meshes_a_file", "{ws}/meshes: not a folder"),
    ("run_a_file", "{ws}/run: not a folder"),
    ("results_a_link_to_nowhere", "{ws}/results: not a folder"),
    ("log_a_folder", "{ws}/log.txt: not a file (the run writes it; move it away)"),
    ("timings_a_folder", "{ws}/timings.json: not a file"),
    ("mesh_a_folder", "{ws}/meshes/mesh.ply: not a file"),
    ("metrics_a_folder", "{ws}/results/metrics.json: not a file"),
    ("checkpoint_a_folder", "{ws}/checkpoints/ckpt_0000001.pth: a folder where a checkpoint file belongs"),
])
def test_an_unusable_workspace_is_refused(small_scene, tmp_path, capsys, kind, message):
    import os

    import main_sdf

    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    inside = tmp_path / "ws"
    workspace = {"file": str(blocker), "under_a_file": str(blocker / "ws"), "empty": "",
                 "name_too_long": str(tmp_path / "new" / ("w" * 300) / "ws")}.get(kind, str(inside))
    if kind == "dangling_link":
        os.symlink(tmp_path / "nowhere", workspace)
    elif kind.endswith("_a_file"):
        inside.mkdir()
        (inside / kind[:-len("_a_file")]).write_text("")
    elif kind == "results_a_link_to_nowhere":
        inside.mkdir()
        os.symlink(tmp_path / "nowhere", inside / "results")
    elif kind.endswith("_a_folder"):
        name = {"log": "log.txt", "timings": "timings.json", "checkpoint": "checkpoints/ckpt_0000001.pth",
                "mesh": "meshes/mesh.ply", "metrics": "results/metrics.json"}
        (inside / name[kind[:-len("_a_folder")]]).mkdir(parents=True)
    before = tree(tmp_path)
    assert main_sdf.main([small_scene[0], "--workspace", workspace, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: " + message.format(ws=workspace)), err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("where", ["workspace", "parent"])
@pytest.mark.parametrize("how", ["read_only", "immutable"])
def test_a_workspace_that_cannot_be_written_is_refused(small_scene, tmp_path, capsys, how, where):
    """A read-only folder (chmod; root ignores it, so not as root) or an immutable one (chattr +i, which binds
    root too), as the workspace itself or as the folder it would be created in."""
    import os
    import subprocess

    import main_sdf

    locked = tmp_path / "locked"
    locked.mkdir()
    workspace = str(locked if where == "workspace" else locked / "ws")
    if how == "read_only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        locked.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a file system that supports it)")
    try:
        assert main_sdf.main([small_scene[0], "--workspace", workspace, "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {workspace}: --workspace is not writable"), err
        assert os.listdir(locked) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)


def test_training_needs_data_when_there_is_no_checkpoint(tmp_path, capsys):
    import main_sdf

    assert main_sdf.main(["--workspace", str(tmp_path / "ws"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: DATA: a scene folder is needed to train")


def test_a_downscale_larger_than_the_images_is_refused(small_scene, tmp_path, capsys):
    import main_sdf

    assert main_sdf.main([small_scene[0], "--workspace", str(tmp_path / "ws"), "--device", "cpu",
                          "--downscale", "1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --downscale: 1000 leaves no pixel of the 96x72 images"), err
    assert not (tmp_path / "ws").exists()


def test_auto_downscale_brings_large_photos_to_the_longest_side_and_the_checkpoint_keeps_the_factor(
        small_scene, tmp_path, monkeypatch):
    """--downscale 0 (the default): 96x72 photos with a longest side of 40 px load at 1/3 (32x24); the checkpoint
    holds the resolved 3, so that a resume loads the same views (an auto that resolved otherwise is refused)."""
    import main_sdf
    import nerf.run
    from nerf.checkpoint import list_checkpoints
    from nerf.provider import auto_downscale
    from train_helpers import TINY_MODEL

    assert [auto_downscale((h, w), 2000) for h, w in ((600, 800), (1200, 1600), (1080, 1920), (3024, 4032),
                                                      (2160, 3840), (2001, 10))] == [1, 1, 1, 3, 2, 2]
    monkeypatch.setattr(nerf.run, "AUTO_DOWNSCALE_SIDE", 40)
    workspace = str(tmp_path / "ws")
    flags = ["--workspace", workspace, "--device", "cpu", "--quiet", "--iters", "4", "--mc_resolution", "32",
             *TINY_MODEL]
    assert main_sdf.main([small_scene[0], *flags]) == 0
    state = torch.load(list_checkpoints(os.path.join(workspace, "checkpoints"))[-1], weights_only=False)
    assert state["config"]["data"]["downscale"] == 3
    assert state["views"].endswith("views of 32x24"), state["views"]
    assert main_sdf.main([*flags[:4], "--iters", "6"]) == 0  # resumes: same views
    monkeypatch.setattr(nerf.run, "AUTO_DOWNSCALE_SIDE", 2000)
    assert main_sdf.main([*flags[:4], "--iters", "8", "--downscale", "0"]) == 2  # now 96x72: not the views trained


def test_the_readme_lists_every_flag():
    """README's flag table is the documentation of the settings: one row per flag, none missing, none stale."""
    import dataclasses
    import re

    from nerf.config import STAGES

    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = set(re.findall(r"^\| `--(\w+)` \|", readme, flags=re.M))
    flags = {(f"no_{f.name}" if f.type is bool and f.default else f.name)
             for cls in STAGES.values() for f in dataclasses.fields(cls) if f.metadata["cli"]}
    assert listed == flags, (sorted(flags - listed), sorted(listed - flags))
