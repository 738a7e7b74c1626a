"""The one-way dependency rule of docs/architecture.md, checked in fresh interpreters.

The machine's definition (``flexigan.hw.arch``) imports nothing else of flexigan; the compiler
imports the definition only, never a simulator and never an Amaranth block.
"""

import json
import pkgutil
import subprocess
import sys

import pytest

import flexigan.compiler
import flexigan.hw.arch

# Lists, in a fresh interpreter, the modules that importing the given ones loaded: flexigan's
# own, and those that define a wiring.Component subclass.
PROBE = """
import importlib, inspect, json, sys
from amaranth.lib import wiring
for name in sys.argv[1:]:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.startswith("flexigan"))
components = sorted(
    name for name, module in list(sys.modules.items())
    if module is not None and any(
        inspect.isclass(v) and issubclass(v, wiring.Component) and v is not wiring.Component
        and v.__module__ == name for v in vars(module).values()))
print(json.dumps({"loaded": loaded, "components": components}))
"""


def _modules(package):
    return [package.__name__] + [f"{package.__name__}.{m.name}"
                                 for m in pkgutil.iter_modules(package.__path__)]


def _probe(modules):
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def test_the_compiler_loads_no_simulator_and_no_hardware_block():
    modules = _modules(flexigan.compiler)
    assert len(modules) > 10
    found = _probe(modules)
    assert [m for m in found["loaded"] if m.startswith("flexigan.sim")] == []
    assert found["components"] == []
    assert "flexigan.hw.arch.isa" in found["loaded"]


@pytest.mark.parametrize("module", _modules(flexigan.hw.arch))
def test_the_machine_definition_imports_nothing_else_of_flexigan(module):
    found = _probe([module])
    assert [m for m in found["loaded"]
            if m not in ("flexigan", "flexigan.errors", "flexigan.hw")
            and not m.startswith("flexigan.hw.arch")] == []
    assert found["components"] == []


def test_the_probe_sees_a_hardware_block():
    # The check above can fail: importing a block is seen.
    found = _probe(["flexigan.hw.lane"])
    assert "flexigan.hw.lane" in found["components"]


def test_the_host_client_loads_no_hardware_block():
    # `flexigan run` talks to a board: it needs the register map and the bridge protocol
    # (hw/arch), not the Amaranth gateware.
    found = _probe(["flexigan.host"])
    assert found["components"] == []
    assert "flexigan.hw.arch.bridge" in found["loaded"]
