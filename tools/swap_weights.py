"""Ship retrained weights at some quality levels and retire the files they push out
(a maintainers' tool; it edits the repository and stages the changes, you commit).

    python tools/swap_weights.py 1:runs/b-mse0004/best.safetensors 3:runs/b-mse0014/best.safetensors

Per quality q given, with name = QUALITIES[q - 1] (e.g. small-mse0014):

* the dated earlier version `name-<date>.safetensors`, if one is kept, leaves the tree and
  goes into `RETIRED` in ecf_engine/weights.py as `commit:path` of the current commit;
* the current `name.safetensors` becomes the dated version `name-<date><letter>` (when no
  dated version was kept, it is retired directly under that name instead);
* the candidate becomes `name.safetensors`.

Files in PINNED are never retired. Every new `RETIRED` entry is checked to load from git
history with its id, and every file left in the tree to load with its recorded id. Run it
on a tree whose weights are committed: the retired blobs are read from HEAD.
"""
from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecf_engine.weights import QUALITIES, RETIRED, WEIGHTS_DIR, load_weights  # noqa: E402

WEIGHTS_PY = ROOT / "ecf_engine" / "weights.py"
REL = WEIGHTS_DIR.relative_to(ROOT).as_posix()
PINNED = {"small-mse0014-2026-11-24"}      # the format 1 / 2 test streams decode with it


def git(*args: str, binary: bool = False):
    out = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True)
    return out.stdout if binary else out.stdout.decode().strip()


def free_suffix(names: set[str], levels: list[str]) -> str:
    """Today's date, then 'b', 'c', ...: the first that none of these levels has used."""
    day = datetime.date.today().isoformat()
    for letter in [""] + [chr(c) for c in range(ord("b"), ord("z") + 1)]:
        if not any(f"{name}-{day}{letter}" in names for name in levels):
            return day + letter
    raise SystemExit(f"no free suffix left for {day}")


def dated_versions(name: str) -> list[Path]:
    return [p for p in WEIGHTS_DIR.glob(f"{name}-*.safetensors") if p.stem not in PINNED]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("swaps", nargs="+", metavar="Q:FILE", help="quality level and the candidate weights for it")
    args = p.parse_args(argv)
    if git("status", "--porcelain", "--", REL, str(WEIGHTS_PY.relative_to(ROOT))):
        raise SystemExit(f"commit or revert the changes under {REL} and in weights.py first")
    commit = git("rev-parse", "--short", "HEAD")
    swaps = {}
    for item in args.swaps:
        q, _, path = item.partition(":")
        if not q.isdigit() or not 1 <= int(q) <= len(QUALITIES) or not Path(path).is_file():
            raise SystemExit(f"{item!r}: expected Q:FILE with Q in 1..{len(QUALITIES)} and an existing file")
        swaps[QUALITIES[int(q) - 1]] = Path(path)

    names = {n for n, _ in RETIRED.values()} | {f.stem for f in WEIGHTS_DIR.glob("*.safetensors")}
    suffix = free_suffix(names, list(swaps))
    checked = {}                    # every candidate is checked before anything is changed
    for name, cand in swaps.items():
        old, old_id = load_weights(WEIGHTS_DIR / f"{name}.safetensors")
        new, new_id = load_weights(cand)
        if new.cfg != old.cfg:
            raise SystemExit(f"{cand}: config differs from {name} (another preset or lambda?)")
        if new_id == old_id:
            raise SystemExit(f"{cand} is the shipped {name} already")
        dated = dated_versions(name)
        if len(dated) > 1:
            raise SystemExit(f"more than one dated version of {name}: {', '.join(d.name for d in dated)}")
        checked[name] = (old_id, new_id, dated[0] if dated else None,
                         load_weights(dated[0])[1] if dated else None)

    retire, expect = {}, {}
    for name, cand in swaps.items():
        old_id, new_id, dated, dated_id = checked[name]
        current = WEIGHTS_DIR / f"{name}.safetensors"
        if dated:
            retired_name = dated.stem
            retire[dated_id.hex()] = (dated.stem, f"{commit}:{REL}/{dated.name}")
            git("rm", "-q", f"{REL}/{dated.name}")
            git("mv", f"{REL}/{current.name}", f"{REL}/{name}-{suffix}.safetensors")
            expect[f"{name}-{suffix}"] = old_id
        else:
            retired_name = f"{name}-{suffix}"
            retire[old_id.hex()] = (retired_name, f"{commit}:{REL}/{current.name}")
        shutil.copyfile(cand, current)
        git("add", f"{REL}/{current.name}")
        expect[name] = new_id
        print(f"{name}: {old_id.hex()} -> {new_id.hex()}; "
              + (f"old kept as {name}-{suffix}; " if dated else "") + f"retired {retired_name}")

    text = WEIGHTS_PY.read_text()
    block = re.search(r"^RETIRED = \{\n.*?^\}\n", text, flags=re.S | re.M)
    lines = "".join(f'    "{mid}": ("{n}", "{blob}"),\n' for mid, (n, blob) in retire.items())
    WEIGHTS_PY.write_text(text[:block.end() - 2] + lines + text[block.end() - 2:])
    git("add", str(WEIGHTS_PY.relative_to(ROOT)))

    with tempfile.TemporaryDirectory() as tmp:
        for mid, (n, blob) in retire.items():
            f = Path(tmp) / f"{n}.safetensors"
            f.write_bytes(git("show", blob, binary=True))
            if load_weights(f)[1].hex() != mid:
                raise SystemExit(f"retired {n}: {blob} does not load as {mid}")
    for f in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        mid = load_weights(f)[1]
        if f.stem in expect and expect[f.stem] != mid:
            raise SystemExit(f"{f.name} loads as {mid.hex()}, expected {expect[f.stem].hex()}")
    total = sum(f.stat().st_size for f in WEIGHTS_DIR.glob("*.safetensors"))
    print(f"checked: {len(retire)} retired blobs load with their ids, every shipped file loads; "
          f"weights now {total / 1e6:.1f} MB. Staged; review with git diff --cached and commit.")


if __name__ == "__main__":
    main()
