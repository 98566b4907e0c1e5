"""Rate–distortion on Kodak: our models against classical codecs and the published VTM-16.2
intra anchor, with Bjøntegaard delta rates.

    python -m benchmarks rd                                  # everything, 24 Kodak images (long)
    python -m benchmarks rd --limit 2 --codecs jpeg420,webp  # quick look (writes rd-kodak-limit2.*)
    python -m benchmarks rd --skip-ours --codecs hevc        # re-measure HEVC only, keep the rest
    python -m benchmarks rd --skip-ours --codecs none --rdo 26   # add our models with encoder-side oRDO
    python -m benchmarks rd --from-json                      # rebuild the markdown and plot from the JSON
    python -m benchmarks rd --codecs none --keep-ours-as fixed   # new shipped models; the old entry
                                                             # of ours stays, as 'fixed', for comparison
    python -m benchmarks rd --codecs none --out /tmp/cand --models runs/x/best.safetensors --jobs 2
                                                             # a candidate, for `python -m benchmarks compare`

Our models: a variable-rate model (engine.variable_rate) is coded at every --qualities
point (default Q = 1..7, the paper's lambdas) for the BD-rates, and for the plot also at
fractional Q in --curve-step steps; a fixed-rate model gives one point. By default the
shipped models (weights/manifest.json, status "shipped"). `--rdo N` adds a second entry of
ours ("ours-rdo"), the same models and decoder with N iterations of encoder-side oRDO
(ecf_engine.rdo; ~30 s per Kodak image at 26 iterations on 2 CPU cores).

Writes benchmarks/results/rd-kodak.json (per codec and setting: mean bpp / PSNR / MS-SSIM
and per-image rows), rd-kodak.md (BD-rate tables) and rd-kodak.png (PSNR vs bpp; needs
matplotlib). Conventions (CompressAI's): bpp = 8 * file bytes / pixels from the real
encoded bytes; RGB PSNR per image, then averaged; MS-SSIM from ecf_engine.metrics. Our
models go through the real encode -> bytes -> decode path (ecf_engine.evaluate). A codec
re-measured in a run replaces its entry in an existing JSON measured on the same images;
the others are kept.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ecf_engine.bdrate import bd_psnr, bd_rate, pchip

from . import classical_codecs
from .harness import KODAK, RESULTS, pyplot, rgb_image, write_result

OURS = "ours"
OURS_RDO = "ours-rdo"          # the same models, encoded with oRDO (--rdo N)
# Published VTM-16.2 intra anchor on Kodak, mean over the 24 images (DESIGN.md section 1)
VTM = {"label": "VTM-16.2 intra (published anchor)",
       "bpp": [0.0482, 0.1125, 0.2458, 0.4905, 0.8748, 1.4308, 2.3246, 3.6326],
       "psnr": [26.14, 28.49, 31.20, 34.26, 37.42, 40.42, 43.51, 46.59]}
REFERENCE = "jpeg420"          # the second BD-rate anchor: the codec everyone has
QUALITIES = (1, 2, 3, 4, 5, 6, 7)   # a variable-rate model's BD-rate points: the paper's lambdas
CURVE_STEP = 0.5               # and its plotted curve, at fractional qualities in these steps


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


# --- measuring -----------------------------------------------------------------------------

def run_classical(codec, described: str, files: list[Path], with_ms_ssim: bool) -> dict:
    """Every image through encode -> bytes -> decode at every setting of the codec (the probe
    in available_codecs has already warmed it up)."""
    from ecf_engine.metrics import ms_ssim, psnr
    per_setting = {s: [] for s in codec.settings}
    t0 = time.perf_counter()
    for path in tqdm(files, desc=codec.name, dynamic_ncols=True):
        rgb = rgb_image(path)
        for setting in codec.settings:
            t = time.perf_counter()
            data = codec.encode(rgb, setting)
            t_enc = time.perf_counter()
            out = codec.decode(data)
            t_dec = time.perf_counter()
            if out.shape != rgb.shape:
                raise RuntimeError(f"{codec.label} decoded {path.name} to {out.shape}, expected {rgb.shape}")
            per_setting[setting].append({
                "image": path.name, "bytes": len(data), "bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1]),
                "psnr": psnr(rgb, out), "ms_ssim": ms_ssim(rgb, out) if with_ms_ssim else None,
                "encode_ms": 1000 * (t_enc - t), "decode_ms": 1000 * (t_dec - t_enc)})
    points = [{"setting": s, **{k: _mean(rows, k) for k in ("bpp", "psnr", "ms_ssim", "encode_ms", "decode_ms")},
               "per_image": rows} for s, rows in per_setting.items()]
    return {"label": codec.label, "kind": "classical", "encoder": described, "setting": codec.setting,
            "wall_s": time.perf_counter() - t0, "points": sorted(points, key=lambda p: p["bpp"])}


def quality_grid(step: float) -> list[float]:
    """1, 1 + step, ..., 7: the qualities of a variable-rate model's plotted curve."""
    n = round((QUALITIES[-1] - QUALITIES[0]) / step)
    return [round(QUALITIES[0] + i * step, 6) for i in range(n + 1)]


