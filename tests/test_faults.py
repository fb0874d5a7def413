"""Faults on CPU: a run killed at random moments (kill -9, also inside a checkpoint write) or stopped with
Ctrl-C resumes and ends with exactly the weights of an uninterrupted run; a broken newest checkpoint is skipped,
and a broken only one (or one whose contents do not fit) is one error line; a resume on other views is refused;
weights that blow up in the last steps are caught; an empty surface, or one no camera sees, is an error, not an
empty mesh; a region of interest no camera sees is refused before training."""
import json
import os
import shutil
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import main_sdf
from nerf.checkpoint import CheckpointWriter, list_checkpoints
from train_helpers import TINY_MODEL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--iters", "40", "--ckpt_every", "4", "--mc_resolution", "32", "--device", "cpu", "--quiet", *TINY_MODEL]


def command(root, workspace, *extra):
    return [sys.executable, os.path.join(REPO, "main_sdf.py"), root, "--workspace", workspace, *FLAGS, *extra]


def final_weights(workspace):
    path = list_checkpoints(os.path.join(workspace, "checkpoints"))[-1]
    state = torch.load(path, weights_only=False)
    assert state["step"] == 40
    return state["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def reference(small_scene, tmp_path_factory):
    """The uninterrupted run's final weights."""
    workspace = str(tmp_path_factory.mktemp("reference"))
    subprocess.run(command(small_scene[0], workspace), check=True, capture_output=True)
    return final_weights(workspace)


def wait_for_checkpoint(process, workspace, timeout=60):
    folder = os.path.join(workspace, "checkpoints")
    deadline = time.time() + timeout
    while not list_checkpoints(folder) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def test_killed_at_random_moments_resumes_to_the_uninterrupted_result(small_scene, reference, tmp_path):
    workspace = str(tmp_path / "w")
    rng = random.Random(0)
    kills = 0
    for attempt in range(8):
        process = subprocess.Popen(command(small_scene[0], workspace), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        if attempt < 3:  # kill -9 somewhere in the training (checkpoints are written every 4 steps)
            wait_for_checkpoint(process, workspace)
            time.sleep(rng.uniform(0.0, 0.6))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
        out, err = process.communicate(timeout=120)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, err.decode()
    assert process.returncode == 0 and kills >= 1
    # Whatever a kill left behind is never taken for a checkpoint, and never breaks the resume.
    assert_same_weights(final_weights(workspace), reference)


def test_ctrl_c_saves_the_last_completed_step_and_resumes_exactly(small_scene, reference, tmp_path):
    workspace = str(tmp_path / "w")
    process = subprocess.Popen(command(small_scene[0], workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_checkpoint(process, workspace)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    lines = err.decode().strip().splitlines()
    assert process.returncode == 130 and len(lines) == 1, lines
    assert lines[0].startswith("interrupted at step ") and lines[0].endswith("run the same command to resume")
    step = int(lines[0].split()[3].rstrip(":"))
    assert os.path.basename(list_checkpoints(os.path.join(workspace, "checkpoints"))[-1]) == f"ckpt_{step:07d}.pth"
    subprocess.run(command(small_scene[0], workspace), check=True, capture_output=True)
    assert_same_weights(final_weights(workspace), reference)


def test_a_broken_newest_checkpoint_is_skipped_with_a_warning(small_scene, tmp_path, capsys):
    workspace = str(tmp_path / "w")
    args = [small_scene[0], "--workspace", workspace, *FLAGS]
    assert main_sdf.main(args + ["--iters", "8"]) == 0
    newest = list_checkpoints(os.path.join(workspace, "checkpoints"))[-1]
    with open(newest, "r+b") as f:  # truncated, as a full disk or a dying machine would leave it
        f.truncate(100)
    capsys.readouterr()
    test = ["--workspace", workspace, "--test", "--device", "cpu", "--quiet", "--video_frames", "0"]
    assert main_sdf.main(test) == 0  # no video: on a machine without imageio-ffmpeg it would add a warning line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {newest}: unreadable checkpoint"), err


def test_weights_that_blow_up_in_the_last_steps_are_caught(small_scene, tmp_path, capsys):
    """A learning rate so large that the field breaks within the last few steps, before the every-10-steps
    look at the divergence counter: the end-of-training check catches it; no checkpoint or mesh is written."""
    workspace = tmp_path / "w"
    args = [small_scene[0], "--workspace", str(workspace), *FLAGS, "--iters", "6", "--ckpt_every", "0",
            "--lr", "1e15", "--warmup", "0"]
    assert main_sdf.main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged at step"), err
    assert list_checkpoints(str(workspace / "checkpoints")) == []
    assert not (workspace / "meshes").exists()


def test_an_empty_surface_is_an_error(small_scene, tmp_path, capsys):
    """A field with no zero crossing in the sphere (here: the initial sphere shrunk to a speck between the
    marching-cubes samples, and a learning rate of 0) gives no mesh and exit 3, not an empty mesh file."""
    workspace = tmp_path / "w"
    args = [small_scene[0], "--workspace", str(workspace), *FLAGS, "--iters", "1", "--init_radius", "0.001",
            "--lr", "0"]
    assert main_sdf.main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the reconstructed surface is empty" in err[0], err
    assert not (workspace / "meshes").exists()


def test_a_surface_no_camera_sees_is_an_error(small_scene, tmp_path, capsys, monkeypatch):
    """A surface whose every part the export drops as unseen (here: a region of interest far from the cameras,
    past the load-time check, which is switched off) gives no mesh and exit 3, not a failed write of no faces."""
    import nerf.run

    monkeypatch.setattr(nerf.run, "check_region_seen", lambda scene, flags_roi: None)
    workspace = tmp_path / "w"
    args = [small_scene[0], "--workspace", str(workspace), *FLAGS, "--iters", "1", "--center", "1e6,1e6,1e6",
            "--radius", "1"]
    assert main_sdf.main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {workspace}: no training camera sees any part of the reconstructed surface (no mesh "
                   "written); check the region of interest and the cameras"], err
    assert not (workspace / "meshes").exists()


def test_an_aabb_no_camera_sees_is_refused(small_scene, tmp_path, capsys):
    """transforms.json's aabb far from every camera: one line naming the file, exit 2, nothing written."""
    scene = tmp_path / "scene"
    scene.mkdir()
    for sub in ("image", "mask"):
        os.symlink(os.path.join(small_scene[0], sub), scene / sub)
    meta = json.load(open(os.path.join(small_scene[0], "transforms.json")))
    (scene / "transforms.json").write_text(json.dumps({**meta, "aabb": [[1e6] * 3, [1e6 + 1] * 3]}))
    workspace = tmp_path / "w"
    assert main_sdf.main([str(scene), "--workspace", str(workspace), *FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {scene / 'transforms.json'}: no training camera sees the region of interest (the sphere "
                   "around its aabb)"], err
    assert not workspace.exists()


def snapshot(folder):
    """{relative path: (is a folder, size, modification time)} of everything under `folder`."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            stat = os.lstat(path)
            found[os.path.relpath(path, folder)] = (os.path.isdir(path), stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def trained(small_scene, tmp_path_factory):
    """A workspace trained for 2 steps: its only checkpoint is ckpt_0000002.pth."""
    workspace = str(tmp_path_factory.mktemp("trained") / "w")
    assert main_sdf.main([small_scene[0], "--workspace", workspace, *FLAGS, "--iters", "2"]) == 0
    return workspace


def first_weight(state):
    return next(iter(state["model"]))


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.pop("optimizer"), "checkpoint has no 'optimizer'"),
    (lambda s: s.pop("rng"), "checkpoint has no 'rng'"),
    (lambda s: s.update(model=[1]), "checkpoint's 'model' is of type list"),
    (lambda s: s.update(config=None), "checkpoint's 'config' is of type NoneType"),
    (lambda s: s["config"].update(train=[1]), "checkpoint's config has a list for its 'train'"),
    (lambda s: s["config"]["train"].update(iters="many"),
     "checkpoint's config is not valid (--iters: must be int, got 'many')"),
    (lambda s: s.update(step="x"), "checkpoint's 'step' is of type str"),
    (lambda s: s.update(step=-1), "checkpoint's step is -1"),
    (lambda s: s.update(views=3), "checkpoint's 'views' is of type int"),
    (lambda s: s["config"]["data"].update(path=None), "checkpoint's config has no scene folder"),
    (lambda s: s["model"].update({first_weight(s): torch.zeros(3)}), "checkpoint's state does not load (RuntimeError"),
    (lambda s: s["model"].pop(first_weight(s)), "checkpoint's state does not load (RuntimeError"),
    (lambda s: s["rng"].update(numpy=5), "checkpoint's state does not load (TypeError"),
    (lambda s: next(iter(s["optimizer"]["state"].values()))["exp_avg"].fill_(float("nan")),
     "checkpoint's 'optimizer' holds non-finite values"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr=float("inf")),
     "checkpoint's 'optimizer' holds non-finite values"),
    (lambda s: s.update(lr_scale=float("nan")), "checkpoint's lr_scale is nan"),
    (lambda s: s.update(lr_scale=-1.0), "checkpoint's lr_scale is -1.0"),
    (lambda s: s.update(recoveries=-5), "checkpoint's recoveries is -5"),
])
@pytest.mark.parametrize("how", ["test", "resume"])
def test_a_checkpoint_whose_contents_do_not_fit_is_one_error_line(small_scene, trained, tmp_path, capsys, change,
                                                                  problem, how):
    workspace = str(tmp_path / "w")
    shutil.copytree(trained, workspace)
    path = list_checkpoints(os.path.join(workspace, "checkpoints"))[-1]
    state = torch.load(path, weights_only=False)
    change(state)
    torch.save(state, path)
    before = snapshot(workspace)
    args = (["--workspace", workspace, "--test"] if how == "test" else [small_scene[0], "--workspace", workspace])
    assert main_sdf.main(args + ["--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: {problem}"), err
    assert snapshot(workspace) == before


@pytest.mark.parametrize("kind, problem", [
    ("junk", "unreadable checkpoint (damaged, or not plain data)"),
    ("symlink_loop", "unreadable checkpoint (OSError)"),
    ("folder", "a folder where a checkpoint file belongs"),
])
@pytest.mark.parametrize("how", ["test", "resume", "resume_without_data"])
def test_a_broken_only_checkpoint_is_one_error_line(small_scene, tmp_path, capsys, kind, problem, how):
    """No warning before it (nothing older to fall back on), and nothing written."""
    folder = tmp_path / "w" / "checkpoints"
    folder.mkdir(parents=True)
    path = folder / "ckpt_0000001.pth"
    if kind == "junk":
        path.write_text("junk")
    elif kind == "symlink_loop":
        os.symlink(path.name, path)
    else:
        path.mkdir()
    before = snapshot(tmp_path)
    args = {"test": ["--test"], "resume": [small_scene[0]], "resume_without_data": []}[how]
    assert main_sdf.main(args + ["--workspace", str(tmp_path / "w"), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: {problem}"], err
    assert snapshot(tmp_path) == before


def test_a_run_from_scratch_or_an_earlier_checkpoint_replaces_the_later_ones(small_scene, tmp_path):
    """Pruning goes by step: a new run's early checkpoints must not be deleted in favour of an old run's later
    ones, which `latest` would then resume."""
    workspace = str(tmp_path / "w")
    folder = os.path.join(workspace, "checkpoints")
    run = [small_scene[0], "--workspace", workspace, *FLAGS]
    assert main_sdf.main(run + ["--iters", "8"]) == 0
    assert [os.path.basename(p) for p in list_checkpoints(folder)] == ["ckpt_0000004.pth", "ckpt_0000008.pth"]
    assert main_sdf.main(run + ["--iters", "6", "--ckpt_every", "2", "--ckpt", "scratch", "--seed", "1"]) == 0
    paths = list_checkpoints(folder)
    assert [os.path.basename(p) for p in paths] == ["ckpt_0000004.pth", "ckpt_0000006.pth"]
    assert torch.load(paths[-1], weights_only=False)["config"]["train"]["seed"] == 1


@pytest.mark.parametrize("stage, where", [("prepare", "loading the scene and building the model"),
                                          ("train_and_export", "training or exporting")])
def test_memory_that_runs_out_is_one_line(small_scene, tmp_path, capsys, monkeypatch, stage, where):
    import nerf.run

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(nerf.run, stage, out_of_memory)
    workspace = str(tmp_path / "w")
    assert main_sdf.main([small_scene[0], "--workspace", workspace, *FLAGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {workspace}: out of memory {where} (lower --num_rays, --mc_resolution, --texture, the "
                   "model's size or the images' with --downscale)"], err


class WritesAFile:
    """Unpickling this runs open(path, "w"): what a crafted checkpoint could do if loaded with pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("how", ["test", "resume"])
def test_a_crafted_checkpoint_runs_no_code_when_read(small_scene, trained, tmp_path, capsys, how):
    workspace = str(tmp_path / "w")
    shutil.copytree(trained, workspace)
    path = list_checkpoints(os.path.join(workspace, "checkpoints"))[-1]
    state = torch.load(path, weights_only=False)
    state["payload"] = WritesAFile(str(tmp_path / "written"))
    torch.save(state, path)
    args = (["--workspace", workspace, "--test"] if how == "test" else [small_scene[0], "--workspace", workspace])
    assert main_sdf.main(args + ["--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: unreadable checkpoint (damaged, or not plain data)"], err
    assert not (tmp_path / "written").exists()


def test_an_old_checkpoint_without_the_views_still_loads(trained, tmp_path):
    from nerf.checkpoint import load_checkpoint

    path = str(tmp_path / "ckpt_0000002.pth")
    state = torch.load(list_checkpoints(os.path.join(trained, "checkpoints"))[-1], weights_only=False)
    assert state.pop("views") == "14 views of 96x72"  # (16 views, every 8th held out)
    torch.save(state, path)
    assert load_checkpoint(path, "cpu")["step"] == 2


def test_resuming_on_other_views_is_refused(small_scene, trained, tmp_path, capsys):
    """The error map holds a running error per tile of each training view: a resume on views of another count
    or size is refused (here: the same scene at half the size), and nothing written."""
    workspace = str(tmp_path / "w")
    shutil.copytree(trained, workspace)
    before = snapshot(workspace)
    assert main_sdf.main([small_scene[0], "--workspace", workspace, *FLAGS, "--downscale", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {small_scene[0]}: the checkpoint was trained on 14 views of 96x72, this scene has 14 "
                   "views of 48x36"], err
    assert snapshot(workspace) == before


def test_a_failed_sync_gives_one_line_and_leaves_nothing_corrupt(small_scene, tmp_path, capsys, monkeypatch):
    """The disk fills up as the second checkpoint is synced (fsync reports ENOSPC, as delayed allocation or a
    network file system does): exit 1 with one line naming the file, the partial file removed, the previous
    checkpoint intact and resumable."""
    import errno

    import nerf.files

    workspace = tmp_path / "w"
    args = [small_scene[0], "--workspace", str(workspace), *FLAGS, "--iters", "8"]
    real_fsync = nerf.files.os.fsync
    syncs = []

    def failing_fsync(fd):
        syncs.append(os.readlink(f"/proc/self/fd/{fd}"))
        if sum(".tmp-" in p and "-ckpt_" in p for p in syncs) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(nerf.files.os, "fsync", failing_fsync)
    assert main_sdf.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {workspace / 'checkpoints' / 'ckpt_0000008.pth'}: cannot write (No space left on device)"]
    folder = workspace / "checkpoints"
    assert sorted(os.listdir(folder)) == ["ckpt_0000004.pth"]  # no temporary file left
    monkeypatch.setattr(nerf.files.os, "fsync", real_fsync)
    assert main_sdf.main(args) == 0  # resumes from step 4


def test_a_background_checkpoint_holds_the_state_of_its_step_and_reports_a_failed_write(tmp_path, monkeypatch):
    """Training goes on changing the weights while the thread writes: the file holds them as they were; a write
    that fails on the thread is raised by the next save, naming the file, and leaves no temporary file."""
    import errno

    import nerf.files

    weights = torch.arange(1000.0)
    writer = CheckpointWriter(str(tmp_path), keep=2)
    path = writer.save({"step": 1, "model": {"w": weights}}, background=True)
    weights += 1  # the next steps, in place, as the optimizer does
    writer.wait()
    assert torch.equal(torch.load(path, weights_only=False)["model"]["w"], torch.arange(1000.0))

    def failing_fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nerf.files.os, "fsync", failing_fsync)
    writer.save({"step": 2, "model": {"w": weights}}, background=True)
    writer.thread.join()  # (the write has failed; undo the fault only now)
    monkeypatch.undo()
    with pytest.raises(OSError) as failure:
        writer.save({"step": 3, "model": {"w": weights}})
    assert failure.value.errno == errno.ENOSPC and failure.value.filename.endswith("ckpt_0000002.pth")
    assert sorted(os.listdir(tmp_path)) == ["ckpt_0000001.pth"]
    writer.save({"step": 3, "model": {"w": weights}})  # the error was raised once; the writer goes on
    assert sorted(os.listdir(tmp_path)) == ["ckpt_0000001.pth", "ckpt_0000003.pth"]


@pytest.fixture
def small_disk(tmp_path):
    """A 640 KiB file system (tmpfs): room for the log, the tensorboard file and one tiny checkpoint."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_gives_one_line_and_the_run_resumes(small_scene, tmp_path, small_disk):
    """A real full disk, in a separate process (so tensorboardX's writer thread and exit handler run too):
    exit 1 and one line, no traceback from anything; nothing half-written; the checkpoint that fitted loads,
    and the run resumes from it elsewhere and finishes."""
    workspace = small_disk / "w"
    done = subprocess.run(command(small_scene[0], str(workspace)), capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {workspace}") and "No space left on device" in lines[0], lines
    files = [os.path.join(d, f) for d, _, names in os.walk(workspace) for f in names]
    assert not [f for f in files if os.path.basename(f).startswith(".tmp-")], files
    checkpoints = list_checkpoints(str(workspace / "checkpoints"))
    assert checkpoints, files
    assert torch.load(checkpoints[-1], weights_only=False)["step"] % 4 == 0
    moved = tmp_path / "moved"
    subprocess.run(["cp", "-r", str(workspace), str(moved)], check=True)
    done = subprocess.run(command(small_scene[0], str(moved)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "continuing from step" in open(moved / "log.txt").read(), done.stderr


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_ctrl_c_during_start_up_is_one_line_and_writes_nothing(small_scene, tmp_path, delay):
    workspace = tmp_path / "w"
    process = subprocess.Popen(command(small_scene[0], str(workspace)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    time.sleep(delay)  # importing torch and friends
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    lines = err.decode().strip().splitlines()
    if process.returncode == 0:
        pytest.fail(f"the run went on after Ctrl-C: {lines}")
    assert process.returncode == 130 and len(lines) == 1 and lines[0].startswith("interrupted"), lines
    if "start-up" in lines[0]:
        assert not workspace.exists()
