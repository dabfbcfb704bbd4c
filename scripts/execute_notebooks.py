"""Runs the notebooks and stores their outputs in them.

Each notebook's code cells run in order in one namespace, in the
notebook's folder, as `tests/test_notebooks.py` runs them; what a cell
prints becomes its stream output, and each figure it leaves open in pyplot
or ends with (as Jupyter shows a cell's last expression) a PNG output, so
a reader of the repository sees the results without running
anything. Run it after a change that alters what the notebooks show:

    python scripts/execute_notebooks.py                  # every notebook
    python scripts/execute_notebooks.py notebooks/quickstart.ipynb

It needs only what the notebooks need (no Jupyter): the package, the
backend and the `demo` extra.
"""

import argparse
import ast
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


def _figure_output(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(buffer.getvalue()).decode(),
                 "text/plain": [f"<Figure size {figure.get_size_inches()[0] * 100:.0f}x"
                                f"{figure.get_size_inches()[1] * 100:.0f} with "
                                f"{len(figure.axes)} Axes>"]},
        "metadata": {}}


def _figures(plt):
    outputs = [_figure_output(plt.figure(number)) for number in plt.get_fignums()]
    plt.close("all")
    return outputs


def _run_cell(source, name, namespace):
    """Runs a cell; returns the value of its last line if that is an
    expression (what Jupyter displays), else None."""
    tree = ast.parse(source, name)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), namespace)
    if last is not None:
        return eval(compile(last, name, "eval"), namespace)
    return None


def execute(path):
    """Runs the notebook at `path` and writes it back with its outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

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
                value = _run_cell("".join(cell["source"]),
                                  f"{path.name}[{count}]", namespace)
            outputs = []
            if out.getvalue():
                outputs.append({"output_type": "stream", "name": "stdout",
                                "text": _lines(out.getvalue())})
            pyplot_figures = [plt.figure(n) for n in plt.get_fignums()]
            outputs += _figures(plt)
            # A figure the cell ends with (the package's plot_* functions
            # return figures not attached to pyplot), shown as Jupyter does.
            if isinstance(value, Figure) and value not in pyplot_figures:
                outputs.append(_figure_output(value))
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