def _point(name: str, quality: float | None, result: dict) -> dict:
    m = result["mean"]
    return {"setting": name, "quality": quality, "model_id": result["model_id"], "bpp": m["bpp"], "psnr": m["psnr"],
            "ms_ssim": m["ms_ssim"], "encode_ms": m["encode_ms"], "decode_ms": m["decode_ms"],
            "all_bit_exact": m["all_bit_exact"], "warmup_ms": result["warmup_ms"], "per_image": result["per_image"]}


def _evaluate(engine, files: list[Path], quality: float | None, rdo_iters: int) -> dict:
    from ecf_engine.evaluate import evaluate
    result = evaluate(engine, files, rdo_iters=rdo_iters, progress=False,
                      encode_options=None if quality is None else {"quality": quality})
    if result.get("skipped"):
        raise SystemExit(f"{engine.name}: images could not be coded: {result['skipped']}")
    return result


def load_models(names: list[str]) -> list:
    """Engines for the names; one variable-rate model or any number of fixed-rate ones."""
    import ecf_engine
    from ecf_engine.weights import SHIPPED
    engines = []
    for name in names:
        engine = ecf_engine.load(name)
        engine.name = SHIPPED.get(name, name)          # the model's own name, not an alias
        engines.append(engine)
    if any(e.variable_rate for e in engines) and len(engines) > 1:
        raise SystemExit("--models: give one variable-rate model, or fixed-rate models only "
                         "(measure the others in another run with --out)")
    return engines


_worker_engines: dict = {}       # in a --jobs worker process: name -> engine


def _measure(name: str, quality: float | None, files: list[Path], rdo_iters: int) -> dict:
    """One point, in a worker process of one thread (run_ours with jobs > 1)."""
    import torch

    import ecf_engine
    torch.set_num_threads(1)
    if name not in _worker_engines:
        _worker_engines[name] = ecf_engine.load(name)
        _worker_engines[name].name = name
    return _point(name, quality, _evaluate(_worker_engines[name], files, quality, rdo_iters))


def run_ours(engines: list, files: list[Path], rdo_iters: int = 0, qualities=QUALITIES,
             curve_step: float = CURVE_STEP, jobs: int = 1) -> dict:
    """Our models through ecf_engine.evaluate: real bitstreams, decoded by the engine. A
    variable-rate model: one point per quality, and a denser curve for the plot. jobs > 1:
    the points are measured in that many processes of one thread each, side by side."""
    t0 = time.perf_counter()
    tasks = []                               # (engine, quality or None, a BD-rate point?)
    for engine in engines:
        if not engine.variable_rate:
            tasks.append((engine, None, True))
            continue
        extra = [q for q in quality_grid(curve_step) if q not in qualities] if curve_step else []
        tasks += [(engine, float(q), q in qualities) for q in list(qualities) + extra]
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_measure, e.name, q, files, rdo_iters) for e, q, _ in tasks]
            results = [f.result() for f in tqdm(futures, desc="ours", dynamic_ncols=True)]
    else:
        results = [_point(e.name, q, _evaluate(e, files, q, rdo_iters))
                   for e, q, _ in tqdm(tasks, desc="ours", dynamic_ncols=True)]
    points = [p for p, (_, _, is_point) in zip(results, tasks) if is_point]
    curve = [p for p, (_, _, is_point) in zip(results, tasks) if not is_point]
    variable = any(e.variable_rate for e in engines)
    label = "ours (eContextformer" + (", variable rate)" if variable else ")")
    encoder = "ecf_engine, " + (f"variable-rate model {engines[0].name}, quality Q" if variable else
                                "fixed-rate models")
    if rdo_iters:
        label, encoder = f"{label} + oRDO ({rdo_iters} it.)", f"{encoder}, `ecf encode --rdo {rdo_iters}`"
    entry = {"label": label, "kind": "ours", "encoder": encoder, "rdo_iters": rdo_iters,
             "setting": "quality" if variable else "model", "variable_rate": variable,
             "models": [e.name for e in engines], "jobs": jobs, "wall_s": time.perf_counter() - t0,
             "points": sorted(points, key=lambda p: p["bpp"])}
    if variable:
        entry["curve"] = sorted([{**{k: p[k] for k in ("quality", "bpp", "psnr", "ms_ssim")},
                                  "per_image_bpp": {r["image"]: r["bpp"] for r in p["per_image"]}}
                                 for p in points + curve], key=lambda p: p["quality"])
        entry["rate_monotonic_in_quality"] = rate_monotonic(entry["curve"])
    return entry


