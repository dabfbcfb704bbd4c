"""The short README: the two commands, its example, its links, the study.

The long guides moved to the documentation site (`docs/`); the checks of
the text that moved with them are in tests/test_docs_examples.py.
"""

import pathlib
import re

import pytest

pytestmark = pytest.mark.backend_neutral

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _section(text, heading):
    """The text of a section, from its heading to the next of its level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    end = re.search(rf"^{level} ", rest, re.M)
    return heading + "\n" + (rest[:end.start()] if end else rest)


def _tables(text):
    """The Markdown tables of a text, each as its list of lines."""
    return [block.splitlines() for block in
            re.findall(r"(?:^\|.*\|\n)+", text, re.M)]


def test_readme_gives_the_two_commands():
    text = README.read_text()
    assert "keras-lrphase compare --preset demo" in text
    assert ('pip install torch==2.13.0 && pip install -e '
            '".[tensorflow,test,jax,torch]" && python -m pytest -q') in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert ("pip install -q torch==2.13.0" in ci
            and 'pip install -q -e ".[tensorflow,test,jax,torch]"' in ci
            and "python -m pytest -q" in ci)


def test_readme_and_home_page_give_the_same_commands_and_times():
    def commands(path):
        section = _section((ROOT / path).read_text(), "## Two commands")
        return re.search(r"```bash\n(.*?)```", section, re.S).group(1)

    readme = commands("README.md")
    assert "in about 3 to 9 minutes on 2 CPU" in readme
    assert "about 7 to 22\n#    minutes on 2 CPU cores" in readme
    assert readme == commands("docs/index.md")


def test_readme_links_lead_to_pages_and_headings_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#([^)]+))?\)", README.read_text())
    pages = {page for page, _ in links}
    # The README links to the guides, the results and the architecture.
    assert {"docs/guides/getting-started.md", "docs/guides/two-phase.md",
            "docs/guides/command-line.md", "docs/results/excursion.md",
            "docs/architecture.md", "docs/api/index.md"} <= pages
    for page, anchor in links:
        target = ROOT / page
        assert target.is_file(), page
        if anchor:
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.*)$", target.read_text(), re.M)}
            assert anchor in slugs, (page, anchor)


def test_readme_keeps_the_two_phase_study_tables_of_the_results_pages():
    study = _section(README.read_text(), "## Two-phase and the unstable start")
    tables = _tables(study)
    # The rules, the cifar10-cpu table and the two excursion tables, in
    # order.
    assert [t[0] for t in tables] == [
        "| argument | default | the paper's rule |",
        "| configuration | batch | LR | decay epochs | best val. acc. "
        "| final val. acc. | p (Welch, final) |",
        "| row | final val. acc. (10 seeds) | p vs step decay "
        "| plateau / switch after epoch | decays per run |",
        "| row | final val. acc. (seeds 0 / 1 / 2) | mean | plateau / switch "
        "| decays after epochs |"]
    assert tables[1] in _tables((ROOT / "docs/results/cifar10-cpu.md").read_text())
    excursion = _tables((ROOT / "docs/results/excursion.md").read_text())
    assert tables[2] in excursion and tables[3] in excursion
    # Their commands and what they do not show.
    assert ("keras-lrphase compare --preset cifar10-cpu --seeds 5 --jobs 5"
            in study)
    assert "--preset cifar10-excursion-cpu" in study
    assert "--preset digits-excursion" in study
    assert "the table does not show the paper's" in study
    assert "*not* reproduced" in study
