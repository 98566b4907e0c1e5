"""Pillow support for .ecf files, registered on `import ecf_engine`:

    from PIL import Image
    import ecf_engine                                   # registers the "ECF" format
    im = Image.open("photo.ecf")                        # header only; pixels on first use
    im.info["icc_profile"], im.info["exif"]             # where the stream carries them
    im.save("photo.ecf", quality=4.5)                   # any quality in 1..7 (1 = smallest files)
    im.save("photo.ecf", target_bpp=0.5)                # or a target size

Opening reads and validates only the header (bitstream.read_header); the model is loaded
and the stream decoded when the pixels are first needed, with the shipped model the header
names (or a model this plugin already loaded to save with). The mode is L for a stream of
a grayscale source, else RGB.

Save options: quality (1..7 for the default model, any fraction), lmbda, target_bpp,
target_psnr (variable-rate models), model (a shipped name or a .safetensors file), rdo
(iterations of online RDO), icc_profile and exif (default: the image's own). The EXIF
orientation is applied to the pixels before coding, as with `ecf encode`.

Importing this module costs only Pillow's registry: no torch, no model.
"""
from __future__ import annotations

import threading

from PIL import Image, ImageFile

from . import bitstream

FORMAT = "ECF"
_engines: dict = {}                     # model id or name -> Engine, loaded on first use
_lock = threading.Lock()


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == bitstream.MAGIC


class ECFImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "ECF learned image codec (eContextformer)"

    def _open(self) -> None:
        start = self.fp.tell()
        header = bitstream.read_header(self.fp)
        self._size = (header.width, header.height)
        self._mode = "L" if header.metadata.get("mode") == "L" else "RGB"
        for key in ("icc_profile", "exif"):
            if key in header.metadata:
                self.info[key] = header.metadata[key]
        if header.quality is not None:
            self.info["quality"] = header.quality
        self.tile = [ImageFile._Tile("ecf", (0, 0) + self.size, start, header.describe()["total_bytes"])]


class ECFDecoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer) -> tuple[int, int]:
        from .engine import to_pil
        total = self.args[0]
        bits = self.fd.read(total)
        header = bitstream.read_header(bits)
        rgb = _decoder(header.model_id).decode(bits)
        image = to_pil(rgb, header.metadata)
        if image.mode != self.mode:            # e.g. Image.draft / convert requests: give what was asked
            image = image.convert(self.mode)
        self.set_as_raw(image.tobytes())
        return -1, 0


def _decoder(model_id: bytes):
    """An engine for streams of this model: one this plugin loaded, else the shipped one."""
    with _lock:
        engine = _engines.get(model_id)
        if engine is None:
            import ecf_engine
            from .errors import UnknownModelError
            from .weights import missing_model_message, shipped_models
            path = shipped_models().get(model_id)
            if path is None:
                raise UnknownModelError(missing_model_message(model_id))
            engine = _engines[model_id] = ecf_engine.load(path)
        return engine


def _encoder(name: str):
    with _lock:
        engine = _engines.get(name)
        if engine is None:
            import ecf_engine
            engine = ecf_engine.load(name)
            _engines[name] = _engines.setdefault(engine.model_id, engine)
        return engine


def _save(im: Image.Image, fp, filename) -> None:
    from .image import EXIF_PREFIX, load_image
    opts = im.encoderinfo
    rate = {k: opts[k] for k in ("quality", "lmbda", "target_bpp", "target_psnr") if opts.get(k) is not None}
    engine = _encoder(opts.get("model") or "default")
    rgb, metadata = load_image(im)                 # orientation applied, grayscale noted
    for key in ("icc_profile", "exif"):
        value = opts.get(key)
        if isinstance(value, Image.Exif):
            value = value.tobytes()
        if key == "exif" and value and not bytes(value).startswith(EXIF_PREFIX):
            value = EXIF_PREFIX + bytes(value)
        if value:
            metadata[key] = bytes(value)
    fp.write(engine.encode(rgb, rdo_iters=int(opts.get("rdo", 0)), metadata=metadata, **rate))


Image.register_open(FORMAT, ECFImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".ecf")
Image.register_mime(FORMAT, "image/x-ecf")
Image.register_decoder("ecf", ECFDecoder)