def rate_monotonic(curve: list[dict]) -> bool:
    """True if every image's bpp grows strictly with the quality along the curve."""
    curve = sorted(curve, key=lambda p: p["quality"])
    return all(a["per_image_bpp"][im] < b["per_image_bpp"][im]
               for a, b in zip(curve, curve[1:]) for im in a["per_image_bpp"])


def keep_ours_as(codecs: dict, key: str) -> None:
    """Moves the entry of ours that an earlier run measured to `key`, labelled as retired, so
    that the models replacing it are compared with it (BD-rate, plot) in the same report."""
    if OURS not in codecs:
        raise SystemExit(f"--keep-ours-as {key}: the results hold no entry of ours to keep")
    e = codecs.pop(OURS)
    kind = "variable-rate model" if "curve" in e else "fixed-rate models"
    codecs[key] = {**e, "label": f"retired {kind} of ours", "kind": "retired"}


def drop_stale_rdo(codecs: dict) -> None:
    """An oRDO entry carried over from an earlier run is only comparable with the plain one
    if it coded the same models: drop it (with a message) when the model ids differ."""
    if OURS in codecs and OURS_RDO in codecs:
        ids = [[p["model_id"] for p in codecs[k]["points"]] for k in (OURS, OURS_RDO)]
        if sorted(set(ids[0])) != sorted(set(ids[1])):
            print("dropping the oRDO entry: it was measured with other models than ours; "
                  "measure it again with --rdo N")
            del codecs[OURS_RDO]


# --- BD-rates ------------------------------------------------------------------------------

def _curve(entry: dict) -> tuple[list, list]:
    return [p["bpp"] for p in entry["points"]], [p["psnr"] for p in entry["points"]]


def _bd_value(anchor: tuple[list, list], entry: dict) -> tuple[float | None, str]:
    """BD-rate (PCHIP) in % of a codec's points against an anchor curve and the PSNR range
    it covers, or (None, why it cannot be computed)."""
    bpp, ps = _curve(entry)
    if len(bpp) < 4:
        return None, f"needs ≥ 4 rate points (has {len(bpp)})"
    lo, hi = max(min(anchor[1]), min(ps)), min(max(anchor[1]), max(ps))
    if lo >= hi:
        return None, "no overlap"
    return bd_rate(anchor[0], anchor[1], bpp, ps), f"{lo:.1f}–{hi:.1f} dB"


def _bd(anchor: tuple[list, list], entry: dict, show_range: bool = True) -> str:
    """BD-rate as table text."""
    value, note = _bd_value(anchor, entry)
    if value is None:
        return note
    return f"{value:+.1f} % ({note})" if show_range else f"{value:+.1f} %"


def _bd_psnr(anchor: tuple[list, list], entry: dict) -> str:
    bpp, ps = _curve(entry)
    if len(bpp) < 4:
        return "needs ≥ 4 rate points"
    try:
        return f"{bd_psnr(anchor[0], anchor[1], bpp, ps):+.2f} dB"
    except ValueError:                 # the log-rate ranges do not overlap
        return "no overlap"


