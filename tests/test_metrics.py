"""Image metrics (nerf/metrics.py)."""
import torch

from nerf.metrics import ssim


def test_ssim_is_one_for_equal_images_and_lower_for_noise():
    image = torch.rand(40, 50, 3, generator=torch.Generator().manual_seed(0))
    noisy = (image + 0.2 * torch.randn(40, 50, 3, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert abs(ssim(image, image) - 1.0) < 1e-5 and ssim(noisy, image) < 0.9


def test_ssim_of_an_image_smaller_than_its_window():
    """A tiny validation render (6x8: a 32x24 scene downscaled 4x) is scored with a window that fits it."""
    image = torch.rand(6, 8, 3, generator=torch.Generator().manual_seed(0))
    assert abs(ssim(image, image) - 1.0) < 1e-5 and ssim(1 - image, image) < 0.5
