"""A griffe extension: the docstrings' Keras-style examples, rendered as code.

The package's docstrings follow Keras: an `Example:` line, a blank line and
doctest lines (`>>>`, `...` and the expected output) at the docstring's own
indentation. Google-style parsing reads them as text, and Markdown would
turn `>>>` into nested quotes. This extension wraps every run of doctest
lines (up to the next blank line) in a `pycon` code fence and turns a
lone `Example:` line into a bold heading, before the docstring is parsed.
The doctests themselves run under pytest (`--doctest-modules`).

It also splits an `Args` entry that names several parameters at once
(`w1, w2, w3: Weight lists ...`), which the Google style does not know,
into one entry per parameter with the shared description.
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Examples?:\s*$")
_PROMPT = re.compile(r"^(\s*)>>>( |$)")
_ARGS = re.compile(r"^(\s*)(Args|Arguments):\s*$")
_GROUPED = re.compile(r"^(\s+)([A-Za-z_]\w*(?:, [A-Za-z_]\w*)+):(.*)$")


def _indent(line):
    return len(line) - len(line.lstrip())


def split_grouped_args(text):
    """`text` with every `a, b: description` entry of an `Args` section
    written as one entry per name, each with the whole description."""
    lines = text.splitlines()
    out = []
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _ARGS.match(line)
        if header:
            section = len(header.group(1))
        elif line.strip() and section is not None and _indent(line) <= section:
            section = None
        grouped = _GROUPED.match(line) if section is not None else None
        if grouped:
            indent = len(grouped.group(1))
            j = i + 1
            while j < len(lines) and (not lines[j].strip() and j + 1 < len(lines)
                                      and _indent(lines[j + 1]) > indent
                                      or lines[j].strip() and _indent(lines[j]) > indent):
                j += 1
            for name in grouped.group(2).split(", "):
                out.append(f"{grouped.group(1)}{name}:{grouped.group(3)}")
                out.extend(lines[i + 1:j])
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


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
            obj.docstring.value = fence_doctests(
                split_grouped_args(obj.docstring.value))
