"""Print the weights/manifest.json entry for a weights file that is to ship (maintainers' tool).

    python tools/manifest_entry.py runs/x/best.safetensors --name small-mse0014 --quality 3
    python tools/manifest_entry.py runs/vr/best.safetensors --name small-vr --quality-range 1 7 --status preview

Copy the file to ecf_engine/weights/<name>.safetensors and put the printed entry into the
manifest's "models" list (replacing the entry of the same name); that is all shipping takes.
Keep candidates outside the repository until they ship: every committed weights file stays
in git's history for good.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecf_engine.weights import STATUSES, manifest_entry  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file", type=Path)
    p.add_argument("--name", required=True, help="the name it ships as, e.g. small-mse0014")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int, help="its place on the fixed-rate ladder (1 = smallest files)")
    rate.add_argument("--quality-range", type=float, nargs=2, metavar=("LO", "HI"),
                      help="the qualities a variable-rate model covers")
    p.add_argument("--status", choices=STATUSES, default="shipped")
    args = p.parse_args(argv)
    entry = manifest_entry(args.file, args.name, quality=args.quality,
                           quality_range=tuple(args.quality_range) if args.quality_range else None,
                           status=args.status)
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
