"""Photos, a video or a COLMAP model -> a posed scene in the NeuS layout (CLI: scripts/colmap2neus.py).

    pose_images(input, out, ...)              the whole route (pipeline.py), one call
    pose_folder_cached(images_dir, cache_dir) the same for a plain image folder, posed once and reused (cache.py)
    compare_poses(posed_dir, reference_dir)   errors against known cameras (compare.py; scripts/eval_poses.py)

Structure from motion is pycolmap's (CPU wheels; pinned pycolmap==4.2.1), video decoding imageio's ffmpeg
plugin (imageio-ffmpeg). Every bad input raises PosingError (a DatasetError) with one line 'PATH: problem'."""
from .cache import pose_folder_cached
from .compare import compare_poses, format_comparison
from .errors import PosingError
from .pipeline import CAMERA_MODELS, pose_images

__all__ = ["CAMERA_MODELS", "PosingError", "compare_poses", "format_comparison", "pose_folder_cached", "pose_images"]
