"""Sphinx configuration for jaxkl's documentation (``bash scripts/docs.sh`` builds it).

Markdown pages are read by myst-parser; the API reference is autodoc over the public
modules with napoleon for the Google-style docstrings; math is rendered by MathJax 3,
shipped with the site (sphinx-mathjax-offline), so no page needs the network.
"""

import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's jaxkl, whatever is installed

import jaxkl  # noqa: E402

project = "jaxkl"
author = "jaxkl authors"
copyright = "2026, jaxkl authors"
release = jaxkl.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# MyST: $...$ and $$...$$ math, GitHub-style heading anchors (README and conformance.md
# link to #section-names), ::: fences.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 4

# autodoc / napoleon: Google-style docstrings (Args, Returns, Raises, Example).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_attr_annotations = False  # the class signature shows the types
autodoc_typehints = "signature"
# Shown by name, not expanded into the union it stands for (jaxkl's modules use
# ``from __future__ import annotations``, so annotations are read as source text).
autodoc_type_aliases = {"ArrayLike": "jax.typing.ArrayLike"}
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False
autosummary_generate = False

html_theme = "furo"
html_title = f"jaxkl {release}"
html_static_path = []
html_show_sourcelink = False
pygments_style = "sphinx"


def _skip_namedtuple_aliases(app, what, name, obj, skip, options):
    """NamedTuple fields carry "Alias for field number N": the class docstring's
    Attributes section already documents them."""
    doc = getattr(obj, "__doc__", None) or ""
    if doc.startswith("Alias for field number"):
        return True
    return None


# README.md and BENCHMARKS.md live at the repository root and stay complete documents for
# GitHub; the pages here include their sections. For the build only, each level-2 heading
# ``## Title`` of an included root file gets two MyST comments, ``% section: Title``
# before it and ``% body: Title`` after it, for ``start-after``/``end-before``, and
# its repository-relative links are rewritten for pages in docs/ (docs/x -> x,
# BENCHMARKS.md -> benchmarks.md, CHANGELOG.md -> changelog.md).
_ROOT_FILES = {"README.md", "BENCHMARKS.md", "CHANGELOG.md"}
_LINKS = (("](docs/", "]("), ("](BENCHMARKS.md", "](benchmarks.md"),
          ("](CHANGELOG.md", "](changelog.md"), ("](README.md", "](index.md"))


def mark_sections(text: str) -> str:
    """Adds the section markers and rewrites root-relative links (see above)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"## (.+?)\s*$", line)
        if match:
            title = match.group(1)
            out += ["", f"% section: {title}", "", line, "", f"% body: {title}", ""]
        else:
            for old, new in _LINKS:
                line = line.replace(old, new)
            out.append(line)
    return "\n".join(out) + "\n"


def _include_read(app, relative_path, parent_docname, content):
    if pathlib.PurePath(relative_path).name in _ROOT_FILES:
        content[0] = mark_sections(content[0])


def _drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant (a dict, a type alias) has no docstring of its own: autodoc would show
    its type's (``dict``'s); the module docstring describes it instead."""
    if what in ("data", "attribute") and not inspect.isclass(obj) and lines:
        own = inspect.getdoc(obj) or ""
        typedoc = inspect.getdoc(type(obj)) or ""
        origin = getattr(obj, "__origin__", None)
        origindoc = (inspect.getdoc(origin) or "") if origin is not None else ""
        if own and own in (typedoc, origindoc):
            lines.clear()


def _alias_names(app, what, name, obj, options, signature, return_annotation):
    """Inside a generic (``Sequence[ArrayLike]``, ``ArrayLike | None``) autodoc writes an
    alias as ``TypeAliasForwardRef('jax.typing.ArrayLike')``: show the name."""
    def clean(text):
        return re.sub(r"TypeAliasForwardRef\('([^']*)'\)", r"\1", text) if text else text
    return clean(signature), clean(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _alias_names)
    app.connect("autodoc-skip-member", _skip_namedtuple_aliases)
    app.connect("autodoc-process-docstring", _drop_type_docstrings)
    app.connect("include-read", _include_read)
