"""Checks the package's architecture from the source's syntax trees.

Reports five kinds of violation, one line each:

- `layer`: a module imports a module of a higher layer (`LAYERS` below).
- `cycle`: modules that import each other, directly or through others.
- `private`: `keras.src` imported, or a private attribute that the package
  does not define itself (a Keras object's `._learning_rate`, say) read or
  written, outside `keras_lrphase/backend/keras_compat.py`, in the package
  and in the tests; and, in the package, a module importing another
  module's private name, or a private module of another package.
- `length`: a function longer than `MAX_FUNCTION_LINES` in the application
  layer's `training/` and `cli.py`.
- `repeat`: a block of `MIN_REPEATED_LINES` or more lines of code found in
  two or more modules of the package. Lines are compared as their tokens
  (spacing aside); comments, docstrings, blank lines and import statements
  are left out, and a block repeated within one module is not reported.

Every import statement counts, those inside functions included: a lazy
import still makes the importing module depend on the imported one.

Usage:

    python scripts/check_architecture.py [ROOT]

prints the violations and exits with status 1 if there is any.
`tests/test_architecture.py` runs `find_violations` and compares the
result with its allow-list.
"""

import ast
import fnmatch
import io
import os
import sys
import tokenize
from dataclasses import dataclass

PACKAGE = "keras_lrphase"

# The layers, bottom to top: a module may import modules of its own layer
# and of the layers below it. The first pattern a module's dotted name
# matches gives its layer (`fnmatch` patterns; `pkg.sub` matches the
# package `pkg/sub/__init__.py`, `pkg.sub.*` its modules).
LAYERS = (
    # (layer, rank, patterns)
    ("application", 2, (
        "keras_lrphase.training", "keras_lrphase.training.*",
        "keras_lrphase.cli", "keras_lrphase.cli_*",
        "keras_lrphase.__main__",
        "keras_lrphase.presets",
        "keras_lrphase.analyze_command",
        "keras_lrphase.analysis.analyze_actions",
    )),
    ("library", 1, ("keras_lrphase", "keras_lrphase.*")),
)

# Where private Keras access is allowed.
COMPAT_MODULES = ("keras_lrphase/backend/keras_compat.py",)

# The folders of application code whose functions are kept short.
LENGTH_CHECKED = ("keras_lrphase/training/", "keras_lrphase/cli.py")
MAX_FUNCTION_LINES = 80

# Blocks of this many lines or more repeated between modules are reported.
MIN_REPEATED_LINES = 6

# Private names of Python's standard library and of namedtuples, which are
# public API despite the underscore.
STANDARD_PRIVATE = frozenset({
    "_asdict", "_fields", "_field_defaults", "_make", "_replace",
    "_getframe", "_exit", "_current_frames", "_SubParsersAction",
    "_name_to_level", "_actions", "_option_string_actions",
})


@dataclass(frozen=True, order=True)
class Violation:
    """One violation: `key` is stable (no line numbers), `where` is not."""

    kind: str
    key: str
    where: str

    def __str__(self):
        return f"{self.kind}: {self.key}  [{self.where}]"


def layer_of(module, layers=LAYERS):
    """Returns `(name, rank)` of the first layer whose pattern matches."""
    for name, rank, patterns in layers:
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return name, rank
    return None, None


def _module_name(root, path):
    relative = os.path.relpath(path, root)[:-len(".py")].split(os.sep)
    if relative[-1] == "__init__":
        relative = relative[:-1]
    return ".".join(relative)