def bd_table(results: dict) -> list[str]:
    codecs = results["codecs"]
    vtm = (VTM["bpp"], VTM["psnr"])
    ref = _curve(codecs[REFERENCE]) if REFERENCE in codecs else None
    lines = ["| codec | points | bpp range | BD-rate vs VTM-16.2 (PSNR range) | BD-PSNR vs VTM | BD-rate vs JPEG 4:2:0 |",
             "|---|---|---|---|---|---|"]
    for key, e in codecs.items():
        bpps = [p["bpp"] for p in e["points"]]
        label = f"**{e['label']}**" if key in (OURS, OURS_RDO) else e["label"]
        vs_ref = "—" if key == REFERENCE or ref is None else _bd(ref, e, show_range=False)
        lines.append(f"| {label} | {len(bpps)} | {min(bpps):.3f}–{max(bpps):.3f} | {_bd(vtm, e)} | "
                     f"{_bd_psnr(vtm, e)} | {vs_ref} |")
    return lines


def psnr_at(entry: dict, bpp: float) -> float:
    """A codec's PSNR at `bpp`: PCHIP of PSNR over log-bpp through its points (NaN outside them)."""
    pts = sorted(entry["points"], key=lambda q: q["bpp"])
    return float(pchip(np.log([q["bpp"] for q in pts]), [q["psnr"] for q in pts], math.log(bpp)))


def point_label(p: dict) -> str:
    """'small-mse0014', or 'small-vr Q=3' for a point of a variable-rate model."""
    return p["setting"] if p.get("quality") is None else f"{p['setting']} Q={p['quality']:g}"


def ours_rows(results: dict, times: bool = True, key: str = OURS) -> list[str]:
    """Each of our rate points (of entry `key`) against VTM (rate at equal PSNR) and JPEG 4:2:0
    (PSNR at equal rate); times=False leaves out the encode / decode wall times."""
    ours = results["codecs"].get(key)
    if not ours:
        return []
    ref = results["codecs"].get(REFERENCE)
    log_vtm = np.log(VTM["bpp"])
    time_cols = " encode ms | decode ms |" if times else ""
    lines = [f"| model | bpp | RGB PSNR | MS-SSIM |{time_cols} VTM bpp at this PSNR | rate vs VTM | "
             "JPEG 4:2:0 PSNR at this bpp |", "|---" * (9 if times else 7) + "|"]
    for p in ours["points"]:
        vtm_bpp = float(np.exp(pchip(VTM["psnr"], log_vtm, p["psnr"])))
        inside = math.isfinite(vtm_bpp)        # NaN: our PSNR is outside the anchor's range
        vtm_text = f"{vtm_bpp:.4f}" if inside else "outside its range"
        vs = f"{100 * (p['bpp'] / vtm_bpp - 1):+.1f} %" if inside else "—"
        jpeg = "—"
        if ref:
            j = psnr_at(ref, p["bpp"])
            jpeg = f"{j:.2f} dB" if math.isfinite(j) else "outside its range"
        timings = f" {p['encode_ms']:.0f} | {p['decode_ms']:.0f} |" if times else ""
        lines.append(f"| {point_label(p)} | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |{timings} "
                     f"{vtm_text} | {vs} | {jpeg} |")
    return lines


# The targets: beat these at every one of our rate points (PSNR at equal rate) ...
BEAT_EVERYWHERE = ["jpeg420", "jpeg444", "webp", "jpeg2000"]
# ... and this one in BD-rate
BEAT_BD = "hevc"


def targets_rows(results: dict, key: str = OURS) -> list[str]:
    """The targets as a table: our PSNR (entry `key`) minus each codec's at our rate points,
    and our BD-rate against HEVC intra; 'met' only where every margin is positive."""
    codecs = results["codecs"]
    ours = codecs.get(key)
    if not ours:
        return []
    lines = ["| target | our PSNR minus theirs at equal rate, per rate point (lowest rate first) | met |",
             "|---|---|---|"]
    for key in BEAT_EVERYWHERE:
        if key not in codecs:
            lines.append(f"| beat {key} at every rate | not measured | — |")
            continue
        margins = [p["psnr"] - psnr_at(codecs[key], p["bpp"]) for p in sorted(ours["points"], key=lambda q: q["bpp"])]
        met = all(math.isfinite(m) and m > 0 for m in margins)
        text = ", ".join(f"{m:+.2f} dB" if math.isfinite(m) else "outside its range" for m in margins)
        lines.append(f"| beat {codecs[key]['label']} at every rate | {text} | {'yes' if met else 'no'} |")
    for retired in [k for k, e in codecs.items() if e.get("kind") == "retired"]:
        value, note = _bd_value(_curve(codecs[retired]), ours)
        text = note if value is None else f"{value:+.1f} % ({note})"
        met = value is not None and value <= 0
        lines.append(f"| BD-rate ≤ 0 vs the {codecs[retired]['label']} | BD-rate {text} | {'yes' if met else 'no'} |")
    if BEAT_BD in codecs:
        value, note = _bd_value(_curve(codecs[BEAT_BD]), ours)
        text = note if value is None else f"{value:+.1f} %"
        met = value is not None and value < 0
        lines.append(f"| BD-rate < 0 vs {codecs[BEAT_BD]['label']} | BD-rate {text} | {'yes' if met else 'no'} |")
    return lines


