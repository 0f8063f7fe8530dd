"""The documentation runs: the library's doctests, every ```python block of README.md, and the
references of docs/derivations.md (equation numbers and test names) point at things that
exist.

A README block preceded by a line ``<!-- no-test: reason -->`` is skipped; use it only for a
block that needs files or an accelerator.
"""

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import jaxbp
from jaxbp.run import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DERIVATIONS = ROOT / "docs" / "derivations.md"
MODULES = sorted(
    m.name.removeprefix("jaxbp.") for m in pkgutil.walk_packages(jaxbp.__path__, "jaxbp.")
)
# Modules whose public functions carry an ``Examples:`` doctest: they must keep at least one.
WITH_EXAMPLES = (
    "backprop",
    "curvature",
    "gradient_flow",
    "input_checks",
    "laplace",
    "layer_trace",
    "per_example",
)


@pytest.mark.parametrize("name", MODULES)
def test_doctests_of_the_library_pass(name):
    try:
        module = importlib.import_module(f"jaxbp.{name}")
    except ImportError as e:  # a module that needs the experiments extra
        pytest.skip(f"jaxbp.{name} needs an optional dependency: {e}")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, module.__name__):
        runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, "".join(report)
    if name in WITH_EXAMPLES:
        assert attempted > 0, f"jaxbp.{name} lost its doctests"


def _readme_blocks():
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```", text, re.S):
        line = text.count("\n", 0, match.start("code")) + 1
        skip = re.match(r"<!-- no-test: (.+) -->", match.group("before").strip())
        marks = [pytest.mark.skip(reason=skip.group(1))] if skip else []
        blocks.append(pytest.param(match.group("code"), id=f"README.md:{line}", marks=marks))
    return blocks


def test_readme_has_python_blocks():
    assert _readme_blocks(), "README.md has no ```python block: the API tour is gone"


@pytest.mark.parametrize("code", _readme_blocks())
def test_readme_python_block_runs(code, capsys):
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    capsys.readouterr()


def _defined_equations() -> set[str]:
    """The labels of docs/derivations.md: ``(1.1)`` ... at the end of a displayed line."""
    return set(re.findall(r"\((\d\.\d+)\)\s*$", DERIVATIONS.read_text(), re.M))


def test_every_equation_cited_in_code_and_docs_is_defined():
    defined = _defined_equations()
    assert {"1.1", "1.9", "2.7", "3.6", "3.7", "4.9", "0.3"} <= defined
    sources = [
        *ROOT.glob("jaxbp/**/*.py"),
        *ROOT.glob("experiments/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
        README,
        DERIVATIONS,
    ]
    cited = {}
    for path in sources:
        for label in re.findall(r"eqs?\. \((\d\.\d+)\)", path.read_text()):
            cited.setdefault(label, path.name)
    missing = {label: where for label, where in cited.items() if label not in defined}
    assert not missing, f"cited but not defined in docs/derivations.md: {missing}"


def test_every_test_named_in_the_docs_exists():
    # Settings and data fields that begin with test_ (test_fraction, test_path, test_source)
    # are not test names.
    defined = set(config_lib.FIELDS) | set(jaxbp.data.Dataset._fields)
    for path in ROOT.glob("tests/**/test_*.py"):
        defined.add(path.stem)  # a test module named as tests/[layer/]test_x.py
        defined |= set(re.findall(r"^\s*def (test_\w+)", path.read_text(), re.M))
    for doc in (DERIVATIONS, README):
        named = set(re.findall(r"\b(test_[a-z0-9_]+)\b", doc.read_text()))
        missing = sorted(n for n in named if n not in defined and not n.endswith("_"))
        assert not missing, f"{doc.name} names tests that do not exist: {missing}"


def test_the_docs_point_nowhere_outside_the_repository():
    for doc in (DERIVATIONS, README, *ROOT.glob("jaxbp/**/*.py")):
        text = doc.read_text()
        assert "../" not in text, doc
        assert not re.search(r"\b\d{3}_[0-9a-f]{16}\.txt\b", text), doc
