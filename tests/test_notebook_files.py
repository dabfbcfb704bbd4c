"""The notebooks as a reader opens them: an install cell, stored outputs."""

import json
import pathlib

import pytest

pytestmark = pytest.mark.backend_neutral

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1]
                    / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_installs_the_package_first_and_holds_its_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    install = "".join(code[0]["source"])
    # The install of README.md, from the clone the notebook is in, skipped
    # where the package is importable; what to write once published.
    assert 'importlib.util.find_spec("keras_lrphase") is None' in install
    assert '"pip", "install", "-q", "-e", root + "[tensorflow,demo]"' in install
    assert '%pip install "keras-lrphase[tensorflow,demo]"' in install
    assert not any("<repository URL>" in "".join(c["source"]) for c in cells)
    # Run in order and stored: every code cell numbered, the results there
    # (text, and the figures of the cells that draw).
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c["outputs"]]
    assert any(o["output_type"] == "stream" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    for cell in code:
        if "plt.subplots" in "".join(cell["source"]):
            assert any("image/png" in o.get("data", {}) for o in cell["outputs"])
