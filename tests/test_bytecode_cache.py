"""The bytecode cache of our own (nerf/bytecode_cache.py): used only for a module that lacks bytecode and that
Python will not write it for (a read-only folder, or -B / PYTHONDONTWRITEBYTECODE); then its bytecode lands in our
folder, never beside the source, and is loaded from there."""
import importlib.util
import os
import py_compile
import subprocess
import sys
import textwrap

from nerf import bytecode_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_module(root):
    os.makedirs(root / "pkg", exist_ok=True)
    (root / "pkg" / "fakemod.py").write_text("VALUE = 42\n")
    return root / "pkg"


def run_python(code, pkg, cache_home, *flags):
    env = {**os.environ, "INSTANT_NSR_BUILD_DIR": str(cache_home), "PYTHONPATH": f"{pkg}{os.pathsep}{REPO}"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run([sys.executable, *flags, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


# The module's folder made unwritable for Python's check (tests may run as root, for whom chmod does not).
READ_ONLY = f"""
    import os
    writable = os.access
    os.access = lambda path, mode: False if path.endswith("pkg") else writable(path, mode)
    from nerf.bytecode_cache import use_own_cache_if_needed
    print(use_own_cache_if_needed("fakemod"))
    import fakemod, sys
    print(fakemod.VALUE, fakemod.__cached__, sys.pycache_prefix)
"""


def test_a_module_without_bytecode_in_a_read_only_folder_is_cached_in_ours(tmp_path):
    pkg = make_module(tmp_path)
    folder, value, cached, prefix = run_python(READ_ONLY, pkg, tmp_path / "cache")
    assert folder == prefix == str(tmp_path / "cache" / "pycache")
    assert value == "42" and cached.startswith(folder) and os.path.exists(cached)
    assert not os.path.exists(pkg / "__pycache__")  # nothing written beside the source
    # The next run loads it from there (same path, file unchanged).
    mtime = os.path.getmtime(cached)
    assert run_python(READ_ONLY, pkg, tmp_path / "cache")[2] == cached and os.path.getmtime(cached) == mtime


WRITABLE = """
from nerf.bytecode_cache import use_own_cache_if_needed
print(use_own_cache_if_needed("fakemod"))
import fakemod
print(fakemod.__cached__)
"""


def test_told_not_to_write_bytecode_it_goes_to_our_folder_and_otherwise_beside_the_source(tmp_path):
    pkg = make_module(tmp_path)
    folder, cached = run_python(WRITABLE, pkg, tmp_path / "cache", "-B")  # as PYTHONDONTWRITEBYTECODE=1
    assert folder == str(tmp_path / "cache" / "pycache") and cached.startswith(folder) and os.path.exists(cached)
    assert not os.path.exists(pkg / "__pycache__")
    # Without -B Python writes it beside the source itself, and the next run finds it there: ours is not used.
    folder, cached = run_python(WRITABLE, pkg, tmp_path / "cache2")
    assert folder == "None" and cached.startswith(str(pkg / "__pycache__")) and os.path.exists(cached)
    assert run_python(WRITABLE, pkg, tmp_path / "cache2", "-B")[0] == "None"


def test_installs_with_bytecode_or_writable_folders_and_a_users_prefix_are_left_alone(tmp_path, monkeypatch):
    pkg = make_module(tmp_path)
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    assert not bytecode_cache.lacks_bytecode("fakemod")  # writable: Python writes it itself
    monkeypatch.setattr(bytecode_cache.os, "access", lambda path, mode: False)
    assert bytecode_cache.lacks_bytecode("fakemod")
    monkeypatch.setattr(bytecode_cache.os, "access", lambda path, mode: True)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # -B / PYTHONDONTWRITEBYTECODE
    assert bytecode_cache.lacks_bytecode("fakemod")
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "theirs"))
    assert not bytecode_cache.lacks_bytecode("fakemod")
    monkeypatch.setattr(sys, "pycache_prefix", None)
    py_compile.compile(str(pkg / "fakemod.py"), cfile=importlib.util.cache_from_source(str(pkg / "fakemod.py")))
    assert not bytecode_cache.lacks_bytecode("fakemod")  # bytecode beside it: a normal install
    assert not bytecode_cache.lacks_bytecode("no_such_module_here")


def test_no_home_folder_means_no_cache(tmp_path, monkeypatch):
    pkg = make_module(tmp_path)
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setattr(sys, "pycache_prefix", None)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delenv("INSTANT_NSR_BUILD_DIR", raising=False)
    monkeypatch.setattr(bytecode_cache.os.path, "expanduser", lambda path: path)  # as with HOME unset
    monkeypatch.chdir(tmp_path)
    assert bytecode_cache.use_own_cache_if_needed("fakemod") is None
    assert sys.pycache_prefix is None and not os.path.exists(tmp_path / "~")
