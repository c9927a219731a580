"""Every module of pexp imports on its own: imported first, in an interpreter where no other pexp module is
loaded, none fails. Two modules that import each other at their top fail this for one of the two orders (the
second finds the first half-initialised), so each module is imported first once."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

MODULES = sorted(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                 for path in (ROOT / "pexp").rglob("*.py"))

# One interpreter for all (a fresh one per module would import torch ~50 times): before each module, every pexp
# entry of sys.modules is dropped, so that module is the first of pexp imported; third-party modules stay loaded.
IMPORT_EACH_FIRST = """
import importlib, json, sys, traceback
failures = {}
for name in sys.argv[1:]:
    for loaded in [key for key in sys.modules if key == "pexp" or key.startswith("pexp.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException as error:  # noqa: BLE001 - any failure, SystemExit included, is this module's
        failures[name] = traceback.format_exception_only(error)[-1].strip()
print(json.dumps(failures))
"""


@pytest.fixture(scope="module")
def failures() -> dict[str, str]:
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST, *MODULES], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_is_listed():
    assert {"pexp", "pexp.data", "pexp.figures.base", "pexp.runs_table", "pexp.eval.margin"} <= set(MODULES)
    assert len(MODULES) > 40


@pytest.mark.parametrize("module", MODULES)
def test_imports_first(module, failures):
    assert module not in failures, f"import {module} (first of pexp) fails: {failures[module]}"


def test_the_entry_points_leave_torchvision_unimported():
    """torchvision takes about 1.4 s to import (it imports torch._dynamo): only reading CIFAR-10 or MNIST (their
    official file lists, checksums, downloads) imports it, not every figure, evaluation or report process."""
    code = ("import sys, pexp.figures.__main__, pexp.evaluate, pexp.report, pexp.runs.__main__; "
            "print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
