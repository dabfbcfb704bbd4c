"""`scripts/execute_notebooks.py` stores what Jupyter would show."""

import importlib.util
import json
import pathlib

import pytest

pytestmark = pytest.mark.backend_neutral

SCRIPT = (pathlib.Path(__file__).resolve().parents[1] / "scripts"
          / "execute_notebooks.py")


def _script():
    spec = importlib.util.spec_from_file_location("execute_notebooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code(source):
    return {"cell_type": "code", "metadata": {}, "source": [source],
            "execution_count": None, "outputs": []}


def test_a_figure_a_cell_ends_with_is_stored_once_as_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps({"cells": [
        # The package's plot_* functions return figures outside pyplot.
        _code("from matplotlib.figure import Figure\n"
              "figure = Figure()\nfigure.subplots().plot([1, 2])\nfigure"),
        # A pyplot figure, shown as well as returned: one image.
        _code("import matplotlib.pyplot as plt\nprint('drawn')\n"
              "fig, ax = plt.subplots()\nfig"),
        _code("value = 1 + 1\nvalue"),
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    _script().execute(path)
    cells = json.loads(path.read_text())["cells"]
    kinds = [[(o["output_type"], sorted(o.get("data", {}))) for o in c["outputs"]]
             for c in cells]
    png = ("display_data", ["image/png", "text/plain"])
    assert kinds == [[png], [("stream", []), png], []]
    assert [c["execution_count"] for c in cells] == [1, 2, 3]
