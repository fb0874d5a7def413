"""A training step replayed as a CUDA graph: the host launches one graph instead of a few hundred kernels
(launching them from Python took longer than the GPU's work; BENCHMARKS.md, 2026-11-22).
"""
import torch

from .input_checks import error_line


class GraphedStep:
    """Runs `body(batch)` (forward, backward, optimizer step) as a CUDA graph: captured once per batch shape,
    then replayed with the batch copied into the captured inputs, so the host launches one graph instead of a
    few hundred kernels. The step with a new shape runs eagerly on the capture stream first (it is a real
    step, and it performs lazy initialisations such as cuBLAS workspaces outside the capture).

    Everything the body reads must be a tensor updated in place (learning rates, step-dependent model knobs,
    the occupancy bitfield); shapes must depend on the batch shape only; nothing may wait for the GPU.
    """

    def __init__(self, body, log):
        self.body = body
        self.log = log
        self.stream = torch.cuda.Stream()
        self.enabled = True
        self.captures = 0  # graphs captured so far (one per new batch shape, and after each reset)
        self.reset()

    def reset(self):
        """Forget the graph (after loading a checkpoint: the optimizer's state tensors are new)."""
        self.graph = self.key = self.static_batch = self.static_out = None

    def __call__(self, batch):
        if not self.enabled:
            return self.body(batch)
        key = tuple((k, None if v is None else tuple(v.shape)) for k, v in batch.items())
        if key == self.key:
            for k, v in batch.items():
                if v is not None:
                    self.static_batch[k].copy_(v)
            self.graph.replay()
            return self.static_out
        self.reset()
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = self.body(batch)
            self.static_batch = {k: None if v is None else v.clone() for k, v in batch.items()}
        self.graph = torch.cuda.CUDAGraph()
        self.captures += 1
        try:
            with torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
                self.static_out = self.body(self.static_batch)
        except RuntimeError as e:  # something in the step waits for the GPU (e.g. a twin on CUDA): stay eager
            self.log(f"CUDA graph capture failed, training without graphs: {error_line(e)}")
            self.enabled = False
            self.reset()
        torch.cuda.current_stream().wait_stream(self.stream)
        self.key = key
        return out
