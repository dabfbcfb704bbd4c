"""The wheel and the sdist, built from the checkout and looked into."""

import email
import os
import pathlib
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and wheel as `pip install` would build them (PEP 517)."""
    out = tmp_path_factory.mktemp("dist")
    # build_meta rewrites sys.argv, and setuptools logs to stdout: the
    # folder is read first and the names are the last two lines.
    code = ("import sys\nfrom setuptools import build_meta as b\n"
            "out = sys.argv[1]\nsdist = b.build_sdist(out)\n"
            "wheel = b.build_wheel(out)\nprint(sdist)\nprint(wheel)")
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    sdist, wheel = result.stdout.strip().splitlines()[-2:]
    return out / sdist, out / wheel


def test_the_wheel_installs_the_package_its_license_and_the_command(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_string(
            archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    # Nothing but the package and its metadata: no top-level module.
    assert {n.split("/")[0] for n in names} == {"keras_lrphase", info}
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert "keras-lrphase = keras_lrphase.cli_entry:main" in entry_points
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["Author"]
    assert {u.split(",")[0] for u in metadata.get_all("Project-URL")} == {
        "Homepage", "Documentation", "Source", "Issues"}
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    # PEP 639: a license expression replaces the license classifiers.
    assert not any(c.startswith("License ::") for c in classifiers)


def test_the_sdist_holds_what_its_tests_read(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    expected = {"LICENSE", "README.md", "setup.cfg", "pyproject.toml",
                ".ci/run"}
    for folder, suffix in (("tests", ".py"), ("notebooks", ".ipynb"),
                           ("examples", ".py"), ("scripts", ".sh"),
                           ("benchmarks", ".py"), ("keras_lrphase", ".py")):
        expected |= {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob(f"*{suffix}")
                     if "__pycache__" not in p.parts}
    assert expected - names == set()


def test_the_console_script_answers_help_without_keras(tmp_path):
    """pip's console-script wrapper of the entry point, as installed: the
    package is imported without Keras while it starts."""
    script = tmp_path / "keras-lrphase"
    script.write_text(
        "import re\nimport sys\nfrom keras_lrphase.cli_entry import main\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        "    sys.exit(main())\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for argv, status in ((["--help"], 0), (["train", "--dataset", "digts"], 2)):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", str(script), *argv], env=env,
            capture_output=True, text=True, timeout=120)
        assert result.returncode == status, result.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip()
                    for line in result.stderr.splitlines() if "|" in line}
        assert "keras_lrphase.cli_entry" in imported
        assert not imported & {"keras", "tensorflow", "jax", "torch"}
