"""Bad training input gets a clear error before any work (no images loaded, nothing written)."""
import pytest
import torch

from ecf_engine import train as tr


def args(data, out, *more):
    return ["--preset", "tiny", "--data", str(data), "--crop", "64", "--batch", "2", "--device", "cpu",
            "--out", str(out), *more]


@pytest.fixture
def no_image_loading(monkeypatch):
    """Fails the test if the run gets as far as decoding an image."""
    def refuse(path):
        raise AssertionError(f"loaded {path} before the error")
    monkeypatch.setattr(tr, "load_rgb", refuse)


def test_unknown_preset(tmp_path, data, no_image_loading):
    with pytest.raises(tr.TrainingError, match="unknown preset 'smal'"):
        tr.run(args(data, tmp_path / "run") + ["--preset", "smal"])
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_architecture(tmp_path, data, no_image_loading):
    other = tmp_path / "tiny.pt"
    model = tr.ECFModel(tr.Config.from_name("tiny").replace(lmbda=0.014))
    tr.save_checkpoint(other, model, torch.optim.Adam(model.parameters()),
                       {"config": model.cfg.to_json(), "step": 1, "best": 1.0})
    with pytest.raises(tr.TrainingError, match="another architecture than preset 'small'"):
        tr.run(args(data, tmp_path / "a", "--preset", "small", "--continue-from", str(other)))
    with pytest.raises(tr.TrainingError, match="another architecture than preset 'tiny'"):
        tr.run(args(data, tmp_path / "b", "--init", "default"))            # the shipped small-vr model
    resumed = tmp_path / "c"
    resumed.mkdir()
    other.rename(resumed / "last.pt")
    with pytest.raises(tr.TrainingError, match="another config"):
        tr.run(args(data, resumed, "--preset", "tiny-vr", "--resume"))
    (resumed / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(tr.TrainingError, match="not a training checkpoint"):
        tr.run(args(data, resumed, "--resume"))


def test_budget_shorter_than_one_step(tmp_path, data):
    with pytest.raises(tr.TrainingError, match="--time-budget 0.05 s is too short"):
        tr.run(args(data, tmp_path / "run", "--time-budget", "0.05"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(tr.TrainingError, match="must be positive"):
        tr.run(args(data, tmp_path / "run", "--time-budget", "0"))


def test_more_ranks_than_training_images(tmp_path, data, no_image_loading, monkeypatch):
    # as torchrun --nproc-per-node 20 would launch it: 19 training images (one held out)
    monkeypatch.setenv("WORLD_SIZE", "20")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(tr.TrainingError, match="20 ranks but only 19 training images"):
        tr.run(args(data, tmp_path / "run"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(tr.TrainingError, match="must be divisible by the 2 ranks"):
        tr.run(args(data, tmp_path / "run", "--batch", "3"))


def test_data_folder_without_images(tmp_path, no_image_loading):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    with pytest.raises(tr.DataError, match="no images in"):
        tr.run(args(empty, tmp_path / "run"))
    with pytest.raises(tr.DataError, match="does not exist"):
        tr.run(args(tmp_path / "missing", tmp_path / "run"))


def test_the_command_line_says_one_line_and_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tr.main(["--preset", "nope", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ecf train: error: unknown preset 'nope'") and "Traceback" not in err
