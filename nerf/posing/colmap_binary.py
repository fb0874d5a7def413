"""The structure of a COLMAP binary model (cameras.bin, images.bin, points3D.bin), walked before pycolmap reads
it: pycolmap trusts the record counts and lengths in the files, so a truncated or corrupt file makes it read
garbage (a camera of zeros) or loop allocating memory without end. Layout as COLMAP writes it
(src/colmap/scene/reconstruction_io_binary.cc): little-endian, a uint64 record count, then the records."""
import os
import struct

from .errors import PosingError

COUNT = struct.Struct("<Q")
CAMERA = struct.Struct("<IiQQ")  # camera id, model id, width, height; then the model's parameters (doubles)
IMAGE = struct.Struct("<I4d3dI")  # image id, quaternion, translation, camera id; then name\0 and a COUNT of 2D points
POINT2D_SIZE = 24  # x, y (doubles), point3D id (int64)
POINT3D = struct.Struct("<Q3d3BdQ")  # point id, xyz, rgb, error, track length
TRACK_ELEMENT_SIZE = 8  # image id, point2D index (uint32 each)


class RecordWalker:
    """Steps through a binary model file's bytes; PosingError naming the file when they do not fit."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        self.offset = 0

    def corrupt(self, problem):
        raise PosingError(f"{self.path}: corrupt COLMAP binary file ({problem})")

    def skip(self, size):
        if self.offset + size > len(self.data):
            raise PosingError(f"{self.path}: truncated COLMAP binary file (its records run past its "
                              f"{len(self.data)} bytes)")
        self.offset += size

    def unpack(self, layout):
        self.skip(layout.size)
        return layout.unpack_from(self.data, self.offset - layout.size)

    def skip_string(self):
        end = self.data.find(b"\0", self.offset)
        self.skip((len(self.data) if end < 0 else end) + 1 - self.offset)

    def records(self):
        """Yields once per record the count announces; the records must then end where the file does."""
        count, = self.unpack(COUNT)
        for _ in range(count):
            yield
        if self.offset != len(self.data):
            self.corrupt(f"{len(self.data) - self.offset} bytes after its {count} records")


def camera_parameter_counts(pycolmap):
    """{camera model id: number of parameters} of the models this pycolmap reads."""
    models = (m for m in pycolmap.CameraModelId.__members__.values() if int(m) >= 0)  # not INVALID
    return {int(m): len(pycolmap.Camera.create_from_model_id(1, m, 1.0, 1, 1).params) for m in models}


def walk_cameras(walker, parameter_counts):
    for _ in walker.records():
        camera_id, model_id, _, _ = walker.unpack(CAMERA)
        if model_id not in parameter_counts:
            walker.corrupt(f"camera {camera_id} has the unknown camera model id {model_id}")
        walker.skip(8 * parameter_counts[model_id])


def walk_images(walker):
    for _ in walker.records():
        walker.unpack(IMAGE)
        walker.skip_string()
        points, = walker.unpack(COUNT)
        walker.skip(POINT2D_SIZE * points)


def walk_points(walker):
    for _ in walker.records():
        track_length = walker.unpack(POINT3D)[-1]
        walker.skip(TRACK_ELEMENT_SIZE * track_length)


def check_binary_model(model_dir, pycolmap):
    """PosingError naming the first of model_dir's cameras.bin, images.bin, points3D.bin whose records do not
    fill it exactly."""
    walk_cameras(RecordWalker(os.path.join(model_dir, "cameras.bin")), camera_parameter_counts(pycolmap))
    walk_images(RecordWalker(os.path.join(model_dir, "images.bin")))
    walk_points(RecordWalker(os.path.join(model_dir, "points3D.bin")))
