import pytest
import torch

import ecf_engine
from ecf_engine.config import PRESETS, Config
from ecf_engine.errors import WeightsError
from ecf_engine.weights import load_weights, save_weights

from conftest import git_history, smooth_image, tiny_model


def test_config_roundtrip_and_presets():
    for cfg in PRESETS.values():
        assert Config.from_json(cfg.to_json()) == cfg
    paper = Config.from_name("paper")
    assert (paper.N, paper.M, paper.N_cs, paper.K, paper.L, paper.d_e, paper.heads, paper.k_m) == \
        (192, 192, 4, 8, 8, 384, 12, 3)
    assert paper.p_cs == 48 and paper.mlp_ratio * paper.d_e == 4 * 384
    hr = Config.from_name("paper-hr")
    assert (hr.M, hr.heads, hr.p_cs) == (312, 6, 78)
    with pytest.raises(ValueError, match="unknown preset"):
        Config.from_name("huge")
    with pytest.raises(ValueError, match="divisible"):
        Config(M=10, N_cs=4)


def test_save_load_keeps_config_id_and_coding(tmp_path):
    model, _ = tiny_model()
    path = tmp_path / "m.safetensors"
    mid = save_weights(model, path, dtype=torch.float32)
    loaded, mid2 = load_weights(path)
    assert mid == mid2 and loaded.cfg == model.cfg
    a = ecf_engine.load(path)
    rgb = smooth_image(32, 48)
    assert a.decode(a.encode(rgb)).shape == (32, 48, 3)


def test_a_channels_last_model_saves_with_the_id_of_its_plain_layout(tmp_path):
    model, _ = tiny_model()
    mid = save_weights(model, tmp_path / "plain.safetensors")
    model = model.to(memory_format=torch.channels_last)        # as training holds it (1x1 kernels too)
    assert save_weights(model, tmp_path / "cl.safetensors") == mid
    assert load_weights(tmp_path / "cl.safetensors")[1] == mid


def test_damaged_or_foreign_weights(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(WeightsError):
        load_weights(bad)
    with pytest.raises(WeightsError, match="no weights named"):
        ecf_engine.load(tmp_path / "missing.safetensors")


def test_tampered_weights_fail_the_id_check(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    model, _ = tiny_model()
    path = tmp_path / "m.safetensors"
    save_weights(model, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["g_s.1.bias"] = tensors["g_s.1.bias"] + 1
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightsError, match="model id"):
        load_weights(path)


def test_z_table_is_pinned_in_the_file_and_not_in_the_id(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file
    from ecf_engine.weights import WEIGHTS_DIR, Z_TABLE
    # shipped files: the stored table is what the prior gives on this machine (streams written
    # before the table was pinned decode with it), and the id is that of the networks alone
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        model, mid = load_weights(path)
        R, freqs = model.z_prior.frequency_table()
        assert model.pinned_z_table[0] == R and torch.equal(model.pinned_z_table[1], freqs)
    model, mid = tiny_model()
    path = tmp_path / "w.safetensors"
    assert save_weights(model, path) == load_weights(path)[1]
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert Z_TABLE in tensors
    tensors[Z_TABLE] = tensors[Z_TABLE] + 1                 # another table: same id, and it is used
    save_file(tensors, str(path), metadata=meta)
    loaded, mid2 = load_weights(path)
    assert mid2 == load_weights(path)[1] and torch.equal(loaded.pinned_z_table[1], tensors[Z_TABLE].long())
    engine = ecf_engine.Engine(loaded, mid2)
    assert torch.equal(engine.z_freqs, tensors[Z_TABLE].long())
    bits = engine.encode(smooth_image(64, 64))
    assert engine.decode(bits).shape == (64, 64, 3)
    tensors[Z_TABLE] = torch.zeros(3, 4, dtype=torch.int32)   # not a table for this model
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightsError, match="z frequency table"):
        load_weights(path)


# -- the manifest: what ships ------------------------------------------------------------

def test_manifest_lists_exactly_the_shipped_files_with_their_hashes():
    import hashlib
    import json
    from safetensors import safe_open
    from ecf_engine import weights
    assert {m.path for m in weights.MODELS.values()} == set(weights.WEIGHTS_DIR.resolve().glob("*.safetensors"))
    for m in weights.MODELS.values():
        data = m.path.read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (m.size, m.sha256), m.name
        with safe_open(str(m.path), framework="pt") as f:
            meta = f.metadata()
        assert meta["model_id"] == m.id, m.name
        if m.lmbda is not None:
            assert json.loads(meta["config"])["lmbda"] == m.lmbda, m.name
    assert weights.SHIPPED["default"] in weights.MODELS
    lambdas = [weights.MODELS[name].lmbda for name in weights.QUALITIES]
    assert lambdas == sorted(lambdas) and len(set(lambdas)) == len(lambdas)     # ladder: lowest rate first
    assert {bytes.fromhex(m.id) for m in weights.MODELS.values()} == set(weights.shipped_models())


def _ship(tmp_path, model, name, **entry_args):
    """A manifest in tmp_path that ships `model` as `name` (one entry, written as a maintainer would)."""
    import json
    from ecf_engine.weights import manifest_entry
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path)
    entry = manifest_entry(path, name, **entry_args)
    (tmp_path / "manifest.json").write_text(json.dumps({"aliases": {}, "models": [entry]}))
    return tmp_path / "manifest.json", entry


def test_one_manifest_entry_is_all_it_takes_to_ship_a_model(tmp_path, monkeypatch):
    from ecf_engine import weights
    model, _ = tiny_model()
    manifest, entry = _ship(tmp_path, model, "tiny-vr", quality_range=(1, 7), status="preview")
    assert "lambda" not in entry and entry["quality_range"] == [1, 7]
    models, aliases = weights.read_manifest(manifest)
    assert models["tiny-vr"].quality_range == (1, 7) and aliases == {}
    monkeypatch.setattr(weights, "MODELS", {**weights.MODELS, **models})
    engine = ecf_engine.load("tiny-vr")
    assert engine.model_id.hex() == entry["id"]
    bits = engine.encode(smooth_image(32, 32))
    assert ecf_engine.decode(bits).shape == (32, 32, 3)            # found by the id in the stream
    assert "tiny-vr" not in weights.QUALITIES                     # preview: not on the quality ladder


def test_a_shipped_file_that_does_not_match_the_manifest_is_refused(tmp_path, monkeypatch):
    import json
    from ecf_engine import weights
    model, _ = tiny_model()
    manifest, entry = _ship(tmp_path, model, "tiny-x", quality=1)
    raw = json.loads(manifest.read_text())
    raw["models"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(raw))
    monkeypatch.setattr(weights, "MODELS", weights.read_manifest(manifest)[0])
    with pytest.raises(WeightsError, match="do not match weights/manifest.json"):
        ecf_engine.load("tiny-x")
    with pytest.raises(WeightsError, match="do not match"):       # by its path, too
        ecf_engine.load(tmp_path / "tiny-x.safetensors")


@pytest.mark.parametrize("edit, why", [
    (lambda r: r["models"].append(dict(r["models"][0])), "duplicate"),
    (lambda r: r["models"][0].update(status="retired"), "unknown status"),
    (lambda r: r["models"][0].update(id="abc"), "bad id"),
    (lambda r: r["models"][0].update(quality=2), "qualities run 1..n"),
    (lambda r: r["models"][0].update(quality_range=[7, 1]), "quality_range"),
    (lambda r: r["aliases"].update(default="nope"), "alias"),
    (lambda r: r["models"][0].pop("sha256"), "sha256"),
])
def test_a_malformed_manifest_is_a_clear_error(tmp_path, edit, why):
    import json
    from ecf_engine import weights
    model, _ = tiny_model()
    manifest, _ = _ship(tmp_path, model, "tiny-x", quality=1)
    raw = json.loads(manifest.read_text())
    edit(raw)
    manifest.write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match=why):
        weights.read_manifest(manifest)


