"""The 'wire' shape: a thin upright wire loop (a torus, tube radius 1 % of the bounding radius) whose lower arc is
sunk in a sphere: one solid of genus 1, to test that a thin loop survives reconstruction."""
import numpy as np

from .unit_shape import ThinPart, UnitShape

BALL_CENTRE_Z, BALL_RADIUS = -0.45, 0.4
# loop in the x-z plane about (0, 0, LOOP_CENTRE_Z); its bottom (z = -0.4) is inside the ball
LOOP_CENTRE_Z, LOOP_RADIUS = 0.15, 0.55
TUBE_OF_RADIUS = 0.01
# marching-cubes cells per tube radius: a round cross-section needs more samples than a flat plate
CELLS_PER_TUBE_RADIUS = 2
# wire surface farther than this many tube radii from the ball belongs to the thin part
THIN_MARGIN_TUBES = 3.0


def wire_shape():
    """The wire as a UnitShape; its thin part is the loop outside the ball."""
    z_lo, z_hi = BALL_CENTRE_Z - BALL_RADIUS, LOOP_CENTRE_Z + LOOP_RADIUS
    centre = np.array([0.0, 0.0, 0.5 * (z_lo + z_hi)])
    core_radius = max(abs(BALL_CENTRE_Z - centre[2]) + BALL_RADIUS, abs(LOOP_CENTRE_Z - centre[2]) + LOOP_RADIUS)
    tube = TUBE_OF_RADIUS * core_radius
    radius = core_radius + tube
    ball = np.array([0.0, 0.0, BALL_CENTRE_Z])

    def sdf(q):
        ball_d = np.linalg.norm(q - ball, axis=-1) - BALL_RADIUS
        in_plane = np.hypot(q[..., 0], q[..., 2] - LOOP_CENTRE_Z) - LOOP_RADIUS
        loop_d = np.hypot(in_plane, q[..., 1]) - tube
        return np.minimum(ball_d, loop_d)

    def on_loop(q):
        return np.linalg.norm(q - ball, axis=-1) > BALL_RADIUS + THIN_MARGIN_TUBES * tube

    thin = ThinPart("wire", on_loop, 2 * tube, {"loop_radius": LOOP_RADIUS, "tube_radius": tube})
    return UnitShape(sdf, centre, radius, gt_cell=tube / CELLS_PER_TUBE_RADIUS, thin_part=thin)
