"""A bytecode cache of our own for Python installs that ship none and will not write one.

Some environments hold torch without its compiled `.pyc` files (uv installs without `--compile-bytecode`, `pip
install --no-compile`) and either cannot write them (a read-only or shared install) or are told not to
(`PYTHONDONTWRITEBYTECODE=1`, common in container images, and set on our lent GPU machine). Python then compiles
each of the ~2000 modules a run imports from source at every launch: 5.8 s of compiling in a run there, against
~1 s of imports with bytecode. In that case Python's bytecode goes to a folder of our own instead (beside the
kernels' just-in-time builds), compiled once and loaded from there after; nothing is written beside any source.
An install with bytecode is left alone, and so is a `PYTHONPYCACHEPREFIX` the user set.
"""
import importlib.util
import os
import sys


def cache_folder():
    """$INSTANT_NSR_BUILD_DIR (default ~/.cache/instant_nsr)/pycache."""
    return os.path.join(os.environ.get("INSTANT_NSR_BUILD_DIR", os.path.expanduser("~/.cache/instant_nsr")),
                        "pycache")


def lacks_bytecode(module):
    """True when `module` (not imported) is plain source with no bytecode beside it, and Python will not write
    it there (told not to, or the folder is not writable)."""
    if sys.pycache_prefix is not None:  # the user's own cache
        return False
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    if os.path.exists(importlib.util.cache_from_source(spec.origin)):
        return False
    return sys.dont_write_bytecode or not os.access(os.path.dirname(spec.origin), os.W_OK)


def use_own_cache_if_needed(module="torch"):
    """Send Python's bytecode to `cache_folder()` when `module` lacks its own; call before importing it. Returns
    the folder used, or None."""
    if not lacks_bytecode(module):
        return None
    folder = cache_folder()
    if not os.path.isabs(folder):  # no home folder to expand "~" to: never write relative to the working folder
        return None
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:  # nowhere to write it either: compile from source as before
        return None
    sys.pycache_prefix = folder
    sys.dont_write_bytecode = False  # written only under `folder`, never beside the sources
    return folder
