import pytest
import torch

import ecf_engine
from ecf_engine.config import PRESETS, Config
from ecf_engine.errors import WeightsError
from ecf_engine.weights import load_weights, save_weights

from conftest import smooth_image, tiny_model


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
