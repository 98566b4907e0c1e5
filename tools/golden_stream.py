"""Write the golden stream of the current default model, checked in under tests/data:

    python tools/golden_stream.py

sample-crop-v<format>.ecf is the bundled sample's top-left 128x96 crop coded at quality 4.5;
beside it the latents it carries (.y_hat.npy, int16) and the image this build decodes
(.decoded.png). tests/test_shipped.py decodes it with every later build: a change of the
format, the coder or the model that alters what an old stream decodes to fails there.
Run it only when a new default model ships (the older golden streams stay as they are).
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ecf_engine  # noqa: E402
from ecf_engine import bitstream  # noqa: E402
from ecf_engine.cli import SAMPLE  # noqa: E402

CROP = (0, 0, 128, 96)          # left, top, right, bottom
QUALITY = 4.5


def main() -> None:
    engine = ecf_engine.load("default")
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB").crop(CROP))
    bits = engine.encode(rgb, quality=QUALITY)
    image, stats = engine.decode_with_stats(bits)
    stem = ROOT / "tests" / "data" / f"sample-crop-v{bitstream.read_header(bits).version}"
    for path in (stem.with_suffix(".ecf"), Path(f"{stem}.y_hat.npy"), Path(f"{stem}.decoded.png")):
        if path.exists():
            raise SystemExit(f"{path} exists: a golden stream is never rewritten (remove it by hand "
                             "only if it has not been committed)")
    stem.with_suffix(".ecf").write_bytes(bits)
    np.save(f"{stem}.y_hat.npy", stats["y_hat"].numpy().astype(np.int16))
    Image.fromarray(image).save(f"{stem}.decoded.png")
    print(f"wrote {stem}.ecf ({len(bits)} bytes, model {engine.model_id.hex()}, quality {QUALITY:g}), "
          f".y_hat.npy and .decoded.png")


if __name__ == "__main__":
    main()
