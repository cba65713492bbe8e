"""torch's process-wide settings that a training or scoring run sets for itself (its CPU
thread count, deterministic algorithms, cuDNN's flags), put back when it ends: a caller in
the same process, a notebook or the test suite, keeps its own."""
from __future__ import annotations

import functools

import torch


def keeps_torch_settings(fn):
    """Run `fn`, then restore the settings it may change, also when it raises."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
    return wrapper
