"""The process-wide state that a training or scoring run sets for itself (torch's CPU thread
count, deterministic algorithms, cuDNN's flags, and the random generators it seeds), put back
when it ends: a caller in the same process, a notebook or the test suite, keeps its own."""
from __future__ import annotations

import functools
import random

import numpy as np
import torch


def keeps_torch_settings(fn):
    """Run `fn`, then restore the state it may change, also when it raises."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        generators = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
            random.setstate(generators[0])
            np.random.set_state(generators[1])
    return wrapper
