"""Wall and CPU seconds of each stage: on a shared machine the wall time says little alone (the CPU time
counts every thread of this process, pycolmap's included)."""
import resource
import time
from contextlib import contextmanager


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StageTimes:
    def __init__(self):
        self.wall, self.cpu = {}, {}

    @contextmanager
    def stage(self, name):
        wall, cpu = time.perf_counter(), cpu_seconds()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + cpu_seconds() - cpu

    def as_dict(self):
        return {"wall_s": {k: round(v, 2) for k, v in self.wall.items()},
                "cpu_s": {k: round(v, 2) for k, v in self.cpu.items()}}
