"""instant-nsr: the reconstructor (data, fields, sampling and rendering, training, evaluation and export)."""