# --- reports -------------------------------------------------------------------------------

def run_text(results: dict) -> str:
    """How long the last run took; the entries it did not re-measure came from earlier runs."""
    text = f"{results['wall_s'] / 60:.0f} min"
    if "carried_over_from" in results:
        text += " for the entries it re-measured, the others carried over from earlier runs"
    return text


def rdo_gain(results: dict) -> list[str]:
    """What oRDO buys: BD-rate and BD-PSNR of the oRDO entry against plain encoding of the
    same models, as a paragraph; empty without both entries."""
    codecs = results["codecs"]
    if OURS not in codecs or OURS_RDO not in codecs:
        return []
    plain, rdo = _curve(codecs[OURS]), codecs[OURS_RDO]
    return [f"{rdo['label']} against plain encoding of the same models: BD-rate {_bd(plain, rdo)}, "
            f"BD-PSNR {_bd_psnr(plain, rdo)}.", ""]


def ours_keys(results: dict) -> list[str]:
    """Our entries in the results: plain, then with oRDO where measured."""
    return [k for k in (OURS, OURS_RDO) if k in results["codecs"]]


def markdown(results: dict, png_name: str) -> str:
    out = ["# Rate–distortion on Kodak", "",
           f"`{results.get('command', 'python -m benchmarks rd')}`: {results['images']} images from "
           f"`{results['folder']}`; machine: {results['machine']}; wall time {run_text(results)}.", "",
           "bpp from the real encoded bytes; RGB PSNR per image, then averaged over images; "
           "VTM-16.2 is the published anchor (DESIGN.md §1), not re-encoded here. Encode / decode ms are "
           "wall times per image on a possibly busy machine, for orientation only "
           "(`python -m benchmarks speed` measures speed).", "",
           f"![PSNR vs bpp]({png_name})", "",
           "## BD-rates", "",
           "Bjøntegaard delta rate, log-rate interpolated over PSNR with a monotone piecewise cubic "
           "(PCHIP, Fritsch–Carlson, as in the JVET common test conditions) and averaged over the PSNR "
           "range both curves cover (shown in brackets); negative = fewer bits than the anchor for the "
           "same PSNR. BD-PSNR: PSNR over log-rate, same interpolation.", ""]
    out += bd_table(results) + [""] + rdo_gain(results)
    for key in ours_keys(results):
        e = results["codecs"][key]
        out += [f"## Our rate points: {e['label']}", "",
                "Rate vs VTM: our bpp against the anchor's bpp at our PSNR (PCHIP of log-bpp over PSNR through the "
                "anchor points). JPEG 4:2:0 at this bpp: PCHIP of PSNR over log-bpp through the measured JPEG points.",
                ""] + ours_rows(results, key=key) + [""]
        if "rate_monotonic_in_quality" in e:
            qs = ", ".join(f"{p['quality']:g}" for p in e["curve"])
            out += [f"Rate grows with the quality on every image (Q = {qs}): "
                    f"{'yes' if e['rate_monotonic_in_quality'] else 'no'}.", ""]
        out += [f"## Targets: {e['label']}", "",
                "Margins from the same PCHIP interpolation; positive = ours is better.", ""]
        out += targets_rows(results, key) + [""]
    out += ["## Encoders", ""]
    for key, e in results["codecs"].items():
        settings = ", ".join(point_label(p) if key in (OURS, OURS_RDO) else str(p["setting"]) for p in e["points"])
        out.append(f"* **{e['label']}** (`{key}`, {e['setting']} {settings}): {e['encoder']}; {e['wall_s']:.0f} s")
    out += ["", "## All points (means over images)", ""]
    if any(p["ms_ssim"] is None for e in results["codecs"].values() for p in e["points"]):
        out += ["MS-SSIM —: not measured for that codec (`--no-ms-ssim`).", ""]
    out += ["| codec | setting | bpp | RGB PSNR | MS-SSIM | encode ms | decode ms |", "|---|---|---|---|---|---|---|"]
    for key, e in results["codecs"].items():
        for p in e["points"]:
            ms = "—" if p["ms_ssim"] is None else f"{p['ms_ssim']:.4f}"
            setting = point_label(p) if key in (OURS, OURS_RDO) else p["setting"]
            out.append(f"| {e['label']} | {setting} | {p['bpp']:.4f} | {p['psnr']:.2f} | {ms} | "
                       f"{p['encode_ms']:.0f} | {p['decode_ms']:.0f} |")
    return "\n".join(out) + "\n"


