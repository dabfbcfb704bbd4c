"""The example of the documentation's home page prints what the page shows."""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _fifteen_lines(path):
    """The code and the shown output of a page's "In fifteen lines"."""
    text = (ROOT / path).read_text()
    section = text[text.index("## In fifteen lines"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    return code, shown


def test_home_page_example_prints_the_output_it_shows():
    code, shown = _fifteen_lines("docs/index.md")
    assert len(code.strip().splitlines()) <= 16
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/index.md", "exec"), {})
    assert out.getvalue() == shown


def test_short_readme_shows_the_home_page_example():
    assert _fifteen_lines("docs/README_short.md") == _fifteen_lines("docs/index.md")
