"""Weights files: safetensors only (no pickle), config stored inside, content-hash model id.

Besides the network tensors a file may hold the coder's z frequency table
(`coder.z_freqs`, int32 (N, 2R+1)). It is computed from the prior in float64 when the
file is written, and pinned from then on: every decoder uses the stored integers instead
of recomputing them with its own CPU's math library and torch version. It is not part of
the model id (which hashes the networks and the config only).

What ships is listed in weights/manifest.json: per model its name, id, lambda or quality
(range), file size, sha256 and status. A shipped file is checked against its entry when it
is loaded; a stream whose model id is not in the manifest raises UnknownModelError.
weights/retired.json lists the models that once shipped (name, id, and where the file lies
in the project's git history), so that the error names the model of an old stream."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import Config, PRESETS
from .errors import WeightsError
from .model import ECFModel

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
RETIRED = WEIGHTS_DIR / "retired.json"
Z_TABLE = "coder.z_freqs"
STATUSES = ("shipped", "preview")     # preview: loadable and decodable, but not on the quality ladder


@dataclass(frozen=True)
class ShippedModel:
    """One entry of weights/manifest.json: a weights file that ships with the package."""
    name: str
    id: str                                   # model id, 16 hex digits (see model_id)
    path: Path
    size: int                                 # bytes of the file
    sha256: str                               # of the whole file
    status: str = "shipped"
    lmbda: float | None = None                # the lambda of a fixed-rate model
    quality: int | None = None                # its place on the --quality ladder (1 = smallest files)
    quality_range: tuple[float, float] | None = None   # the quality range of a variable-rate model


def read_manifest(path: str | Path = MANIFEST) -> tuple[dict[str, ShippedModel], dict[str, str]]:
    """(models by name, aliases such as {"default": name}) from a manifest file, validated.

    Adding a model to the package is one entry in "models" (tools/manifest_entry.py writes it)
    and its file beside the manifest."""
    path = Path(path).resolve()
    try:
        raw = json.loads(path.read_text())
        models = {}
        for e in raw["models"]:
            qr = e.get("quality_range")
            m = ShippedModel(name=e["name"], id=e["id"], path=path.parent / e["file"], size=int(e["size"]),
                             sha256=e["sha256"], status=e.get("status", "shipped"), lmbda=e.get("lambda"),
                             quality=e.get("quality"), quality_range=tuple(qr) if qr is not None else None)
            if m.name in models or m.status not in STATUSES or not re.fullmatch("[0-9a-f]{16}", m.id):
                raise ValueError(f"entry {m.name!r}: duplicate name, unknown status or bad id")
            if qr is not None and not (len(qr) == 2 and qr[0] < qr[1]):
                raise ValueError(f"entry {m.name!r}: quality_range must be [lowest, highest]")
            models[m.name] = m
        aliases = dict(raw.get("aliases", {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: not a valid weights manifest ({e})") from e
    ids = [m.id for m in models.values()]
    ladder = sorted(m.quality for m in models.values() if m.quality is not None and m.status == "shipped")
    if len(set(ids)) != len(ids) or ladder != list(range(1, len(ladder) + 1)):
        raise WeightsError(f"{path}: model ids must be unique and qualities run 1..n without gaps")
    if any(target not in models for target in aliases.values()):
        raise WeightsError(f"{path}: an alias names a model that is not in the manifest")
    return models, aliases


MODELS, SHIPPED = read_manifest()
# The fixed-rate ladder, lowest rate first: `--quality q` picks QUALITIES[q - 1].
QUALITIES = [m.name for m in sorted(MODELS.values(), key=lambda m: m.quality or 0)
             if m.quality is not None and m.status == "shipped"]
_verified: dict[Path, tuple[int, int]] = {}   # path -> (size, mtime_ns) of a file whose sha256 matched


def quality_model(quality: int) -> str:
    """Name of the shipped model for quality 1..len(QUALITIES) (1 = smallest files)."""
    if not QUALITIES:
        raise WeightsError("no fixed-rate models ship: the default model is variable-rate, "
                           "give the quality to encode (ecf_engine.load().encode(image, quality=q))")
    if not 1 <= quality <= len(QUALITIES):
        raise WeightsError(f"quality must be 1..{len(QUALITIES)}, got {quality}")
    return QUALITIES[quality - 1]


def model_id(tensors: dict[str, torch.Tensor], cfg: Config) -> bytes:
    """8-byte id: SHA-256 over the config and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(cfg.to_json().encode())
    for name in sorted(tensors):
        if name.startswith("coder."):
            continue
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        # flat in logical order (a copy only where the layout needs one, e.g. channels_last)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:8]


def save_weights(model: ECFModel, path: str | Path, dtype=torch.float16, card: dict | None = None) -> bytes:
    """Write the model's weights (stored as `dtype`) with its config; returns the model id."""
    tensors = {k: v.detach().to("cpu", dtype).clone(memory_format=torch.contiguous_format)
               for k, v in model.state_dict().items()}
    mid = model_id(tensors, model.cfg)
    stored = ECFModel(model.cfg)                       # the table of the weights as stored (dtype)
    stored.load_state_dict({k: v.float() for k, v in tensors.items()})
    tensors[Z_TABLE] = stored.z_prior.frequency_table()[1].to(torch.int32)
    meta = {"config": model.cfg.to_json(), "model_id": mid.hex(), "card": json.dumps(card or {})}
    save_file(tensors, str(path), metadata=meta)
    return mid