def plot(results: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.plot(VTM["bpp"], VTM["psnr"], "k--", marker="s", ms=4, lw=1.5, label=VTM["label"])
    for key, e in results["codecs"].items():
        bpp, ps = _curve(e)
        if key in (OURS, OURS_RDO):
            color, ls = ("red", "-") if key == OURS else ("darkred", "--")
            if "curve" in e:           # the variable-rate curve through fractional Q, stars at integer Q
                ax.plot([p["bpp"] for p in e["curve"]], [p["psnr"] for p in e["curve"]], color=color, ls=ls,
                        lw=2.5, zorder=5, label=e["label"])
                ax.plot(bpp, ps, color=color, ls="none", marker="*", ms=12, zorder=6)
                for p in e["points"]:
                    ax.annotate(f"Q{p['quality']:g}", (p["bpp"], p["psnr"]), textcoords="offset points",
                                xytext=(4, -11), fontsize=7, color=color)
            else:
                ax.plot(bpp, ps, color=color, ls=ls, marker="*", ms=12, lw=2.5, zorder=5, label=e["label"])
        elif e.get("kind") == "retired":
            ax.plot(bpp, ps, color="gray", ls=":", marker="*", ms=8, lw=1.5, label=e["label"])
        else:
            ax.plot(bpp, ps, marker="o", ms=3, lw=1, label=e["label"])
    every = [p["bpp"] for e in results["codecs"].values() for p in e["points"]]
    ax.set_xlim(0, min(max(every) * 1.05, 2.5))
    ax.set_ylim(20, 46)
    ax.set_xlabel("bits per pixel (real file sizes)")
    ax.set_ylabel("RGB PSNR (dB), mean over images")
    ax.set_title(f"Kodak ({results['images']} images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


# --- command line --------------------------------------------------------------------------

def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"--qualities: {text!r} is not a comma-separated list of numbers") from None
    if not all(QUALITIES[0] <= v <= QUALITIES[-1] for v in values):
        raise SystemExit(f"--qualities: every quality must lie in [{QUALITIES[0]}, {QUALITIES[-1]}], got {text}")
    return sorted(set(values))


def shipped_models() -> list[str]:
    """The models that ship (weights/manifest.json), lowest rate first."""
    from ecf_engine.weights import MODELS
    shipped = [m for m in MODELS.values() if m.status == "shipped" and (m.quality is not None or m.quality_range)]
    return [m.name for m in sorted(shipped, key=lambda m: m.quality or 0)]


def add_arguments(p) -> None:
    p.add_argument("--folder", type=Path, default=KODAK, help="images to code (default: %(default)s)")
    p.add_argument("--codecs", help="comma-separated classical codecs (default: all): "
                   + ", ".join(c.name for c in classical_codecs.all_codecs()) + "; 'none' for none")
    p.add_argument("--models", help="comma-separated models of ours: shipped names, .safetensors paths or presets "
                   "(default: the shipped models)")
    p.add_argument("--qualities", default=",".join(map(str, QUALITIES)),
                   help="a variable-rate model's BD-rate points (default: %(default)s)")
    p.add_argument("--curve-step", type=float, default=CURVE_STEP,
                   help="a variable-rate model is also coded at Q = 1, 1+step, ..., 7 for the plotted curve "
                   "(default %(default)s; 0: only --qualities)")
    p.add_argument("--skip-ours", action="store_true", help="do not run our models (keeps them from the JSON)")
    p.add_argument("--keep-ours-as", metavar="KEY",
                   help="before measuring ours, keep the JSON's entry of ours under KEY, as retired models "
                   "to compare with (when new models replace the shipped ones)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="measure our points in N processes of one thread each, side by side (default 1: "
                   "in this process, with torch's threads)")
    p.add_argument("--rdo", type=int, default=0, metavar="ITERS",
                   help="also run our models with ITERS oRDO iterations (a second entry, 'ours-rdo')")
    p.add_argument("--no-ms-ssim", action="store_true",
                   help="skip MS-SSIM for the classical codecs (about 0.35 s per decoded Kodak image on 2 CPU cores)")
    p.add_argument("--limit", type=int, help="first N images only; results go to rd-kodak-limitN.*")
    p.add_argument("--out", help="output prefix (default benchmarks/results/rd-kodak)")
    p.add_argument("--from-json", action="store_true", help="no encoding: rebuild the markdown and plot from the JSON")


def run(args) -> int:
    from ecf_engine.train import image_files
    wanted = None if args.codecs is None else [] if args.codecs == "none" else args.codecs.split(",")
    if args.jobs < 1:
        raise SystemExit("--jobs must be >= 1")
    if args.rdo < 0:
        raise SystemExit("--rdo: the number of oRDO iterations must be >= 0")
    if args.limit is not None and args.limit < 1:
        raise SystemExit("--limit must be >= 1")
    if args.curve_step < 0 or (args.curve_step and (QUALITIES[-1] - QUALITIES[0]) / args.curve_step > 60):
        raise SystemExit("--curve-step must be 0 or between 0.1 and 6")
    qualities = _floats(args.qualities)
    known = {c.name for c in classical_codecs.all_codecs()}
    if args.keep_ours_as and (args.skip_ours or args.from_json or args.keep_ours_as in known | {OURS, OURS_RDO}):
        raise SystemExit("--keep-ours-as KEY needs a run of ours (no --skip-ours / --from-json) and a KEY "
                         f"that is not ours, ours-rdo or a codec's name, got {args.keep_ours_as!r}")
    if wanted and set(wanted) - known:
        raise SystemExit(f"unknown codec(s) {', '.join(sorted(set(wanted) - known))}; known: {', '.join(sorted(known))}")

    default_out = RESULTS / ("rd-kodak" if args.limit is None else f"rd-kodak-limit{args.limit}")
    prefix = Path(args.out) if args.out else default_out
    json_path, md_path, png_path = (prefix.with_name(prefix.name + ext) for ext in (".json", ".md", ".png"))
    old = json.loads(json_path.read_text()) if json_path.exists() else None

    if args.from_json:
        if old is None:
            raise SystemExit(f"--from-json: {json_path} does not exist")
        results = old
    else:
        files = image_files(args.folder)[:args.limit]
        if not files:
            raise SystemExit(f"no images in {args.folder}")
        names = [f.name for f in files]
        results = {"folder": str(args.folder), "images": len(files), "image_names": names, "anchor": VTM,
                   "codecs": {}}
        if old and old.get("image_names") == names:     # keep what this run does not re-measure
            results["codecs"] = old["codecs"]
            results["carried_over_from"] = old["date"]
        t0 = time.perf_counter()
        if not args.skip_ours or args.rdo > 0:
            models = args.models.split(",") if args.models else shipped_models()
            engines = load_models(models)
            if not args.skip_ours:
                if args.keep_ours_as:
                    keep_ours_as(results["codecs"], args.keep_ours_as)
                print(f"== ours: {', '.join(models)}", flush=True)
                results["codecs"][OURS] = run_ours(engines, files, 0, qualities, args.curve_step, args.jobs)
            if args.rdo > 0:
                print(f"== ours + oRDO ({args.rdo} iterations): {', '.join(models)}", flush=True)
                results["codecs"][OURS_RDO] = run_ours(engines, files, args.rdo, qualities, 0, args.jobs)
        if wanted != []:
            for codec, described in classical_codecs.available_codecs(wanted):
                print(f"== {codec.label}: {described}", flush=True)
                results["codecs"][codec.name] = run_classical(codec, described, files, not args.no_ms_ssim)
        results["wall_s"] = time.perf_counter() - t0
        drop_stale_rdo(results["codecs"])
        results["codecs"] = dict(sorted(results["codecs"].items(), key=lambda kv: (kv[0] != OURS, kv[0] != OURS_RDO)))
        write_result(json_path, results)
        results = json.loads(json_path.read_text())

    md_path.write_text(markdown(results, png_path.name))
    print(f"wrote {md_path}")
    plot(results, png_path)
    print("\n".join(bd_table(results)))
    return 0
