"""Image quality metrics on [0, 1] images."""
import torch
import torch.nn.functional as F


def psnr(pred, target):
    """Peak signal-to-noise ratio in dB of images [..., 3] in [0, 1]."""
    mse = ((pred.float() - target.float()) ** 2).mean().clamp_min(1e-10)
    return float(-10.0 * torch.log10(mse))


def ssim(pred, target, window=11, sigma=1.5):
    """Structural similarity (Wang et al. 2004) of images [H, W, 3] in [0, 1]: Gaussian window 11, sigma 1.5,
    K1 = 0.01, K2 = 0.03, averaged over channels and valid (unpadded) positions; an image smaller than the window
    (a tiny validation render) gets the largest odd window that fits."""
    window = min(window, (min(pred.shape[:2]) - 1) | 1)
    x = pred.float().permute(2, 0, 1)[None]  # [1, 3, H, W]
    y = target.float().permute(2, 0, 1)[None]
    coords = torch.arange(window, dtype=torch.float32, device=x.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, window, window).contiguous()

    def blur(z):
        return F.conv2d(z, kernel, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())
