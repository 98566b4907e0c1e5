"""Rebuild the results tables of README.md and of the weights card from benchmarks/results/*.json
(a maintainers' tool; benchmarks write JSON only, this is the one place that turns it into text).

    python tools/readme_tables.py            # rewrite the blocks between the marker comments
    python tools/readme_tables.py --check    # exit 1 if a block is not what the JSON gives

Inputs: rd-kodak.json (`python -m benchmarks rd`; its "fixed" entry: the retired fixed-rate
models, kept by `--keep-ours-as fixed`), kodak-default.json (`ecf eval`),
roundtrip-default.json (`python -m benchmarks exact`), ceiling-kodak.json (`python -m benchmarks ceiling`) and train-throughput-cpu.json
(`python -m benchmarks train`, the table in docs/training.md). A JSON file names the
command that wrote it in its "command" field; for a file without one the command below is shown.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ecf_engine.bdrate import bd_rate  # noqa: E402
from ecf_engine.config import DEFAULT_QUALITY, lambda_of_quality  # noqa: E402
from ecf_engine.weights import MODELS, SHIPPED  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
CARD = ROOT / "ecf_engine" / "weights" / "README.md"
TRAINING = ROOT / "docs" / "training.md"
COMMANDS = {   # what wrote each file, where the file does not say
    "rd-kodak.json": "python -m benchmarks rd",
    "kodak-default.json": "ecf eval KODAK --json benchmarks/results/kodak-default.json",
    "roundtrip-default.json": "python -m benchmarks exact",
    "train-throughput-cpu.json": "python -m benchmarks train",
    "ceiling-kodak.json": "python -m benchmarks ceiling",
}
CARD_ANCHORS = ("fixed", "webp", "jpeg2000", "hevc", "jpeg420")     # rd-kodak.json entries, BD-rates on the card


def load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `{COMMANDS[name]}` first")
    return json.loads(path.read_text())


def command(name: str, data: dict) -> str:
    return data.get("command", COMMANDS[name])


def _curve(points: list[dict]) -> tuple[list, list]:
    return [p["bpp"] for p in points], [p["psnr"] for p in points]


def _pct(v: float) -> str:
    return f"{v:+.1f} %".replace("-", "−")


def check_shipped(file: str, name: str, model_id: str, variable_rate: bool | None = None) -> None:
    """A results file measured `name` = model_id: it must be what ships now (and, if asked, of
    that kind), or the file is stale."""
    m = MODELS.get(name)
    if m is None or m.id != model_id or (variable_rate is not None and (m.quality_range is not None) != variable_rate):
        raise SystemExit(f"{file} measured {name} = {model_id}, which is not what ships now; "
                         f"rerun `{COMMANDS[file]}`")


def ours_points(rd: dict) -> list[dict]:
    """Our points of rd-kodak.json, lowest quality first, checked to be the model that ships now."""
    points = rd["codecs"]["ours"]["points"]
    for p in points:
        check_shipped("rd-kodak.json", p["setting"], p["model_id"], variable_rate=True)
    return sorted(points, key=lambda p: p["quality"])


def vtm_bd_rate() -> str:
    """BD-rate of the shipped models against VTM, for the README's status box."""
    rd = load("rd-kodak.json")
    return _pct(bd_rate(rd["anchor"]["bpp"], rd["anchor"]["psnr"], *_curve(ours_points(rd))))


def readme_block() -> list[str]:
    rd, ev, rt = load("rd-kodak.json"), load("kodak-default.json"), load("roundtrip-default.json")
    ours = _curve(ours_points(rd))
    codecs = rd["codecs"]

    def bd(anchor: tuple[list, list]) -> str:
        return _pct(bd_rate(anchor[0], anchor[1], *ours))

    default = MODELS[SHIPPED["default"]]
    if ev["model_id"] != default.id or rt["model_id"] != default.id:
        raise SystemExit("kodak-default.json or roundtrip-default.json measured another default model: rerun them")
    exact = sum(p["bit_exact"] for p in rt["per_image"])
    m = ev["mean"]
    rows = [
        ("Kodak BD-rate vs VTM-16.2 intra (PSNR; negative = fewer bits)", bd((rd["anchor"]["bpp"], rd["anchor"]["psnr"])),
         command("rd-kodak.json", rd)),
        (f"Kodak BD-rate vs {codecs['hevc']['label']}", bd(_curve(codecs["hevc"]["points"])), command("rd-kodak.json", rd)),
        (f"Kodak BD-rate vs {codecs['jpeg420']['label']} (Pillow, optimized Huffman tables)",
         bd(_curve(codecs["jpeg420"]["points"])), command("rd-kodak.json", rd)),
        (f"Decode time per Kodak image (768×512), CPU, `{default.name}` at quality "
         f"{ev['encode_options'].get('quality', DEFAULT_QUALITY):g}",
         f"{m['decode_ms']:.0f} ms ({m['decode_coding_ms']:.0f} ms of it entropy decoding)",
         command("kodak-default.json", ev)),
        (f"Bit-exact: `ecf decode` ({rt['threads']['decode']} thread) of `ecf encode` ({rt['threads']['encode']} threads) "
         "= the model's own reconstruction", f"{exact} / {len(rt['per_image'])} images", command("roundtrip-default.json", rt)),
    ]
    lines = ["| | ecf_engine | measured with |", "|---|---|---|"]
    lines += [f"| {a} | {b} | `{c}` |" for a, b, c in rows]
    machines = sorted({rd["machine"], ev["machine"], rt["machine"]})
    lines += ["", f"BD-rates over the default model's qualities 1 … {len(ours[0])} (PCHIP, overlapping PSNR range; "
              f"all curves: [benchmarks/results/rd-kodak.md](benchmarks/results/rd-kodak.md)). "
              f"Machine: {'; '.join(machines)}."]
    return lines


