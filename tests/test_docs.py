"""The README is a product page: short, its tables what the benchmark JSON says, its
Python example real output."""
import doctest
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_short_and_its_tables_are_current():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import readme_tables
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert readme_tables.main(["--check"]) == 0, "run python tools/readme_tables.py"


def test_readme_python_example_gives_the_output_it_shows(monkeypatch):
    monkeypatch.chdir(ROOT)                       # the example opens ecf_engine/data/sample.png
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
