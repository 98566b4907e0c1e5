"""The `ecf` command: demo, encode, decode, info, eval, train."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).parent / "data" / "sample.png"


def _engine(model: str | None, quality: int | None = None):
    import ecf_engine
    if quality is not None:
        if model:
            raise SystemExit("ecf: give --model or --quality, not both")
        model = ecf_engine.quality_model(quality)
    return ecf_engine.load(model or "default")


def _add_model_options(s, rdo: bool) -> None:
    from .weights import QUALITIES
    s.add_argument("--model", help="shipped name, .safetensors path or preset (default: default)")
    s.add_argument("--quality", type=int, choices=range(1, len(QUALITIES) + 1),
                   help=f"shipped rate point 1..{len(QUALITIES)} (1 = smallest files): {', '.join(QUALITIES)}")
    if rdo:
        s.add_argument("--rdo", type=int, nargs="?", const=26, default=0, metavar="ITERS",
                       help="encoder-side online RDO with ITERS iterations (default 26, as in the paper; "
                            "fewer run faster; see README): smaller files, slower "
                            "encoding, same decoder")


def cmd_demo(args) -> None:
    import ecf_engine
    from .metrics import psnr
    engine = ecf_engine.load(args.model)
    image = np.asarray(Image.open(args.image).convert("RGB"))
    H, W = image.shape[:2]
    engine.encode(image)                           # warm-up: first call pays one-time setup
    t = time.perf_counter()
    bits, enc = engine.encode_with_stats(image)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    out, dec = engine.decode_with_stats(bits)
    t_dec = time.perf_counter() - t
    cfg = engine.cfg
    print(f"model      {engine.name} (id {engine.model_id.hex()}): N={cfg.N} M={cfg.M} N_cs={cfg.N_cs} "
          f"K={cfg.K} L={cfg.L} d_e={cfg.d_e}, lambda={cfg.lmbda}")
    print(f"image      {args.image} ({W}x{H})")
    print(f"size       {len(bits)} bytes = {8 * len(bits) / (H * W):.4f} bpp (float model's estimate "
          f"{enc['estimated_bits'] / (H * W):.4f} bpp; coder vs its integer tables {enc['coder_overhead_percent']:+.2f} %)")
    print(f"PSNR       {psnr(image, out):.2f} dB")
    print(f"encode     {1000 * t_enc:.0f} ms (entropy coding {enc['coding_ms']:.0f} ms)")
    print(f"decode     {1000 * t_dec:.0f} ms (entropy coding {dec['coding_ms']:.0f} ms)")
    print(f"bit-exact  {bool((enc['y_hat'] == dec['y_hat']).all())} (decoded latents equal the encoder's)")
    if args.output:
        Image.fromarray(out).save(args.output)
        print(f"wrote      {args.output}")


def cmd_encode(args) -> None:
    engine = _engine(args.model, args.quality)
    if args.output and len(args.input) > 1:
        raise SystemExit("ecf encode: -o works with one input; several inputs are written beside themselves")
    for name in args.input:
        bits, stats = engine.encode_with_stats(name, rdo_iters=args.rdo)
        out = Path(args.output or Path(name).with_suffix(".ecf"))
        out.write_bytes(bits)
        print(f"{name} -> {out}: {len(bits)} bytes, {stats['bpp']:.4f} bpp, {stats['encode_ms']:.0f} ms")


def cmd_decode(args) -> None:
    import ecf_engine
    bits = Path(args.input).read_bytes()
    t = time.perf_counter()
    image = ecf_engine.decode(bits) if args.model is None else _engine(args.model).decode(bits)
    ms = 1000 * (time.perf_counter() - t)
    out = Path(args.output or Path(args.input).with_suffix(".png"))
    Image.fromarray(image).save(out)
    print(f"{args.input} -> {out}: {image.shape[1]}x{image.shape[0]}, {ms:.0f} ms")


def cmd_info(args) -> None:
    import ecf_engine
    from .weights import shipped_models
    header = ecf_engine.read_header(args.input)          # reads the header bytes only
    info = header.describe()
    path = shipped_models().get(header.model_id)
    info["model"] = path.stem if path else "not a shipped model"
    if header.version >= 3:                                 # rANS substreams: bands of latent rows
        from .engine import _padded
        from .model import PAD
        from .rans import substream_count
        info["y_substreams"] = substream_count(_padded(header.height, header.width)[0] * 4 // PAD)
    print(json.dumps(info, indent=2))


def cmd_eval(args) -> None:
    from .evaluate import evaluate, format_table
    engine = _engine(args.model, args.quality)
    result = evaluate(engine, args.folder, limit=args.limit, rdo_iters=args.rdo)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


def main(argv=None) -> int:
    from .errors import ECFError
    p = argparse.ArgumentParser(prog="ecf", description="eContextformer learned image codec")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="encode + decode the bundled sample image, print bpp / PSNR / time")
    s.add_argument("--image", default=str(SAMPLE))
    s.add_argument("--model", default="default")
    s.add_argument("-o", "--output", help="write the decoded image (PNG)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("encode", help="image(s) -> .ecf")
    s.add_argument("input", nargs="+")
    s.add_argument("-o", "--output")
    _add_model_options(s, rdo=True)
    s.set_defaults(func=cmd_encode)

    s = sub.add_parser("decode", help=".ecf -> PNG")
    s.add_argument("input")
    s.add_argument("-o", "--output")
    s.add_argument("--model", help="weights to decode with (default: the shipped model named in the stream)")
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("info", help="print an .ecf header")
    s.add_argument("input")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("eval", help="bpp / PSNR / MS-SSIM / timings over a folder of images")
    s.add_argument("folder")
    _add_model_options(s, rdo=True)
    s.add_argument("--limit", type=int)
    s.add_argument("--json", help="write per-image and mean results here")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("train", help="train a model (see python -m ecf_engine.train -h)", add_help=False)
    s.set_defaults(func=None)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from .train import main as train_main
        train_main(argv[1:])
        return 0
    args = p.parse_args(argv)
    try:
        args.func(args)
    except (ECFError, OSError) as e:
        print(f"ecf {args.command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
