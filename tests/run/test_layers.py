"""The layers as a user meets them: ``import jaxbp`` leaves the run layer alone, and the run
layer without its extra stops at one line that names the install command."""

import subprocess
import sys

from experiment_runs import ROOT


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_import_jaxbp_does_not_import_the_run_layer_or_its_extra():
    code = (
        "import sys, jaxbp\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('orbax', 'tensorboardX', "
        "'matplotlib') or m.startswith('jaxbp.run')]\n"
        "assert not loaded, loaded\n"
        "print('clean')"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_the_run_layer_without_its_extra_raises_one_line_naming_the_install():
    for missing in ("orbax", "tensorboardX", "matplotlib", "dp_accounting"):
        code = (
            f"import sys; sys.modules[{missing!r}] = None\n"
            "try:\n"
            "    import jaxbp.run.loop\n"
            "except ImportError as e:\n"
            "    print(type(e).__name__, e)\n"
        )
        result = _python(code)
        assert result.returncode == 0, result.stderr
        line = result.stdout.strip()
        assert "\n" not in line
        assert line.startswith("MissingExtraError jaxbp.run needs the experiments extra"), line
        assert f"missing: {missing}" in line and 'pip install "jaxbp[experiments]"' in line


def test_a_script_without_the_extra_stops_with_one_line_and_no_traceback():
    code = (
        "import sys, runpy; sys.modules['orbax'] = None\n"
        "sys.argv = ['train', '--help']\n"
        "runpy.run_module('experiments.train', run_name='__main__')\n"
    )
    result = _python(code)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "experiments: jaxbp.run needs the experiments extra, which is not installed "
        '(missing: orbax): pip install "jaxbp[experiments]"'
    ]