def _python_files(root, folder):
    top = os.path.join(root, folder)
    if os.path.isfile(top + ".py"):
        yield top + ".py"
        return
    for directory, subdirectories, files in os.walk(top):
        subdirectories[:] = sorted(
            d for d in subdirectories if not d.startswith((".", "__pycache__")))
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def _parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _imports(tree, module, is_package):
    """Yields `(candidates, line)` for each imported name: the module it
    names is the first candidate that is a module of the package.

    `from a import b` names the module `a.b` if there is one, else `a`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield (alias.name,), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            for alias in node.names:
                yield (f"{base}.{alias.name}", base), node.lineno


def import_graph(root, package=PACKAGE):
    """Returns `{module: {imported module: (path, line)}}` for the package."""
    files = {}
    for path in _python_files(root, package):
        files[_module_name(root, path)] = path
    graph = {}
    for module, path in files.items():
        is_package = path.endswith("__init__.py")
        edges = {}
        for candidates, line in _imports(_parse(path), module, is_package):
            target = next((c for c in candidates if c in files), None)
            if target is not None and target != module:
                edges.setdefault(target, (os.path.relpath(path, root), line))
        graph[module] = edges
    return graph


def layer_violations(graph, layers=LAYERS):
    found = []
    for module, edges in graph.items():
        source_layer, source_rank = layer_of(module, layers)
        for target, (path, line) in edges.items():
            target_layer, target_rank = layer_of(target, layers)
            if source_rank is not None and target_rank is not None and (
                    target_rank > source_rank):
                found.append(Violation(
                    "layer",
                    f"{module} -> {target} ({source_layer} imports "
                    f"{target_layer})",
                    f"{path}:{line}"))
    return found


def cycle_violations(graph):
    """One violation per strongly connected component of 2+ modules."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = [0]

    def visit(node):
        # Tarjan's algorithm, iteratively (deep graphs exceed recursion).
        work = [(node, iter(sorted(graph.get(node, ()))))]
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[current] = min(low[current], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for component in sorted(components):
        members = set(component)
        where = ", ".join(
            f"{graph[m][t][0]}:{graph[m][t][1]}"
            for m in component for t in sorted(graph[m]) if t in members)
        found.append(Violation("cycle", " <-> ".join(component), where))
    return found


def private_import_violations(root, package=PACKAGE):
    """Imports, within the package, of another module's private name
    (`from a.b import _helper`) or of a private module from outside the
    package holding it (`keras_lrphase.optimizers._x` from `distributed/`).
    Private modules shared by a package's modules (`_validation.py`) are
    fine; a helper that other packages need deserves a public home."""
    files = {_module_name(root, p): p for p in _python_files(root, package)}
    found = {}
    for module, path in files.items():
        is_package = path.endswith("__init__.py")
        home = module if is_package else module.rpartition(".")[0]
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        for candidates, line in _imports(_parse(path), module, is_package):
            name = candidates[0]
            target = next((c for c in candidates if c in files), None)
            if target is None:
                continue
            if name != target and name.rpartition(".")[2].startswith("_") \
                    and not name.endswith("__"):
                found.setdefault(f"{relative}: imports private {name}",
                                 f"{relative}:{line}")
            private_parts = [i for i, part in enumerate(target.split("."))
                             if part.startswith("_") and part != "__init__"]
            if private_parts:
                owner = ".".join(target.split(".")[:private_parts[0]])
                if home != owner and not home.startswith(owner + "."):
                    found.setdefault(
                        f"{relative}: imports private {target}",
                        f"{relative}:{line}")
    return [Violation("private", key, where)
            for key, where in sorted(found.items())]


def _defined_private_names(trees):
    """Private names the package defines: methods, class attributes,
    `self._x = ...` assignments, module-level functions and variables."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                 ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = (node.targets if isinstance(node, ast.Assign)
                           else [node.target])
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
                        elif (isinstance(sub, ast.Attribute)
                              and isinstance(sub.value, ast.Name)
                              and sub.value.id in ("self", "cls")):
                            names.add(sub.attr)
            elif isinstance(node, ast.Call) and (
                    isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("__setattr__",)
                    or isinstance(node.func, ast.Name)
                    and node.func.id == "setattr"):
                # object.__setattr__(self, "_x", ...) in frozen dataclasses.
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(
                            arg.value, str):
                        names.add(arg.value)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _walk_with_embedded_code(tree):
    """`ast.walk`, and into string constants that are Python programs (the
    scripts tests run in a fresh process), with their line numbers shifted
    to the string's."""
    for node in ast.walk(tree):
        yield node
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and "\n" in node.value and ("import" in node.value
                                            or "(" in node.value)):
            try:
                embedded = ast.parse(node.value)
            except (SyntaxError, ValueError):
                continue
            for sub in _walk_with_embedded_code(embedded):
                if hasattr(sub, "lineno"):
                    sub.lineno += node.lineno - 1
                yield sub


