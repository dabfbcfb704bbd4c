"""The documentation site's griffe extension (docs/doctest_blocks.py).

The `docs` job of .ci/run runs this file next to `mkdocs build --strict`,
in a virtual environment with the `docs` extra (griffe) and no Keras.
"""

import importlib.util
import pathlib

import pytest

pytest.importorskip("griffe")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _extension():
    spec = importlib.util.spec_from_file_location(
        "doctest_blocks", ROOT / "docs" / "doctest_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doctest_lines_are_fenced_and_the_example_line_made_a_heading():
    text = ("Summary.\n"
            "\n"
            "Example:\n"
            "\n"
            ">>> x = 1\n"
            "... # continued\n"
            ">>> x\n"
            "1\n"
            "\n"
            "Text after.")
    assert _extension().fence_doctests(text) == (
        "Summary.\n"
        "\n"
        "**Example**\n"
        "\n"
        "```pycon\n"
        ">>> x = 1\n"
        "... # continued\n"
        ">>> x\n"
        "1\n"
        "```\n"
        "\n"
        "Text after.")


def test_an_example_line_without_doctest_lines_after_it_is_kept():
    text = "Example:\n\n    model.fit(x, y)"
    assert _extension().fence_doctests(text) == text


def test_grouped_args_become_one_entry_each_with_the_whole_description():
    text = ("Args:\n"
            "    w1, w2: Weight lists.\n"
            "        Not collinear.\n"
            "    model: A model.\n"
            "\n"
            "Returns:\n"
            "    a, b: Not arguments.")
    assert _extension().split_grouped_args(text) == (
        "Args:\n"
        "    w1: Weight lists.\n"
        "        Not collinear.\n"
        "    w2: Weight lists.\n"
        "        Not collinear.\n"
        "    model: A model.\n"
        "\n"
        "Returns:\n"
        "    a, b: Not arguments.")
