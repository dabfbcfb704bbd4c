"""The package's architecture, checked by `scripts/check_architecture.py`.

`ALLOWED` lists the violations not yet fixed, each with its reason. A new
violation fails `test_no_violation_beyond_the_allow_list`; a fixed one
fails `test_allow_list_has_no_fixed_entry` until its entry is removed.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.backend_neutral

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_checker():
    path = os.path.join(ROOT, "scripts", "check_architecture.py")
    spec = importlib.util.spec_from_file_location("check_architecture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()

# Violations not yet fixed: key (as the checker prints it) -> reason.
ALLOWED = {
    # --- blocks repeated between modules ---
    "keras_lrphase/callbacks/auto_decay.py ~ "
    "keras_lrphase/callbacks/controller_callback.py: "
    "6 lines from `reducer = None ,`":
        "AutoDecay's signature lists ControllerCallback's arguments, as "
        "Keras callbacks spell theirs out, rather than taking **kwargs.",
    "keras_lrphase/callbacks/auto_decay.py ~ "
    "keras_lrphase/controllers/auto_decay_controller.py: "
    "9 lines from `def __init__ (`":
        "the callback's signature lists its controller's arguments, so "
        "that help() and the API pages show them.",
}


def unexpected(violations, allowed):
    """The violations whose key `allowed` does not list."""
    return [v for v in violations if v.key not in allowed]


def test_no_violation_beyond_the_allow_list():
    found = checker.find_violations(ROOT)
    new = unexpected(found, ALLOWED)
    assert not new, "New architecture violations:\n" + "\n".join(
        map(str, new))


def test_allow_list_has_no_fixed_entry():
    keys = {v.key for v in checker.find_violations(ROOT)}
    fixed = sorted(set(ALLOWED) - keys)
    assert not fixed, ("Fixed; remove from ALLOWED in "
                       "tests/test_architecture.py:\n" + "\n".join(fixed))


def test_importing_the_package_loads_no_application_module():
    # The package's root registers its serializable classes with Keras on
    # import; none of them may come from the application layer.
    script = ("import sys, keras_lrphase\n"
              "print(sorted(m for m in sys.modules if m.startswith("
              "('keras_lrphase.training', 'keras_lrphase.cli', "
              "'keras_lrphase.presets'))))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "[]"


def test_distiller_keeps_its_old_import_path():
    pytest.importorskip("keras")
    from keras_lrphase.models import RegularizedDistiller
    from keras_lrphase.models import build_distiller
    from keras_lrphase.training import distillation

    assert distillation.RegularizedDistiller is RegularizedDistiller
    assert distillation.build_distiller is build_distiller


def _write(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _long_function(name, lines):
    """A function of exactly `lines` lines."""
    # Variables named after the function: two such functions are no
    # repeated block.
    body = "".join(f"    {name}_{i} = {i}\n" for i in range(lines - 2))
    return f"def {name}():\n{body}    return 0\n"


SAME_DOCSTRING_AND_IMPORTS = """\
    \"\"\"A module.

    Its docstring is long,
    and the same in two modules,
    line for line,
    more than six lines,
    for the check to skip.
    \"\"\"

    import os
    import sys
    import json
    import math
    import time
    import textwrap


    def five(values):
        total = 0
        for value in values:
            total += value
        return total
    """

# Repeats that are not reported: a docstring, imports and a block of five
# lines shared by two modules, and a block repeated within one module.
REPEATED_IN_ONE_MODULE = SAME_DOCSTRING_AND_IMPORTS + """\


    def twice(a):
        b = a + 1
        c = b * 2
        d = c - 3
        e = d / 4
        f = e ** 5
        return f


    def again(a):
        b = a + 1
        c = b * 2
        d = c - 3
        e = d / 4
        f = e ** 5
        return f
    """

CLEAN = {
    "keras_lrphase/__init__.py": "",
    "keras_lrphase/callbacks/__init__.py": "",
    "keras_lrphase/callbacks/a.py": """\
        from keras_lrphase.backend import keras_compat


        class A:
            def __init__(self):
                self._own = 1

            def read(self, optimizer):
                return self._own, keras_compat.lr(optimizer)
        """,
    "keras_lrphase/backend/__init__.py": "",
    "keras_lrphase/backend/keras_compat.py": """\
        import keras.src.utils


        def lr(optimizer):
            return optimizer._built_state
        """,
    "keras_lrphase/training/__init__.py": "",
    "keras_lrphase/training/app.py": (
        "from keras_lrphase.callbacks import a\n"
        "from ..callbacks.a import A\n"
        + _long_function("short_enough", 80)),
    "keras_lrphase/cli.py": "from keras_lrphase.training import app\n",
    "keras_lrphase/callbacks/same1.py": REPEATED_IN_ONE_MODULE,
    "keras_lrphase/backend/same2.py": SAME_DOCSTRING_AND_IMPORTS + """\


    def other(a):
        return a
    """,
    "tests/test_a.py": """\
        from keras_lrphase.callbacks.a import A


        def test_a():
            assert A()._own == 1
        """,
}


def test_clean_synthetic_package_has_no_violation(tmp_path):
    _write(tmp_path, CLEAN)
    assert checker.find_violations(str(tmp_path)) == []
    assert checker.main(["check_architecture.py", str(tmp_path)]) == 0


def test_each_kind_of_new_violation_is_found(tmp_path):
    files = dict(CLEAN)
    files.update({
        # A library module importing the application layer, lazily.
        "keras_lrphase/callbacks/b.py": """\
            def late():
                from keras_lrphase.training.app import A
                return A
            """,
        # A cycle through a relative import.
        "keras_lrphase/callbacks/c.py": "from . import d\n",
        "keras_lrphase/callbacks/d.py": "from .c import something\n",
        # keras.src and a Keras private attribute outside keras_compat.
        "keras_lrphase/callbacks/e.py": """\
            from keras.src import ops


            def read(optimizer):
                return optimizer._var_key
            """,
        # A private attribute in a test's fresh-process script.
        "tests/test_b.py": '''\
            SCRIPT = """
            import keras
            print(model.optimizer._built_state)
            """
            ''',
        "keras_lrphase/training/long.py": _long_function("too_long", 81),
        # Another module's private helper; another package's private module.
        "keras_lrphase/callbacks/f.py": """\
            from keras_lrphase.callbacks.a import _helper
            from keras_lrphase.backend import _shared
            """,
        "keras_lrphase/backend/_shared.py": "",
        # A package's private module used within the package is fine.
        "keras_lrphase/backend/g.py": "from keras_lrphase.backend import _shared\n",
        # One block of eight lines in two modules, spaced and commented
        # differently: found once, for all its six-line windows.
        "keras_lrphase/callbacks/h.py": """\
            def mean(values):
                total = 0
                for value in values:
                    total += value
                if not values:
                    return 0.0
                count = len(values)
                return total / count
            """,
        "keras_lrphase/backend/k.py": """\
            import math


            def mean(values):
                total = 0  # the sum
                for value in values:
                    total  +=  value

                if not values:
                    return 0.0
                count = len(values)
                return total / count
            """,
    })
    _write(tmp_path, files)
    found = checker.find_violations(str(tmp_path))
    assert sorted((v.kind, v.key) for v in found) == [
        ("cycle", "keras_lrphase.callbacks.c <-> keras_lrphase.callbacks.d"),
        ("layer", "keras_lrphase.callbacks.b -> keras_lrphase.training.app "
                  "(library imports application)"),
        ("length", "keras_lrphase/training/long.py: too_long"),
        ("private", "keras_lrphase/callbacks/e.py: ._var_key"),
        ("private", "keras_lrphase/callbacks/e.py: imports keras.src"),
        ("private", "keras_lrphase/callbacks/f.py: imports private "
                    "keras_lrphase.backend._shared"),
        ("private", "keras_lrphase/callbacks/f.py: imports private "
                    "keras_lrphase.callbacks.a._helper"),
        ("private", "tests/test_b.py: ._built_state"),
        ("repeat", "keras_lrphase/backend/k.py ~ keras_lrphase/callbacks/h.py: "
                   "8 lines from `def mean ( values ) :`"),
    ]
    # The allow-list of the real package does not excuse any of them.
    assert len(unexpected(found, ALLOWED)) == len(found)
    # And the script exits with status 1.
    assert checker.main(["check_architecture.py", str(tmp_path)]) == 1
