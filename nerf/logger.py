"""Where a run reports: WORKSPACE/log.txt (plain lines) and tensorboardX scalars and images (WORKSPACE/run).
Both open on first use, so nothing is written before the first message."""
import os
import time


class Logger:
    def __init__(self, workspace):
        self.workspace = workspace
        self.log_file = None
        self.writer = None

    def log(self, msg):
        if self.log_file is None:
            os.makedirs(self.workspace, exist_ok=True)
            self.log_file = open(os.path.join(self.workspace, "log.txt"), "a")
        self.log_file.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}\n")
        self.log_file.flush()

    def _tensorboard(self):
        if self.writer is None:
            from tensorboardX import SummaryWriter

            # Flushed every few seconds, so a killed run's curves are on disk up to then.
            self.writer = SummaryWriter(os.path.join(self.workspace, "run"), flush_secs=10)
        return self.writer

    def scalars(self, values: dict, step: int):
        for name, value in values.items():
            self._tensorboard().add_scalar(name, value, step)

    def image(self, name, image, step: int):
        """image: [H, W, 3] float in [0, 1]."""
        self._tensorboard().add_image(name, image, step, dataformats="HWC")

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.log_file is not None:
            self.log_file.close()
