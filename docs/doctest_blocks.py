"""A griffe extension: the docstrings' Keras-style examples, rendered as code.

The package's docstrings follow Keras: an `Example:` line, a blank line and
doctest lines (`>>>`, `...` and the expected output) at the docstring's own
indentation. Google-style parsing reads them as text, and Markdown would
turn `>>>` into nested quotes. This extension wraps every run of doctest
lines (up to the next blank line) in a `pycon` code fence and turns a
lone `Example:` line into a bold heading, before the docstring is parsed.
The doctests themselves run under pytest (`--doctest-modules`).
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Examples?:\s*$")
_PROMPT = re.compile(r"^(\s*)>>>( |$)")


def fence_doctests(text):
    """`text` with each doctest run fenced as `pycon` and `Example:`
    lines that start a doctest (after blank lines) made bold."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _EXAMPLE.match(line)
        if heading:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _PROMPT.match(lines[j]):
                out.append(f"{heading.group(1)}**Example**")
                i += 1
                continue
        prompt = _PROMPT.match(line)
        if prompt:
            indent = prompt.group(1)
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    """Fences the doctest examples of every docstring (see the module)."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
