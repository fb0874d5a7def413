import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def shared_data(*parts):
    """Path under the development data ($NSR_SHARED_DATA, else ../shared/data beside the checkout), or None
    when absent (tests that need it skip)."""
    root = os.environ.get("NSR_SHARED_DATA", os.path.join(REPO_ROOT, "..", "shared", "data"))
    path = os.path.join(root, *parts)
    return path if os.path.exists(path) else None


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A tiny NeuS + transforms.json scene of a textured torus (16 views, 96x72), world units mm."""
    from nerf.synthetic import make_scene

    root = str(tmp_path_factory.mktemp("torus"))
    info = make_scene(root, shape="torus", views=16, width=96, height=72, gt_resolution=96, seed=1)
    return root, info
