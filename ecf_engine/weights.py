"""Weights files: safetensors only (no pickle), config stored inside, content-hash model id.

Besides the network tensors a file may hold the coder's z frequency table
(`coder.z_freqs`, int32 (N, 2R+1)). It is computed from the prior in float64 when the
file is written, and pinned from then on: every decoder uses the stored integers instead
of recomputing them with its own CPU's math library and torch version. It is not part of
the model id (which hashes the networks and the config only)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import Config, PRESETS
from .errors import WeightsError
from .model import ECFModel

WEIGHTS_DIR = Path(__file__).parent / "weights"
Z_TABLE = "coder.z_freqs"
# Shipped models by name; "default" is what ecf_engine.load() gives without arguments.
SHIPPED = {"default": "small-mse0014"}
# The shipped rate points, lowest rate first: `--quality q` picks QUALITIES[q - 1].
QUALITIES = ["small-mse0004", "small-mse0007", "small-mse0014", "small-mse0026"]
# Models once shipped whose files were removed to keep the shipped weights within budget:
# model id -> (name, the file in git history as commit:path). Their streams decode with it.
RETIRED = {
    "c3f8e10db4a2360a": ("small-mse0004-2026-11-25", "a2f387d:ecf_engine/weights/small-mse0004-2026-11-25.safetensors"),
    "2eed71fe244c35f8": ("small-mse0026-2026-11-25", "a2f387d:ecf_engine/weights/small-mse0026-2026-11-25.safetensors"),
    "678b83cad20c38bc": ("small-mse0004-2026-12-01", "d4c7bd8:ecf_engine/weights/small-mse0004.safetensors"),
    "333a0650d90e7a33": ("small-mse0007-2026-12-01", "beafe0c:ecf_engine/weights/small-mse0007-2026-12-01.safetensors"),
    "237b028a62c20152": ("small-mse0014-2026-12-01", "beafe0c:ecf_engine/weights/small-mse0014-2026-12-01.safetensors"),
    "b922634717db99ae": ("small-mse0026-2026-12-01", "beafe0c:ecf_engine/weights/small-mse0026-2026-12-01.safetensors"),
    "fe8ca867f408da09": ("small-mse0004-2026-12-02", "beafe0c:ecf_engine/weights/small-mse0004.safetensors"),
    "5094c782f1030b36": ("small-mse0007-2026-12-02", "2cfcb0a:ecf_engine/weights/small-mse0007-2026-12-02.safetensors"),
    "2ee8ec1ad7537d56": ("small-mse0014-2026-12-02", "2cfcb0a:ecf_engine/weights/small-mse0014-2026-12-02.safetensors"),
    "be9c882c2d08dc08": ("small-mse0026-2026-12-02", "2cfcb0a:ecf_engine/weights/small-mse0026-2026-12-02.safetensors"),
    "c42525b507cc7d1d": ("small-mse0004-2026-12-02b", "2cfcb0a:ecf_engine/weights/small-mse0004.safetensors"),
    "4a1233897c3f654b": ("small-mse0007-2026-12-02b", "34ff5a0:ecf_engine/weights/small-mse0007-2026-12-02b.safetensors"),
    "69e1d172fb39e74c": ("small-mse0014-2026-12-02b", "34ff5a0:ecf_engine/weights/small-mse0014-2026-12-02b.safetensors"),
    "5c8d1a0a099a4186": ("small-mse0026-2026-12-02b", "34ff5a0:ecf_engine/weights/small-mse0026-2026-12-02b.safetensors"),
    "a312aeeccb8be1c2": ("small-mse0004-2026-12-02c", "34ff5a0:ecf_engine/weights/small-mse0004.safetensors"),
    "2a4a03d779d09b82": ("small-mse0007-2026-12-02c", "b9fd6bb:ecf_engine/weights/small-mse0007-2026-12-02c.safetensors"),
    "1dfdda429ca238ae": ("small-mse0014-2026-12-02c", "b9fd6bb:ecf_engine/weights/small-mse0014-2026-12-02c.safetensors"),
    "2bf9a3397d082893": ("small-mse0026-2026-12-02c", "b9fd6bb:ecf_engine/weights/small-mse0026-2026-12-02c.safetensors"),
    "0d40c2b1f5282ca9": ("small-mse0004-2026-12-02d", "b9fd6bb:ecf_engine/weights/small-mse0004.safetensors"),
    "d7b63d45dbef9eed": ("small-mse0007-2026-12-02d", "e57ec5e:ecf_engine/weights/small-mse0007-2026-12-02d.safetensors"),
    "335c55e1e9ec9583": ("small-mse0014-2026-12-02d", "e57ec5e:ecf_engine/weights/small-mse0014-2026-12-02d.safetensors"),
    "d032e7b2160e5452": ("small-mse0026-2026-12-02d", "e57ec5e:ecf_engine/weights/small-mse0026-2026-12-02d.safetensors"),
    "7bff9cd9779b997d": ("small-mse0004-2026-12-02e", "e57ec5e:ecf_engine/weights/small-mse0004.safetensors"),
    "ba2a8c65f7ccc724": ("small-mse0007-2026-12-02e", "0556d2a:ecf_engine/weights/small-mse0007-2026-12-02e.safetensors"),
    "888f9381b3126b88": ("small-mse0014-2026-12-02e", "0556d2a:ecf_engine/weights/small-mse0014-2026-12-02e.safetensors"),
    "9e6b623f40349d0a": ("small-mse0026-2026-12-02e", "0556d2a:ecf_engine/weights/small-mse0026-2026-12-02e.safetensors"),
    "0a8bc741eca5451b": ("small-mse0004-2026-12-02f", "0556d2a:ecf_engine/weights/small-mse0004.safetensors"),
    "54f8f2fdd80ffa55": ("small-mse0007-2026-12-02f", "6324de2:ecf_engine/weights/small-mse0007-2026-12-02f.safetensors"),
    "c1b65463ddfb591b": ("small-mse0014-2026-12-02f", "6324de2:ecf_engine/weights/small-mse0014-2026-12-02f.safetensors"),
    "7f0200336781577d": ("small-mse0026-2026-12-02f", "6324de2:ecf_engine/weights/small-mse0026-2026-12-02f.safetensors"),
    "e93dfcd8873be17a": ("small-mse0004-2026-12-02g", "6324de2:ecf_engine/weights/small-mse0004.safetensors"),
    "c08a74dd0b7fb5b4": ("small-mse0007-2026-12-02g", "493f8fa:ecf_engine/weights/small-mse0007-2026-12-02g.safetensors"),
    "a6bdd51d203b468e": ("small-mse0014-2026-12-02g", "493f8fa:ecf_engine/weights/small-mse0014-2026-12-02g.safetensors"),
    "f90eb722d94bb9b9": ("small-mse0026-2026-12-02g", "493f8fa:ecf_engine/weights/small-mse0026-2026-12-02g.safetensors"),
    "3635dee87102f8f4": ("small-mse0004-2026-12-03", "493f8fa:ecf_engine/weights/small-mse0004.safetensors"),
    "61737998cbaa8692": ("small-mse0007-2026-12-03", "f4564b2:ecf_engine/weights/small-mse0007-2026-12-03.safetensors"),
    "5b350ae911ab1981": ("small-mse0014-2026-12-03", "f4564b2:ecf_engine/weights/small-mse0014-2026-12-03.safetensors"),
    "d3b54bfcdf7b7203": ("small-mse0026-2026-12-03", "f4564b2:ecf_engine/weights/small-mse0026-2026-12-03.safetensors"),
    "d9326a9fbaeaf981": ("small-mse0004-2026-12-03b", "f4564b2:ecf_engine/weights/small-mse0004.safetensors"),
    "5b93c53a1f7db192": ("small-mse0007-2026-12-03b", "34659e8:ecf_engine/weights/small-mse0007-2026-12-03b.safetensors"),
    "9b74f2db9bcc104d": ("small-mse0014-2026-12-03b", "34659e8:ecf_engine/weights/small-mse0014-2026-12-03b.safetensors"),
    "361b7fa259fa38ff": ("small-mse0026-2026-12-03b", "34659e8:ecf_engine/weights/small-mse0026-2026-12-03b.safetensors"),
    "7938e9542227f159": ("small-mse0004-2026-12-03c", "34659e8:ecf_engine/weights/small-mse0004.safetensors"),
    "c0394964071a91bc": ("small-mse0007-2026-12-03c", "1cb39d6:ecf_engine/weights/small-mse0007-2026-12-03c.safetensors"),
    "c342329d688e6c7f": ("small-mse0014-2026-12-03c", "1cb39d6:ecf_engine/weights/small-mse0014-2026-12-03c.safetensors"),
    "67b16e07d96f2723": ("small-mse0026-2026-12-03c", "1cb39d6:ecf_engine/weights/small-mse0026-2026-12-03c.safetensors"),
    "17187a74a46c3946": ("small-mse0004-2026-12-04", "1cb39d6:ecf_engine/weights/small-mse0004.safetensors"),
    "9c2bc2ed5c93c128": ("small-mse0007-2026-12-04", "ad105f8:ecf_engine/weights/small-mse0007-2026-12-04.safetensors"),
    "8b1fe88a027cc4d9": ("small-mse0014-2026-12-04", "ad105f8:ecf_engine/weights/small-mse0014-2026-12-04.safetensors"),
    "fc416ba5619a5e06": ("small-mse0026-2026-12-04", "ad105f8:ecf_engine/weights/small-mse0026-2026-12-04.safetensors"),
    "abdcc74f6875cd56": ("small-mse0004-2026-12-05", "ad105f8:ecf_engine/weights/small-mse0004.safetensors"),
    "9454460f433f9768": ("small-mse0007-2026-12-05", "f0260bc:ecf_engine/weights/small-mse0007-2026-12-05.safetensors"),
    "3dc973e8739101a5": ("small-mse0014-2026-12-05", "f0260bc:ecf_engine/weights/small-mse0014-2026-12-05.safetensors"),
    "5b8048df76efa1ae": ("small-mse0026-2026-12-05", "f0260bc:ecf_engine/weights/small-mse0026-2026-12-05.safetensors"),
    "049db9a160333bcf": ("small-mse0004-2026-12-05b", "f0260bc:ecf_engine/weights/small-mse0004.safetensors"),
    "43e5beac0b777a11": ("small-mse0007-2026-12-05b", "ca45416:ecf_engine/weights/small-mse0007-2026-12-05b.safetensors"),
    "27c721aed1949ad9": ("small-mse0014-2026-12-05b", "ca45416:ecf_engine/weights/small-mse0014-2026-12-05b.safetensors"),
    "4e869b476ea928e8": ("small-mse0026-2026-12-05b", "ca45416:ecf_engine/weights/small-mse0026-2026-12-05b.safetensors"),
    "7c26278d952485b4": ("small-mse0004-2026-12-05c", "ca45416:ecf_engine/weights/small-mse0004.safetensors"),
    "d862bd3c1d205885": ("small-mse0007-2026-12-05c", "fe6981c:ecf_engine/weights/small-mse0007-2026-12-05c.safetensors"),
    "b7fa5cb27c430e5e": ("small-mse0014-2026-12-05c", "fe6981c:ecf_engine/weights/small-mse0014-2026-12-05c.safetensors"),
    "cb3f454bb839eb7e": ("small-mse0026-2026-12-05c", "fe6981c:ecf_engine/weights/small-mse0026-2026-12-05c.safetensors"),
    "fdb1c192f04fc91a": ("small-mse0004-2026-12-05d", "fe6981c:ecf_engine/weights/small-mse0004.safetensors"),
    "2d85352d2318c438": ("small-mse0007-2026-12-05d", "ed2e2c0:ecf_engine/weights/small-mse0007-2026-12-05d.safetensors"),
    "94547fdf3f36f4f3": ("small-mse0014-2026-12-05d", "ed2e2c0:ecf_engine/weights/small-mse0014-2026-12-05d.safetensors"),
    "9f2ddd82af92785b": ("small-mse0026-2026-12-05d", "ed2e2c0:ecf_engine/weights/small-mse0026-2026-12-05d.safetensors"),
    "311797edfa04a309": ("small-mse0004-2026-12-05e", "ed2e2c0:ecf_engine/weights/small-mse0004.safetensors"),
    "2e718f9a79b67865": ("small-mse0004-2026-12-05f", "c8e4689:ecf_engine/weights/small-mse0004.safetensors"),
    "0cba2e72bcc9e41a": ("small-mse0007-2026-12-05e", "c8e4689:ecf_engine/weights/small-mse0007-2026-12-05e.safetensors"),
    "4c6387fcf6fa8944": ("small-mse0014-2026-12-05e", "c8e4689:ecf_engine/weights/small-mse0014-2026-12-05e.safetensors"),
    "b4f8d1455a09a06a": ("small-mse0026-2026-12-05e", "c8e4689:ecf_engine/weights/small-mse0026-2026-12-05e.safetensors"),
    "51fce71eb59af80b": ("small-mse0007-2026-12-05f", "7cfcab6:ecf_engine/weights/small-mse0007-2026-12-05f.safetensors"),
    "99db1c5e83fba97a": ("small-mse0014-2026-12-05f", "7cfcab6:ecf_engine/weights/small-mse0014-2026-12-05f.safetensors"),
    "407bdc79c013d126": ("small-mse0026-2026-12-05f", "7cfcab6:ecf_engine/weights/small-mse0026-2026-12-05f.safetensors"),
    "6f32c91016906f13": ("small-mse0004-2026-12-06", "9900716:ecf_engine/weights/small-mse0004.safetensors"),
    "0f9fa199d1f4c357": ("small-mse0007-2026-12-05g", "9900716:ecf_engine/weights/small-mse0007-2026-12-05g.safetensors"),
    "31b89b9a1a75fd9c": ("small-mse0014-2026-12-05g", "9900716:ecf_engine/weights/small-mse0014-2026-12-05g.safetensors"),
    "b71a60c2f4e31949": ("small-mse0026-2026-12-05g", "9900716:ecf_engine/weights/small-mse0026-2026-12-05g.safetensors"),
    "8ceb649eca951dca": ("small-mse0004-2026-12-06b", "e00b08c:ecf_engine/weights/small-mse0004.safetensors"),
    "1ff2a3b5907c4cf1": ("small-mse0007-2026-12-06", "e00b08c:ecf_engine/weights/small-mse0007-2026-12-06.safetensors"),
    "f1752ae1de1e6312": ("small-mse0004-2026-12-06c", "0a9c578:ecf_engine/weights/small-mse0004.safetensors"),
    "4c0a8b4a3a6cc8a6": ("small-mse0007-2026-12-06b", "0a9c578:ecf_engine/weights/small-mse0007-2026-12-06b.safetensors"),
    "f26a5eccbdbd059b": ("small-mse0014-2026-12-06", "0a9c578:ecf_engine/weights/small-mse0014-2026-12-06.safetensors"),
    "6fe6296bfbbb4ed6": ("small-mse0026-2026-12-06", "0a9c578:ecf_engine/weights/small-mse0026-2026-12-06.safetensors"),
    "85095e70d234e171": ("small-mse0004-2026-12-06d", "b376fae:ecf_engine/weights/small-mse0004.safetensors"),
    "26dd8deb444a0230": ("small-mse0007-2026-12-06c", "b376fae:ecf_engine/weights/small-mse0007-2026-12-06c.safetensors"),
    "16e6de618a72c148": ("small-mse0014-2026-12-06c", "b376fae:ecf_engine/weights/small-mse0014-2026-12-06c.safetensors"),
    "f62e512edb9409f0": ("small-mse0026-2026-12-06c", "b376fae:ecf_engine/weights/small-mse0026-2026-12-06c.safetensors"),
    "0a12398641b54eb2": ("small-mse0004-2026-12-06e", "bf70d86:ecf_engine/weights/small-mse0004.safetensors"),
    "1263ebc1c403a63d": ("small-mse0007-2026-12-06d", "bf70d86:ecf_engine/weights/small-mse0007-2026-12-06d.safetensors"),
    "dcfb1e57fbebe4c3": ("small-mse0014-2026-12-06d", "bf70d86:ecf_engine/weights/small-mse0014-2026-12-06d.safetensors"),
    "bc63ce60e5ea101d": ("small-mse0026-2026-12-06d", "bf70d86:ecf_engine/weights/small-mse0026-2026-12-06d.safetensors"),
    "e6eaeecaccf4a2e5": ("small-mse0004-2026-12-06f", "66a3e7e:ecf_engine/weights/small-mse0004.safetensors"),
    "932d4972a0a64f42": ("small-mse0007-2026-12-06e", "66a3e7e:ecf_engine/weights/small-mse0007-2026-12-06e.safetensors"),
    "dcbcc9550f6b199b": ("small-mse0014-2026-12-06e", "66a3e7e:ecf_engine/weights/small-mse0014-2026-12-06e.safetensors"),
    "16c34d1c3cd6678e": ("small-mse0026-2026-12-06e", "66a3e7e:ecf_engine/weights/small-mse0026-2026-12-06e.safetensors"),
    "297fe74154e4766d": ("small-mse0004-2026-12-06g", "14139e0:ecf_engine/weights/small-mse0004.safetensors"),
    "ede56e0eebae351d": ("small-mse0007-2026-12-06f", "14139e0:ecf_engine/weights/small-mse0007-2026-12-06f.safetensors"),
    "77822303895d7940": ("small-mse0014-2026-12-06f", "14139e0:ecf_engine/weights/small-mse0014-2026-12-06f.safetensors"),
    "01c1e9e2627b4713": ("small-mse0026-2026-12-06f", "14139e0:ecf_engine/weights/small-mse0026-2026-12-06f.safetensors"),
    "41768be90e721435": ("small-mse0004-2026-12-06h", "48d8979:ecf_engine/weights/small-mse0004.safetensors"),
    "77df67c9d83e611d": ("small-mse0007-2026-12-06g", "48d8979:ecf_engine/weights/small-mse0007-2026-12-06g.safetensors"),
    "fa4afda1eb5e46c4": ("small-mse0014-2026-12-06g", "48d8979:ecf_engine/weights/small-mse0014-2026-12-06g.safetensors"),
    "825345cfe4ada043": ("small-mse0026-2026-12-06g", "48d8979:ecf_engine/weights/small-mse0026-2026-12-06g.safetensors"),
    "ce663428928ae121": ("small-mse0004-2026-12-06i", "7507402:ecf_engine/weights/small-mse0004.safetensors"),
    "54b4fb2660223f02": ("small-mse0007-2026-12-06h", "7507402:ecf_engine/weights/small-mse0007-2026-12-06h.safetensors"),
    "e0b88bec23b94d9b": ("small-mse0014-2026-12-06h", "7507402:ecf_engine/weights/small-mse0014-2026-12-06h.safetensors"),
    "938008fb0bd11844": ("small-mse0026-2026-12-06h", "7507402:ecf_engine/weights/small-mse0026-2026-12-06h.safetensors"),
}


def quality_model(quality: int) -> str:
    """Name of the shipped model for quality 1..len(QUALITIES) (1 = smallest files)."""
    if not 1 <= quality <= len(QUALITIES):
        raise WeightsError(f"quality must be 1..{len(QUALITIES)}, got {quality}")
    return QUALITIES[quality - 1]


def model_id(tensors: dict[str, torch.Tensor], cfg: Config) -> bytes:
    """8-byte id: SHA-256 over the config and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(cfg.to_json().encode())
    for name in sorted(tensors):
        if name.startswith("coder."):
            continue
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:8]


