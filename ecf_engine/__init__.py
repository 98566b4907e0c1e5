"""ecf_engine: a learned image codec built around the Efficient Contextformer (arXiv 2306.14287).

    import ecf_engine
    engine = ecf_engine.load()              # shipped default weights
    bits = engine.encode(image)             # PIL.Image, HxWx3 uint8 ndarray or (3,H,W) tensor
    rgb = engine.decode(bits)               # HxWx3 uint8 ndarray
    rgb = ecf_engine.decode(bits)           # picks the shipped model named in the stream
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

# Importing the package changes no process state (environment, torch flags): the `ecf`
# command sets its thread and MKL environment itself (cli.setup_threads; detmath explains MKL_CBWR).
from . import pillow_plugin  # noqa: F401  registers the ECF format with Pillow (no torch)
from .bitstream import Header, read_header  # (struct and zlib only)
from .errors import BitstreamError, ECFError, ImageError, UnknownModelError, WeightsError

# The rest loads torch, so it is imported on first use: `import ecf_engine` stays cheap, and
# the `ecf` command can set its thread environment before torch starts (cli.setup_threads).
_LAZY = {"PRESETS": "config", "Config": "config", "ContextEntropyModel": "context_entropy", "Engine": "engine",
         "backend_report": "ops", "QUALITIES": "weights", "SHIPPED": "weights", "load_weights": "weights",
         "missing_model_message": "weights", "quality_model": "weights", "shipped_models": "weights"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value

__version__ = "0.1.0"
__all__ = ["load", "decode", "decode_image", "read_header", "Engine", "Config", "PRESETS", "Header", "ContextEntropyModel", "ECFError",
           "BitstreamError", "UnknownModelError", "WeightsError", "ImageError", "SHIPPED", "QUALITIES", "quality_model",
           "backend_report"]

ENGINE_CACHE_SIZE = 4               # decode() keeps this many engines (LRU): the four shipped qualities
_engines: OrderedDict[bytes, Engine] = OrderedDict()
_engines_lock = threading.Lock()


def load(name_or_path: str | Path = "default", **engine_options) -> Engine:
    """A shipped model name ('default', ...), a .safetensors path, or a preset name
    (seeded random weights, for tests and timing)."""
    from .engine import Engine
    from .weights import load_weights
    model, mid = load_weights(name_or_path)
    return Engine(model, mid, name=str(name_or_path), **engine_options)


def decode(bits: bytes):
    """Decode with the shipped model whose id the stream's header names."""
    from .weights import missing_model_message, shipped_models
    header = read_header(bits)
    with _engines_lock:
        engine = _engines.get(header.model_id)
        if engine is None:
            path = shipped_models().get(header.model_id)
            if path is None:
                raise UnknownModelError(missing_model_message(header.model_id))
            engine = _engines[header.model_id] = load(path)
            while len(_engines) > ENGINE_CACHE_SIZE:
                _engines.popitem(last=False)        # the least recently used
        _engines.move_to_end(header.model_id)
    return engine.decode(bits)


def decode_image(bits: bytes):
    """Like decode(), as a PIL.Image with the stream's colour mode, ICC profile and EXIF."""
    from .engine import to_pil
    return to_pil(decode(bits), read_header(bits).metadata)
