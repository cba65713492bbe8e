"""The processor a worker runs on each image, and how it is chosen.

A processor is `processor(dataset) -> {object type: result dataset}`, built once per
worker process by a factory `factory(cfg) -> processor`, so models load once. The
factory is named in config.yaml as `workers.processor: "module:function"`; the
default builds the real explainer pipeline (cfia.pipeline.Pipeline). Tests and
benchmarks name fake factories (cfia.bench.processors) that make real DICOM result
objects from a synthetic explanation without any model; the effective config, and
so the factory in use, is logged at start-up.
"""
from __future__ import annotations

import importlib
from typing import Callable

from pydicom.dataset import Dataset

Processor = Callable[[Dataset], dict[str, Dataset]]
DEFAULT_FACTORY = "cfia.processors:pipeline_processor"


def load_factory(spec: str) -> Callable[..., Processor]:
    """Import `module:function`; raises ValueError naming the spec when it is wrong."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"processor factory {spec!r} is not of the form module:function")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"processor factory {spec!r} cannot be imported: {exc}") from None
    if not callable(factory):
        raise ValueError(f"processor factory {spec!r} is not callable")
    return factory


def pipeline_processor(cfg) -> Processor:
    """The real explainer: loads the configured models once, then explains each image."""
    from cfia.pipeline import Pipeline  # lazy: torch and the models load in the worker only

    return Pipeline(cfg).process