def save_weights(model: ECFModel, path: str | Path, dtype=torch.float16, card: dict | None = None) -> bytes:
    """Write the model's weights (stored as `dtype`) with its config; returns the model id."""
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    mid = model_id(tensors, model.cfg)
    stored = ECFModel(model.cfg)                       # the table of the weights as stored (dtype)
    stored.load_state_dict({k: v.float() for k, v in tensors.items()})
    tensors[Z_TABLE] = stored.z_prior.frequency_table()[1].to(torch.int32)
    meta = {"config": model.cfg.to_json(), "model_id": mid.hex(), "card": json.dumps(card or {})}
    save_file(tensors, str(path), metadata=meta)
    return mid


def resolve(name_or_path: str | Path) -> Path | str:
    """A shipped name, a path to a .safetensors file, or a preset name (random weights)."""
    name = str(name_or_path)
    name = SHIPPED.get(name, name)
    shipped = WEIGHTS_DIR / f"{name}.safetensors"
    if shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if path.is_file():
        return path
    if name in PRESETS:
        return name
    known = sorted(SHIPPED) + sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))
    raise WeightsError(f"no weights named {name_or_path!r}: not a shipped model ({', '.join(known)}), "
                       f"a .safetensors file or a preset ({', '.join(sorted(PRESETS))})")