def vr_block() -> list[str]:
    rd = load("rd-kodak.json")
    points = ours_points(rd)
    ours = _curve(points)
    lines = ["| quality | λ (MSE) | Kodak bpp | RGB PSNR | MS-SSIM | decode ms |", "|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['quality']:g} | {lambda_of_quality(p['quality']):g} | {p['bpp']:.4f} | {p['psnr']:.2f} dB | "
                     f"{p['ms_ssim']:.4f} | {p['decode_ms']:.0f} |")
    anchors = [(("the " if rd["codecs"][k].get("kind") == "retired" else "") + rd["codecs"][k]["label"],
                _curve(rd["codecs"][k]["points"])) for k in CARD_ANCHORS if k in rd["codecs"]]
    anchors.append(("VTM-16.2 intra", (rd["anchor"]["bpp"], rd["anchor"]["psnr"])))
    monotonic = rd["codecs"]["ours"].get("rate_monotonic_in_quality")
    lines += ["", "BD-rate (PSNR, over the common range; negative = fewer bits): "
              + "; ".join(f"against {name} {_pct(bd_rate(*a, *ours))}" for name, a in anchors) + ". "
              + ("The rate grows with the quality on every image (quality 1 … 7 in steps of "
                 f"{_step(rd)})." if monotonic else "The rate does NOT grow with the quality on every image.")
              + f" `{command('rd-kodak.json', rd)}` on {rd['machine']}."]
    return lines


def _step(rd: dict) -> str:
    qs = sorted(p["quality"] for p in rd["codecs"]["ours"]["curve"])
    return f"{min(b - a for a, b in zip(qs, qs[1:])):g}"


def card_block() -> list[str]:
    rd = load("rd-kodak.json")
    points = ours_points(rd)
    lines = ["| name | model id | quality | Kodak bpp | RGB PSNR | MS-SSIM |", "|---|---|---|---|---|---|"]
    for name, m in MODELS.items():
        alias = "".join(f" = `{a}`" for a, target in SHIPPED.items() if target == name)
        q = [p for p in points if p["setting"] == name]
        result = (f"{q[0]['bpp']:.3f} – {q[-1]['bpp']:.3f} | {q[0]['psnr']:.2f} – {q[-1]['psnr']:.2f} dB | "
                  f"{q[0]['ms_ssim']:.4f} – {q[-1]['ms_ssim']:.4f}") if q else "not measured yet | | "
        quality = "–".join(f"{v:g}" for v in m.quality_range) if m.quality_range else m.quality or "—"
        lines.append(f"| `{name}`{alias} | `{m.id}` | {quality} | {result} |")
    lines += ["", f"All 24 Kodak images, real file sizes, PSNR averaged per image: "
              f"`{command('rd-kodak.json', rd)}` on {rd['machine']}."]
    return lines


def ceiling_block() -> list[str]:
    c = load("ceiling-kodak.json")
    lines = ["| model | y rounded (coded) | y in half steps | y unquantized |", "|---|---|---|---|"]
    for r in c["rows"]:
        check_shipped("ceiling-kodak.json", r["model"], r["model_id"])
        label = f"`{r['model']}`" + ("" if r["quality"] is None else f", quality {r['quality']:g}")
        lines.append(f"| {label} | " + " | ".join(f"{r[k]['psnr']:.2f} dB" for k in ("rounded", "half steps", "unquantized")) + " |")
    lines += ["", f"Mean RGB PSNR of g_s(g_a(x)) over {len(c['images'])} Kodak images: "
              f"`{command('ceiling-kodak.json', c)}` on {c['machine']}."]
    return lines


def training_block() -> list[str]:
    tt = load("train-throughput-cpu.json")
    old = next(r for r in tt["rows"] if r["path"] == "old")
    lines = ["| path | what it is | s/step | crops/s | vs the old path |", "|---|---|---|---|---|"]
    for r in tt["rows"]:
        if "error" in r:
            lines.append(f"| {r['path']} | {r['about']} | failed | | |")
            continue
        lines.append(f"| {r['path']} | {r['about']} | {r['s_per_step']['median']:.3f} | {r['crops_per_s']:.2f} | "
                     f"{r['crops_per_s'] / old['crops_per_s']:.2f}× |")
    lines += ["", f"Preset {tt['preset']}, {tt['crop']}² crops, {tt['batch_per_process']} per process, median of "
              f"{tt['steps']} steps after {tt['warmup_steps']} warm-up steps (compiling included there): "
              f"`{command('train-throughput-cpu.json', tt)}` on {tt['machine']}, {tt['date'][:10]}."]
    return lines


def replace_block(path: Path, key: str, body: list[str] | str, check: bool) -> bool:
    """Put body (lines, or one inline string) between <!-- key:start --> and <!-- key:end -->
    in path; True if it was up to date."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    inner = body if isinstance(body, str) else "\n".join([""] + body + [""])
    new = head + start + inner + end + tail
    if new != text and not check:
        path.write_text(new)
        print(f"updated {key} in {path.relative_to(ROOT)}")
    return new == text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    args = p.parse_args(argv)
    fresh = [replace_block(README, "vtm-bd-rate", vtm_bd_rate(), args.check),
             replace_block(README, "results", readme_block(), args.check),
             replace_block(CARD, "weights-results", card_block(), args.check),
             replace_block(CARD, "vr-results", vr_block(), args.check),
             replace_block(CARD, "ceiling", ceiling_block(), args.check),
             replace_block(TRAINING, "train-throughput", training_block(), args.check)]
    if args.check and not all(fresh):
        print("README.md, the weights card or docs/training.md is out of date: run python tools/readme_tables.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
