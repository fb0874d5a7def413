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
READ_BUFFER = 1 << 20  # bytes: seeks within it cost no system call
STRING_CHUNK = 256  # bytes read at a time looking for a string's end


class RecordWalker:
    """Steps through a binary model file, reading only the fixed-size parts of its records (the file may be far
    larger than memory: a padded or corrupt one is refused by its size, never loaded); PosingError naming the
    file when the records do not fit it. A context manager: the file is closed on leaving."""

    def __init__(self, path):
        self.path = path
        try:
            self.file = open(path, "rb", buffering=READ_BUFFER)
        except OSError as e:
            raise PosingError(f"{path}: unreadable COLMAP binary file ({e.strerror})") from None
        self.size = os.fstat(self.file.fileno()).st_size
        self.offset = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def corrupt(self, problem):
        raise PosingError(f"{self.path}: corrupt COLMAP binary file ({problem})")

    def truncated(self):
        raise PosingError(f"{self.path}: truncated COLMAP binary file (its records run past its {self.size} bytes)")

    def skip(self, size):
        if self.offset + size > self.size:
            self.truncated()
        self.offset += size
        self.file.seek(self.offset)

    def unpack(self, layout):
        if self.offset + layout.size > self.size:
            self.truncated()
        self.offset += layout.size
        return layout.unpack(self.file.read(layout.size))

    def skip_string(self):
        """Past the NUL byte that ends a string (an image's name)."""
        while True:
            chunk = self.file.read(STRING_CHUNK)
            end = chunk.find(b"\0")
            if end >= 0:
                self.skip(end + 1)
                return
            if not chunk:
                self.truncated()
            self.offset += len(chunk)

    def records(self):
        """Yields once per record the count announces; the records must then end where the file does."""
        count, = self.unpack(COUNT)
        for _ in range(count):
            yield
        if self.offset != self.size:
            self.corrupt(f"{self.size - self.offset} bytes after its {count} records")


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
    with RecordWalker(os.path.join(model_dir, "cameras.bin")) as walker:
        walk_cameras(walker, camera_parameter_counts(pycolmap))
    with RecordWalker(os.path.join(model_dir, "images.bin")) as walker:
        walk_images(walker)
    with RecordWalker(os.path.join(model_dir, "points3D.bin")) as walker:
        walk_points(walker)
