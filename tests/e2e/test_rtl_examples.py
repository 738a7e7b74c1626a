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

#: The image-to-image examples at 256 x 256: tens of millions of cycles, hours on the RTL at
#: ~9,000 cycles/s. Their mechanisms (InstanceNorm, Pad, LUT passes) run on the RTL in
#: tests/hw/test_accelerator.py and, as a whole network, in the small CycleGAN below.
TOO_LONG = {"cyclegan/generator.onnx", "pix2pix/generator.onnx"}
#: Every other ONNX model under examples/, a CycleGAN as small as its structure allows
#: (examples/cyclegan/make_model.py: ngf 4, one residual block, 16 x 16) and a Keras generator
#: the Keras example did not see (examples/keras_dcgan/train.py: RGB, UpSampling2D).
MODELS = sorted(str(path.relative_to(EXAMPLES)) for path in EXAMPLES.glob("*/*.onnx")
                if str(path.relative_to(EXAMPLES)) not in TOO_LONG) \
    + ["../tests/models/cyclegan_ngf4_blocks1_16.onnx",
       "../tests/models/keras_w24_16_8_rgb_generator.onnx"]
#: Networks whose RTL cycles on the 16 x 8 machine exceed the cycle model's estimate by more
#: than 5%: the small CycleGAN, 1.224 at 08d5c71 and 1.121 since the post-writer writes a
#: pixel's lanes in one word as one write. 3,984 of its 5,744 RUN pixels are RUNs of one lane
#: (normalizing passes, Pad copies) on many groups at a byte a cycle each, most likely writing
#: bytes of the same words (channels side by side; not measured per layer): two such groups on
#: one bank take 1.6x the model's cycles, which charges no write conflicts (tests/hw/
#: test_group.py, the expected failure there). On the 2 x 4 test machine it is within 5 %
#: (1.015, tests/hw/test_accelerator.py), on 2 of the 16 groups 1.065.
#: Their outputs must still be bit-exact; the cycle bound is reported as an expected failure.
CYCLES_NOT_YET_MODELLED = {"../tests/models/cyclegan_ngf4_blocks1_16.onnx"}


def test_the_examples_are_all_here():
    """The parametrization below finds the shipped networks (not an empty list)."""
    assert {"digits/generator.onnx", "digits/discriminator.onnx", "dcgan32/generator.onnx",
            "dcgan64/generator.onnx", "dcgan64/discriminator.onnx",
            "keras_dcgan/generator.onnx", "keras_dcgan/discriminator.onnx"} <= set(MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_example_on_the_rtl_bit_exact_with_isa_sim(model, build_root):
    config = preset("sim")
    qgraph, inputs = quantized(str(EXAMPLES / model))
    program = lower(qgraph, config, True)
    image = program.frame(inputs)
    rtl = run_programs([image], config,
                       build_dir=build_root / model.replace("../", "").replace("/", "-"))[0]
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
