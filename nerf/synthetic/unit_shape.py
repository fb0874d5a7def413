"""UnitShape: what an analytic shape of the synthetic scenes is in its own frame (z up, unit lengths) before
AnalyticShape places it in the world."""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class ThinPart:
    """The part of a shape that is thin (a blade, a wire), for thin-part metrics: `contains` maps unit points
    [N, 3] near the surface to bool [N] (True on the thin part); `size` is its thickness (unit length), `info`
    more lengths about it (unit lengths; AnalyticShape turns them into mm)."""
    kind: str
    contains: Callable
    size: float
    info: dict = field(default_factory=dict)


@dataclass
class UnitShape:
    """sdf maps unit points [..., 3] to a signed distance [...] that is never larger than the true one
    (Lipschitz <= 1), so sphere tracing cannot step through the surface; the bounding sphere (centre [3], radius)
    holds the zero set. gt_cell: the largest marching-cubes cell (unit length) that keeps the finest feature in
    gt_mesh.ply (None: no floor). albedo: unit points [N, 3] -> albedo [N, 3] in place of the procedural texture,
    named albedo_name in scene.json."""
    sdf: Callable
    centre: np.ndarray
    radius: float
    gt_cell: Optional[float] = None
    thin_part: Optional[ThinPart] = None
    albedo: Optional[Callable] = None
    albedo_name: Optional[str] = None
