"""Every module of the proxy imports on its own, so import cycles cannot creep back (as
aiohttp's own tests/test_circular_imports.py does), and the gate imports no web framework.

One interpreter (`python -W error`) imports the modules one after another, each from
nothing: before each import every `proxy` module is dropped from `sys.modules`, so each
starts its own chain of imports, as `python -W error -c "import proxy.x"` would. A cycle
shows as an ImportError (or AttributeError) of the module that starts it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

MODULES = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for path in (REPO / "proxy").rglob("*.py"))

_EACH_ON_ITS_OWN = """
import importlib, json, sys, traceback
results = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "proxy" or m.startswith("proxy.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        results[name] = traceback.format_exc()
    else:
        results[name] = None
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def imported() -> dict[str, str | None]:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _EACH_ON_ITS_OWN, json.dumps(MODULES)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    results: dict[str, str | None] = json.loads(done.stdout)
    return results


def test_every_module_is_found() -> None:
    assert {"proxy", "proxy.app", "proxy.gate", "proxy.gate.core",
            "proxy.fronts.twilio.front", "proxy.dial.api"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(imported: dict[str, str | None], module: str) -> None:
    assert imported[module] is None, imported[module]


def test_the_gate_imports_no_web_framework_and_no_front() -> None:
    """proxy/gate/ works on plain values: importing it loads neither aiohttp nor a front."""
    gate = [m for m in MODULES if m == "proxy.gate" or m.startswith("proxy.gate.")]
    script = (f"import sys\nfor m in {gate!r}: __import__(m)\n"
              "print([m for m in sys.modules if m.split('.')[0] == 'aiohttp'"
              " or m.startswith(('proxy.fronts', 'proxy.dial', 'proxy.front'))])")
    done = subprocess.run([sys.executable, "-W", "error", "-c", script], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
