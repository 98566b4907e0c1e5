"""Classical image codecs for rate–distortion comparisons, each run through its own encoder
and decoder at a sweep of quality settings.

Every codec encodes an RGB image to bytes (the real file contents: bits = 8 * len) and
decodes those bytes with the codec's own decoder. A codec whose library is missing is
skipped with a one-line message (see `available_codecs`).

    JPEG 4:2:0 / 4:4:4   Pillow (libjpeg-turbo), optimized Huffman tables
    WebP                 Pillow (libwebp), method 6 (slowest, best); lossy WebP is always 4:2:0
    AVIF 4:4:4           Pillow (libavif + libaom), speed 4
    HEVC intra 4:4:4     pillow-heif (libheif + x265 encoder, libde265 decoder), HEIF container
    JPEG 2000            Pillow (OpenJPEG), 9/7 wavelet + colour transform, target compression ratios
    JPEG XL              imagecodecs (libjxl), effort 7, butteraugli distance sweep
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

# quality settings, lowest rate first, chosen so that Kodak spans about 0.1 - 2 bpp
JPEG_QUALITIES = (3, 6, 10, 15, 25, 40, 60, 80, 90)
WEBP_QUALITIES = (0, 10, 25, 45, 65, 80, 90, 95)
AVIF_QUALITIES = (10, 25, 40, 52, 63, 73, 81, 88)
AVIF_SPEED = 4
HEVC_QUALITIES = (5, 15, 25, 33, 40, 47, 54, 60)
HEVC_PRESET = "slow"
J2K_BPP_TARGETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)   # compression ratio = 24 / bpp
JXL_DISTANCES = (20.0, 12.0, 8.0, 5.0, 3.5, 2.5, 1.7, 1.2, 0.8)
JXL_EFFORT = 7


@dataclass(frozen=True)
class Codec:
    """One codec: `encode(rgb, setting) -> bytes`, `decode(bytes) -> HxWx3 uint8`."""
    name: str                      # short key used on the command line and in the JSON
    label: str                     # for tables and plots
    setting: str                   # what the sweep varies
    settings: tuple
    encode: Callable[[np.ndarray, object], bytes]
    decode: Callable[[bytes], np.ndarray]
    version: Callable[[], str]     # library versions and encoder options; raises if unavailable


def _pillow_encode(rgb: np.ndarray, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **options)
    return buf.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _pillow_version(feature: str) -> str:
    import PIL
    from PIL import features
    if not features.check(feature):
        raise RuntimeError(f"this Pillow {PIL.__version__} has no {feature} support")
    return f"Pillow {PIL.__version__}, {feature} {features.version(feature)}"


def _box(data: bytes, kind: bytes) -> bytes:
    """Payload of the first ISO-BMFF box of this type (searched for, good enough for the
    small, known files we write), or b"" if there is none."""
    i = data.find(kind)
    if i < 4:
        return b""
    size = int.from_bytes(data[i - 4:i], "big")
    return data[i + 4:i - 4 + size]


# --- JPEG ----------------------------------------------------------------------------------

def jpeg(subsampling: str) -> Codec:
    code = {"4:4:4": 0, "4:2:0": 2}[subsampling]

    def encode(rgb, quality):
        return _pillow_encode(rgb, "JPEG", quality=quality, subsampling=code, optimize=True)

    def version():
        return _pillow_version("jpg") + f", {subsampling}, optimize=True (Huffman tables), baseline"

    name = "jpeg420" if code == 2 else "jpeg444"
    return Codec(name, f"JPEG {subsampling}", "quality", JPEG_QUALITIES, encode, _pillow_decode, version)


# --- WebP ----------------------------------------------------------------------------------

def webp() -> Codec:
    def encode(rgb, quality):
        return _pillow_encode(rgb, "WEBP", quality=quality, method=6)

    def version():
        return _pillow_version("webp") + ", lossy, method=6, 4:2:0 (the only lossy WebP format)"

    return Codec("webp", "WebP", "quality", WEBP_QUALITIES, encode, _pillow_decode, version)


# --- AVIF ----------------------------------------------------------------------------------

def avif_chroma(data: bytes) -> str:
    """Chroma format written in the av1C box of an AVIF file: '4:4:4', '4:2:2', '4:2:0' or '4:0:0'."""
    payload = _box(data, b"av1C")
    if len(payload) < 3:
        raise ValueError("no av1C box in the AVIF file")
    flags = payload[2]                     # tier, high_bitdepth, twelve_bit, mono, ssx, ssy, pos(2)
    if flags & 0x10:
        return "4:0:0"
    ssx, ssy = bool(flags & 0x08), bool(flags & 0x04)
    return {(False, False): "4:4:4", (True, False): "4:2:2", (True, True): "4:2:0"}[(ssx, ssy)]


def avif() -> Codec:
    def encode(rgb, quality):
        data = _pillow_encode(rgb, "AVIF", quality=quality, subsampling="4:4:4", speed=AVIF_SPEED, range="full")
        if avif_chroma(data) != "4:4:4":
            raise RuntimeError(f"asked libavif for 4:4:4, the file says {avif_chroma(data)}")
        return data

    def version():
        from PIL import _avif
        described = _pillow_version("avif")
        if not _avif.encoder_codec_available("aom"):
            raise RuntimeError("libavif has no aom encoder")
        return (f"{described} ({', '.join(_avif.codec_versions().split(', '))}), aom encoder, 4:4:4 "
                f"(checked in the av1C box), 8-bit full range, speed={AVIF_SPEED}")

    return Codec("avif", "AVIF 4:4:4", "quality", AVIF_QUALITIES, encode, _pillow_decode, version)


# --- HEVC intra (HEIF) ---------------------------------------------------------------------

def hevc_chroma(data: bytes) -> tuple[str, int]:
    """(chroma format, general_profile_idc) from the hvcC box of a HEIF file."""
    payload = _box(data, b"hvcC")
    if len(payload) < 17:
        raise ValueError("no hvcC box in the HEIF file")
    # hvcC: version, profile space/tier/idc, 4 compat flags, 6 constraint flags, level,
    # 2 min_spatial_segmentation, parallelismType, then chromaFormat in the low 2 bits
    chroma = {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}[payload[16] & 3]
    return chroma, payload[1] & 0x1F


def hevc() -> Codec:
    def encode(rgb, quality):
        import pillow_heif
        heif = pillow_heif.from_bytes(mode="RGB", size=(rgb.shape[1], rgb.shape[0]), data=rgb.tobytes())
        buf = io.BytesIO()
        # tile_size=0: one picture, not a grid of tiles; tune=psnr: x265 as libheif sets it
        # up defaults to tune=ssim, which is the wrong target for a PSNR comparison
        heif.save(buf, format="HEIF", quality=quality, chroma=444, tile_size=0,
                  enc_params={"preset": HEVC_PRESET, "tune": "psnr"})
        data = buf.getvalue()
        chroma, _ = hevc_chroma(data)
        if chroma != "4:4:4":
            raise RuntimeError(f"asked x265 for 4:4:4, the file says {chroma}")
        return data

    def decode(data):
        import pillow_heif
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        return np.asarray(heif.to_pillow().convert("RGB"))

    def version():
        import pillow_heif
        info = pillow_heif.libheif_info()
        if "x265" not in info.get("encoders", {}):
            raise RuntimeError(f"pillow-heif {pillow_heif.__version__} has no x265 encoder")
        return (f"pillow-heif {pillow_heif.__version__}, libheif {info['libheif']}, {info['encoders']['x265']}, "
                f"decoder {info['decoders'].get('libde265', '?')}; HEVC intra in HEIF, 4:4:4 "
                f"(checked in the hvcC box), BT.601 full-range YCbCr, 8-bit, preset={HEVC_PRESET}, tune=psnr")

    return Codec("hevc", "HEVC intra 4:4:4 (x265)", "quality", HEVC_QUALITIES, encode, decode, version)


# --- JPEG 2000 -----------------------------------------------------------------------------

def jpeg2000() -> Codec:
    def encode(rgb, bpp):
        # a raw J2K codestream (no JP2 boxes); OpenJPEG's "rates" are compression ratios
        return _pillow_encode(rgb, "JPEG2000", no_jp2=True, quality_mode="rates", quality_layers=[24.0 / bpp],
                              irreversible=True, mct=1)

    def version():
        return _pillow_version("jpg_2000") + ", J2K codestream, 9/7 irreversible wavelet, RGB->YCC (mct=1), one layer"

    return Codec("jpeg2000", "JPEG 2000", "target bpp", J2K_BPP_TARGETS, encode, _pillow_decode, version)


# --- JPEG XL -------------------------------------------------------------------------------

def jpegxl() -> Codec:
    def encode(rgb, distance):
        import imagecodecs
        return imagecodecs.jpegxl_encode(rgb, effort=JXL_EFFORT, distance=distance)

    def decode(data):
        import imagecodecs
        return np.asarray(imagecodecs.jpegxl_decode(data))[..., :3]

    def version():
        import imagecodecs
        if not imagecodecs.JPEGXL.available:
            raise RuntimeError(f"imagecodecs {imagecodecs.__version__} was built without JPEG XL")
        return (f"imagecodecs {imagecodecs.__version__}, {imagecodecs.jpegxl_version()}, VarDCT (lossy), "
                f"effort={JXL_EFFORT}, distance sweep, bare codestream")

    return Codec("jpegxl", "JPEG XL", "distance", JXL_DISTANCES, encode, decode, version)


def all_codecs() -> list[Codec]:
    return [jpeg("4:2:0"), jpeg("4:4:4"), webp(), avif(), hevc(), jpeg2000(), jpegxl()]


def available_codecs(names: list[str] | None = None) -> list[tuple[Codec, str]]:
    """(codec, version description) for each requested codec whose library works here; one
    line per skipped codec is printed. A codec counts as working when a tiny image survives
    encode -> decode."""
    codecs = all_codecs()
    known = {c.name for c in codecs}
    unknown = set(names or []) - known
    if unknown:
        raise ValueError(f"unknown codec(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    probe = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out = []
    for codec in codecs:
        if names and codec.name not in names:
            continue
        try:
            described = codec.version()
            decoded = codec.decode(codec.encode(probe, codec.settings[-1]))
            if decoded.shape != probe.shape:
                raise RuntimeError(f"decoded shape {decoded.shape} != {probe.shape}")
        except Exception as e:     # any missing library / plugin: skip this codec, not the run
            print(f"skipping {codec.label}: {type(e).__name__}: {e}")
            continue
        out.append((codec, described))
    return out