def load_weights(name_or_path: str | Path, seed: int = 0) -> tuple[ECFModel, bytes]:
    """Returns (model in fp32, eval mode, model id). A preset name gives seeded random weights."""
    src = resolve(name_or_path)
    if isinstance(src, str):
        with torch.random.fork_rng(devices=[]):       # seeded without touching the caller's RNG
            torch.manual_seed(seed)
            model = ECFModel(Config.from_name(src)).eval()
        tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model, model_id(tensors, model.cfg)
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


def missing_model_message(mid: bytes) -> str:
    """What to tell a user whose stream names a model that is not shipped."""
    if mid.hex() in RETIRED:
        name, blob = RETIRED[mid.hex()]
        return (f"stream was coded with {name} (model {mid.hex()}), which is no longer shipped; get its "
                f"weights from the repository's history (git show {blob} > {name}.safetensors) and "
                f"decode with ecf_engine.load('{name}.safetensors')")
    return (f"stream was coded with model {mid.hex()}, which is not among the shipped weights; "
            "load its weights with ecf_engine.load(path)")


def shipped_models() -> dict[bytes, Path]:
    """Model id -> path of every shipped weights file (read from metadata, no hashing)."""
    out = {}
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            mid = (f.metadata() or {}).get("model_id")
        if mid:
            out[bytes.fromhex(mid)] = path
    return out
