import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "foreign_codec.py"


def test_foreign_codec_example_trains_and_codes():
    spec = importlib.util.spec_from_file_location("foreign_codec", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--steps", "3"])
    assert result["exact"] and result["y_bytes"] > 0
