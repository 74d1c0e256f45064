"""The documentation site (docs/, built by scripts/docs.sh) covers the public API and the
README: a new public name or README section cannot be left out of it. Cheap: reads files,
builds nothing (CI builds the site with warnings as errors)."""

import importlib
import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC_MODULES = ("jaxkl", "jaxkl.estimators", "jaxkl.stats", "jaxkl.montecarlo",
                  "jaxkl.sharding", "jaxkl.mixtures", "jaxkl.families", "jaxkl.reference",
                  "jaxkl.fitting", "jaxkl.rl", "jaxkl.rl.audit", "jaxkl.rl.presets",
                  "jaxkl.rl.tabular")


def test_every_public_module_is_in_the_reference():
    public = {p.stem for p in (ROOT / "jaxkl").glob("*.py") if not p.stem.startswith("_")}
    public |= {"rl"} | {f"rl.{p.stem}" for p in (ROOT / "jaxkl" / "rl").glob("*.py")
                        if not p.stem.startswith("_")}
    found = {"jaxkl"} | {f"jaxkl.{m}" for m in public if m != "conftest"}
    assert found == set(PUBLIC_MODULES), "a public module is missing from PUBLIC_MODULES"
    toctree = (DOCS / "api.md").read_text()
    for module in PUBLIC_MODULES:
        assert (DOCS / "api" / f"{module}.rst").is_file(), f"no docs/api/{module}.rst"
        assert re.search(rf"^api/{re.escape(module)}$", toctree, re.M), \
            f"docs/api.md's toctree does not list {module}"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_is_documented_on_its_module_page(module):
    """Each name of ``__all__`` is an autodoc directive, an autosummary entry (its home
    module's, for a re-export) or a submodule link on docs/api/MODULE.rst."""
    mod = importlib.import_module(module)
    page = (DOCS / "api" / f"{module}.rst").read_text()
    missing = []
    for name in mod.__all__:
        if inspect.ismodule(getattr(mod, name)):
            pattern = rf":doc:`{re.escape(module)}\.{name}`"
        else:
            pattern = rf"^(\.\. auto\w+:: {name}|   ~?([\w.]+\.)?{name})$"
        if not re.search(pattern, page, re.M):
            missing.append(name)
    assert not missing, f"docs/api/{module}.rst does not document {missing}"


def _readme_sections():
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # headings in code blocks
    return re.findall(r"^## (.+?)\s*$", text, re.M)


def test_every_readme_section_is_on_a_docs_page():
    """docs/*.md include README sections by the markers docs/conf.py adds
    (``% section: TITLE`` before a ``## TITLE`` heading, ``% body: TITLE`` after it)."""
    sections = _readme_sections()
    assert "The estimators" in sections and len(sections) >= 10
    pages = {p.name: p.read_text() for p in DOCS.glob("*.md")}
    used = {m for text in pages.values()
            for m in re.findall(r':(?:start-after|end-before): "% (?:section|body): (.+)"', text)}
    unknown = used - set(sections)
    assert not unknown, f"docs pages include README sections that no longer exist: {unknown}"
    starts = {m for text in pages.values()
              for m in re.findall(r':start-after: "% (?:section|body): (.+)"', text)}
    # A section is on the site if a page starts at it or a page's range runs over it.
    ranges = []
    for text in pages.values():
        for block in re.findall(r"```\{include\} \.\./README\.md\n(.*?)```", text, re.S):
            start = re.search(r':start-after: "% (?:section|body): (.+)"', block)
            end = re.search(r':end-before: "% section: (.+)"', block)
            first = sections.index(start.group(1)) if start else 0
            if end:
                last = sections.index(end.group(1))
            elif ":end-before:" in block:  # part of the start section only
                last = first + 1
            else:
                last = len(sections)
            ranges.append(range(first, last))
    left_out = [s for i, s in enumerate(sections) if not any(i in r for r in ranges)]
    assert not left_out, f"README sections on no docs page: {left_out}"
    assert starts  # the markers are used at all


def test_the_gallery_page_shows_every_gallery_figure():
    figures = sorted(p.name for p in (DOCS / "gallery").glob("*.png"))
    page = (DOCS / "gallery.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert figures
    assert not [f for f in figures if f"```{{figure}} gallery/{f}" not in page], \
        "docs/gallery.md misses a figure of docs/gallery"
    assert not [f for f in figures if f"docs/gallery/{f}" not in readme], \
        "the README gallery misses a figure of docs/gallery"
