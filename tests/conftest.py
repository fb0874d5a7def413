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


@pytest.fixture(autouse=True)
def seeded_rngs():
    """Every test starts from the same random state, so its draws do not depend on which tests ran before it."""
    import numpy
    import torch

    torch.manual_seed(0)
    numpy.random.seed(0)


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A tiny NeuS + transforms.json scene of a textured torus (16 views, 96x72), world units mm."""
    from nerf.synthetic import make_scene

    root = str(tmp_path_factory.mktemp("torus"))
    info = make_scene(root, shape="torus", views=16, width=96, height=72, gt_resolution=96, seed=1)
    return root, info


@pytest.fixture(scope="session")
def blade_scene(tmp_path_factory):
    """A tiny scene of the thin 'blade' (4 views, 64x48, seed 0); its gt_mesh.ply and gt_thin.ply are made at the
    shape's own resolution floor (~10 s)."""
    from nerf.synthetic import make_scene

    root = str(tmp_path_factory.mktemp("blade"))
    info = make_scene(root, shape="blade", views=4, width=64, height=48, gt_resolution=64, seed=0,
                      formats=("neus",))
    return root, info


def save_heic(values, path, orientation=1):
    """values [H, W, C] uint8 (C 1, 3 or 4) as a HEIC file (pillow-heif's encoder), its EXIF orientation as given
    (pillow-heif stores it as the HEIF's own rotation, as a phone does)."""
    import pillow_heif
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    # quality -1 and no chroma subsampling: near lossless
    pillow_heif.from_pillow(Image.fromarray(values.squeeze())).save(str(path), quality=-1, chroma=444,
                                                                    exif=exif.tobytes())