def private_violations(root, package=PACKAGE, tests="tests",
                       compat=COMPAT_MODULES):
    paths = [p for folder in (package, tests)
             for p in _python_files(root, folder)]
    paths = [p for p in paths
             if os.path.relpath(p, root).replace(os.sep, "/") not in compat]
    trees = {p: _parse(p) for p in paths}
    package_trees = [t for p, t in trees.items()
                     if os.path.relpath(p, root).startswith(package + os.sep)]
    defined = _defined_private_names(package_trees) | STANDARD_PRIVATE
    found = {}
    for path, tree in trees.items():
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        for node in _walk_with_embedded_code(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                if name == "keras.src" or name.startswith("keras.src."):
                    found.setdefault(
                        f"{relative}: imports keras.src",
                        f"{relative}:{node.lineno}")
            if isinstance(node, ast.Attribute):
                attr = node.attr
                if (attr == "src" and isinstance(node.value, ast.Name)
                        and node.value.id == "keras"):
                    found.setdefault(f"{relative}: keras.src",
                                     f"{relative}:{node.lineno}")
                elif (attr.startswith("_") and not attr.startswith("__")
                      and attr not in defined):
                    found.setdefault(f"{relative}: .{attr}",
                                     f"{relative}:{node.lineno}")
            elif isinstance(node, ast.Call) and isinstance(
                    node.func, ast.Name) and node.func.id in (
                        "getattr", "setattr", "hasattr", "delattr"):
                if len(node.args) >= 2 and isinstance(
                        node.args[1], ast.Constant) and isinstance(
                            node.args[1].value, str):
                    attr = node.args[1].value
                    if (attr.startswith("_") and not attr.startswith("__")
                            and attr not in defined):
                        found.setdefault(f"{relative}: .{attr}",
                                         f"{relative}:{node.lineno}")
    return [Violation("private", key, where)
            for key, where in sorted(found.items())]


def length_violations(root, checked=LENGTH_CHECKED,
                      max_lines=MAX_FUNCTION_LINES):
    found = []
    for entry in checked:
        folder = entry[:-len(".py")] if entry.endswith(".py") else entry
        for path in _python_files(root, folder.rstrip("/")):
            relative = os.path.relpath(path, root).replace(os.sep, "/")

            def walk(node, prefix):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef,
                                          ast.AsyncFunctionDef)):
                        name = prefix + child.name
                        lines = child.end_lineno - child.lineno + 1
                        if lines > max_lines:
                            found.append(Violation(
                                "length", f"{relative}: {name}",
                                f"{relative}:{child.lineno} ({lines} lines)"))
                        walk(child, name + ".")
                    elif isinstance(child, ast.ClassDef):
                        walk(child, prefix + child.name + ".")
                    else:
                        walk(child, prefix)

            walk(_parse(path), "")
    return found


def _skipped_lines(tree):
    """Line numbers of docstrings and import statements."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skipped.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                skipped.update(range(first.lineno, first.end_lineno + 1))
    return skipped


def code_lines(source):
    """`[(line number, normalised line)]` of the code of a module.

    A normalised line is the line's tokens joined by single spaces; a token
    spanning lines (a long string) belongs to the line it starts on.
    Comments, blank lines, docstrings and imports are left out."""
    skipped = _skipped_lines(ast.parse(source))
    tokens = {}
    ignored = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
               tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in ignored and token.start[0] not in skipped:
            tokens.setdefault(token.start[0], []).append(token.string)
    return [(line, " ".join(parts)) for line, parts in sorted(tokens.items())]


def repeat_violations(root, package=PACKAGE, min_lines=MIN_REPEATED_LINES):
    """One violation per block of `min_lines` or more code lines that two
    or more modules share (the longest such block, once, with every
    module that holds it)."""
    modules = {}
    for path in _python_files(root, package):
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        with open(path, encoding="utf-8") as f:
            modules[relative] = code_lines(f.read())
    windows = {}
    for relative, lines in modules.items():
        texts = [text for _, text in lines]
        for i in range(len(texts) - min_lines + 1):
            windows.setdefault(tuple(texts[i:i + min_lines]), []).append(
                (relative, i))
    # For each pair of modules, the runs of windows both hold at the same
    # offset from each other: each run is one repeated block.
    pairs = {}
    for places in windows.values():
        for a, i in places:
            for b, j in places:
                if a < b:
                    pairs.setdefault((a, b), set()).add((i, j))
    blocks = {}
    for (a, b), starts in pairs.items():
        for i, j in starts:
            if (i - 1, j - 1) in starts:
                continue
            n = 0
            while (i + n + 1, j + n + 1) in starts:
                n += 1
            text = tuple(x for _, x in modules[a][i:i + n + min_lines])
            for relative, k in ((a, i), (b, j)):
                lines = modules[relative]
                blocks.setdefault(text, {})[relative] = (
                    f"{relative}:{lines[k][0]}-{lines[k + n + min_lines - 1][0]}")
    found = []
    for text, places in blocks.items():
        first = text[0] if len(text[0]) <= 60 else text[0][:57] + "..."
        found.append(Violation(
            "repeat",
            f"{' ~ '.join(sorted(places))}: {len(text)} lines from `{first}`",
            ", ".join(places[p] for p in sorted(places))))
    return sorted(found)


def find_violations(root, package=PACKAGE, tests="tests"):
    """Returns every violation under `root`, sorted."""
    graph = import_graph(root, package)
    found = (layer_violations(graph) + cycle_violations(graph)
             + private_violations(root, package, tests)
             + private_import_violations(root, package)
             + length_violations(root)
             + repeat_violations(root, package))
    return sorted(found)


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))
    found = find_violations(root)
    for violation in found:
        print(violation)
    print(f"{len(found)} violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