def test_a_stream_of_a_model_that_is_not_shipped_names_its_id(tiny_engine):
    from ecf_engine.errors import UnknownModelError
    bits = tiny_engine.encode(smooth_image(32, 32))
    with pytest.raises(UnknownModelError, match=f"model {tiny_engine.model_id.hex()}, which is not among the shipped"):
        ecf_engine.decode(bits)


def test_a_stream_of_a_retired_model_names_it_and_where_its_weights_are(tiny_engine, tmp_path, monkeypatch):
    import json
    from ecf_engine import weights
    from ecf_engine.errors import UnknownModelError
    retired = tmp_path / "retired.json"
    retired.write_text(json.dumps({"models": [{"name": "tiny-old", "id": tiny_engine.model_id.hex(),
                                               "git": "abc1234:ecf_engine/weights/tiny-old.safetensors"}]}))
    monkeypatch.setattr(weights, "RETIRED", retired)
    bits = tiny_engine.encode(smooth_image(32, 32))
    with pytest.raises(UnknownModelError, match="coded with tiny-old .*no longer ships.*git show abc1234:"):
        ecf_engine.decode(bits)
    retired.write_text("{")
    with pytest.raises(WeightsError, match="not a valid list of retired models"):
        ecf_engine.decode(bits)


def test_the_retired_list_is_well_formed_and_its_files_are_in_git():
    import json
    import re
    import subprocess
    from ecf_engine import weights
    entries = json.loads(weights.RETIRED.read_text())["models"]
    ids = [e["id"] for e in entries]
    assert all(re.fullmatch("[0-9a-f]{16}", i) for i in ids) and len(set(ids)) == len(ids)
    assert not set(ids) & {m.id for m in weights.MODELS.values()}          # nothing both shipped and retired
    assert len({e["name"] for e in entries}) == len(entries)
    assert all(re.fullmatch(r"[0-9a-f]{7,40}:ecf_engine/weights/[\w.-]+\.safetensors", e["git"]) for e in entries)
    r = subprocess.run(git_history() + ["cat-file", "--batch-check"], capture_output=True, text=True,
                       input="".join(e["git"] + "\n" for e in entries))
    missing = [line for line in r.stdout.splitlines() if line.endswith("missing")]
    assert r.returncode == 0 and not missing, missing


def test_quality_model_says_when_no_fixed_rate_models_ship(monkeypatch):
    from ecf_engine import weights
    monkeypatch.setattr(weights, "QUALITIES", [])
    with pytest.raises(WeightsError, match="no fixed-rate models ship"):
        weights.quality_model(1)
    monkeypatch.setattr(weights, "QUALITIES", ["a", "b"])
    assert weights.quality_model(2) == "b"
    with pytest.raises(WeightsError, match=r"quality must be 1..2, got 3"):
        weights.quality_model(3)