def resolve(name_or_path: str | Path) -> Path | str:
    """A shipped name or alias, a path to a .safetensors file, or a preset name (random weights)."""
    name = str(name_or_path)
    name = SHIPPED.get(name, name)
    if name in MODELS:
        return MODELS[name].path
    path = Path(name_or_path)
    if path.is_file():
        return path
    if name in PRESETS:
        return name
    raise WeightsError(f"no weights named {name_or_path!r}: not a shipped model ({', '.join(sorted(SHIPPED) + list(MODELS))}), "
                       f"a .safetensors file or a preset ({', '.join(sorted(PRESETS))})")


def verify_shipped(path: Path) -> None:
    """Check a shipped file against its manifest entry (size, then sha256; each file hashed once
    per process unless it changes). Other paths pass unchecked."""
    path = Path(path).resolve()
    entry = next((m for m in MODELS.values() if m.path == path), None)
    if entry is None:
        return
    st = path.stat()
    if _verified.get(path) == (st.st_size, st.st_mtime_ns):
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if st.st_size != entry.size or h.hexdigest() != entry.sha256:
        raise WeightsError(f"{path}: shipped weights {entry.name!r} do not match weights/manifest.json "
                           "(size or sha256 differ: damaged or replaced file; reinstall the package)")
    _verified[path] = (st.st_size, st.st_mtime_ns)


def load_weights(name_or_path: str | Path, seed: int = 0) -> tuple[ECFModel, bytes]:
    """Returns (model in fp32, eval mode, model id). A preset name gives seeded random weights."""
    src = resolve(name_or_path)
    if isinstance(src, str):
        with torch.random.fork_rng(devices=[]):       # seeded without touching the caller's RNG
            torch.manual_seed(seed)
            model = ECFModel(Config.from_name(src)).eval()
        tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model, model_id(tensors, model.cfg)
    verify_shipped(src)
    try:
        with safe_open(str(src), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:   # safetensors raises several types for a damaged file
        raise WeightsError(f"{src}: not a readable safetensors weights file ({e})") from e
    if "config" not in meta:
        raise WeightsError(f"{src}: no ecf_engine config in the file's metadata")
    cfg = Config.from_json(meta["config"])
    mid = model_id(tensors, cfg)
    if "model_id" in meta and meta["model_id"] != mid.hex():
        raise WeightsError(f"{src}: content does not match its recorded model id (file damaged?)")
    model = ECFModel(cfg)
    z_freqs = tensors.pop(Z_TABLE, None)
    try:
        model.load_state_dict({k: v.float() for k, v in tensors.items() if not k.startswith("coder.")})
    except RuntimeError as e:
        raise WeightsError(f"{src}: weights do not fit the stored config: {e}") from e
    if z_freqs is not None:
        model.pinned_z_table = _check_z_table(z_freqs, cfg, src)
    return model.eval(), mid


def _check_z_table(freqs: torch.Tensor, cfg: Config, src) -> tuple[int, torch.Tensor]:
    """(half-width R, int64 frequencies (N, 2R+1)) from a stored table, validated."""
    if (freqs.dim() != 2 or freqs.shape[0] != cfg.N or freqs.shape[1] % 2 != 1 or freqs.shape[1] > 257
            or freqs.is_floating_point() or int(freqs.min()) < 1):
        raise WeightsError(f"{src}: stored z frequency table {tuple(freqs.shape)} is not a valid table")
    return (freqs.shape[1] - 1) // 2, freqs.to(torch.int64)


def manifest_entry(path: str | Path, name: str, quality: int | None = None,
                   quality_range: tuple[float, float] | None = None, status: str = "shipped") -> dict:
    """The manifest entry (a JSON-ready dict) of a weights file that is to ship as `name`;
    the file itself goes beside the manifest as `name`.safetensors."""
    path = Path(path)
    model, mid = load_weights(path)
    entry = {"name": name, "id": mid.hex()}
    if model.cfg.lmbda and quality_range is None:
        entry["lambda"] = model.cfg.lmbda
    if quality is not None:
        entry["quality"] = quality
    if quality_range is not None:
        entry["quality_range"] = list(quality_range)
    entry.update(status=status, file=f"{name}.safetensors", size=path.stat().st_size,
                 sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    return entry


def retired_model(mid: bytes, path: str | Path | None = None) -> dict | None:
    """The retired.json entry ({"name", "id", "git"}) of a model that no longer ships, or None."""
    path = path or RETIRED
    try:
        entries = json.loads(Path(path).read_text())["models"]
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"{path}: not a valid list of retired models ({e})") from e
    return next((e for e in entries if e.get("id") == mid.hex()), None)


def missing_model_message(mid: bytes, cli: bool = False) -> str:
    """What to tell a user (of the API, or with cli=True of `ecf`) whose stream names a model
    that is not shipped."""
    old = retired_model(mid)
    file = f"{old['name']}.safetensors" if old else "FILE.safetensors"
    how = f"decode with --model {file}" if cli else f"decode with ecf_engine.load('{file}').decode(bits)"
    if old is None:
        return (f"stream was coded with model {mid.hex()}, which is not among the shipped models "
                f"({', '.join(f'{m.name} = {m.id}' for m in MODELS.values())}); {how}, that model's weights")
    return (f"stream was coded with {old['name']} (model {mid.hex()}), which no longer ships; its weights "
            f"are in the project's git history (`git show {old['git']} > {file}`): {how}")


def shipped_models() -> dict[bytes, Path]:
    """Model id -> path of every shipped weights file (from the manifest; nothing is read)."""
    return {bytes.fromhex(m.id): m.path for m in MODELS.values()}
