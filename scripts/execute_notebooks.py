"""Runs the notebooks and stores their outputs in them.

Each notebook's code cells run in order in one namespace, in the
notebook's folder, as `tests/test_notebooks.py` runs them; what a cell
prints becomes its stream output and each figure it leaves open a PNG
output, so a reader of the repository sees the results without running
anything. Run it after a change that alters what the notebooks show:

    python scripts/execute_notebooks.py                  # every notebook
    python scripts/execute_notebooks.py notebooks/quickstart.ipynb

It needs only what the notebooks need (no Jupyter): the package, the
backend and the `demo` extra.
"""

import argparse
import base64
import contextlib
import io
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _lines(text):
    return text.splitlines(keepends=True)


def _figures(plt):
    outputs = []
    for number in plt.get_fignums():
        figure = plt.figure(number)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
        outputs.append({
            "output_type": "display_data",
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode(),
                     "text/plain": [f"<Figure size {figure.get_size_inches()[0] * 100:.0f}x"
                                    f"{figure.get_size_inches()[1] * 100:.0f} with "
                                    f"{len(figure.axes)} Axes>"]},
            "metadata": {}})
    plt.close("all")
    return outputs


def execute(path):
    """Runs the notebook at `path` and writes it back with its outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notebook = json.loads(path.read_text())
    namespace = {"__name__": "__main__"}
    count = 0
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            count += 1
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile("".join(cell["source"]), f"{path.name}[{count}]",
                             "exec"), namespace)
            outputs = []
            if out.getvalue():
                outputs.append({"output_type": "stream", "name": "stdout",
                                "text": _lines(out.getvalue())})
            outputs += _figures(plt)
            cell["outputs"] = outputs
            cell["execution_count"] = count
    finally:
        os.chdir(cwd)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path,
                        default=sorted((ROOT / "notebooks").glob("*.ipynb")))
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f"executing {path}", file=sys.stderr, flush=True)
        execute(path.resolve())


if __name__ == "__main__":
    main()
