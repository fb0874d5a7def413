"""Coarse-to-fine hash levels (as in Neuralangelo): a hash encoding's finer levels are switched on one by one during
training, so that the coarse ones settle the large shapes before fine ones can fit noise. Used by the SDF and by the
background field, each with its own schedule (config: levels_start / levels_until, bg_levels_start /
bg_levels_until)."""


def active_levels(start: int, fraction: float, levels: int, progress: float) -> int:
    """How many of `levels` hash levels are on at `progress` (0-1) of training: `start`, rising linearly to all
    at `fraction` (0: all from the start)."""
    if fraction <= 0 or start >= levels:
        return levels
    return min(levels, start + int((levels - start) * progress / fraction))


def fill_level_mask(mask, active: int, level_dim: int):
    """mask [L * level_dim], in place (a captured CUDA graph reads it): 1 for the first `active` levels' features,
    0 after."""
    mask.zero_()
    mask[: active * level_dim] = 1
