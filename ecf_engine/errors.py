"""Exceptions. Everything the engine raises on bad input derives from ECFError."""


class ECFError(Exception):
    """Base class of all ecf_engine errors."""


class BitstreamError(ECFError, ValueError):
    """The bytes are not a valid ECF bitstream (bad magic, truncated, corrupted, ...)."""


class UnknownModelError(ECFError, LookupError):
    """The stream names a model whose weights are not available or not the ones loaded."""


class WeightsError(ECFError, ValueError):
    """A weights file is missing, unreadable or inconsistent."""


class ImageError(ECFError, ValueError):
    """An input image has an unsupported type, shape, mode or size."""


class RateError(ECFError, ValueError):
    """A rate setting (quality, lambda, target bpp / PSNR) is invalid or out of reach."""
