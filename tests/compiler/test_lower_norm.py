"""InstanceNorm lowered onto the accelerator (compiler/norm.py): statistics, NORM FINISH and
the normalizing pass, bit-exact with the golden model on the instruction-level simulator, in
ACT and through external memory in row bands, in rounds when PARAM is short, for batches."""

import numpy as np
import pytest

from flexigan.compiler.lower import lower
from flexigan.hw.arch.config import AcceleratorConfig
from tests.helpers import SIM, check_bit_exact, norm_model, quantized

#: Two groups of two lanes, small memories: a 6 x 12 x 12 tensor does not fit ACT.
SMALL = AcceleratorConfig(groups=2, lanes=2, act_banks=2, act_bank_bytes=512, weight_bytes=256,
                          param_entries=8, uop_depth=24, axi_data_width=32, mem_latency=4,
                          burst_bytes=64)


CASES = {
    "affine, relu, in ACT": (lambda: norm_model(), SIM, 1),
    "no affine (CycleGAN), no activation": (lambda: norm_model(act=None, affine=False), SIM, 1),
    "residual block's end": (lambda: norm_model(act=None, residual=True), SIM, 1),
    "in row bands, in rounds of channels": (lambda: norm_model(hw=(12, 12)), SMALL, 1),
    "batch of two": (lambda: norm_model(act="LeakyRelu", hw=(5, 7)), SIM, 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_instance_norm_runs_bit_exactly_on_the_machine(case):
    make, config, batch = CASES[case]
    qgraph, inputs = quantized(make())
    if batch > 1:
        inputs = {k: np.concatenate([v, v[::-1]]) for k, v in inputs.items()}
    program, report = check_bit_exact(qgraph, inputs, config=config, batch=batch)
    layers = [layer["op"] for layer in program.layout["layers"]]
    assert "Norm" in layers


def test_a_banded_norm_reads_its_input_in_stages_from_external_memory():
    qgraph, inputs = quantized(norm_model(hw=(12, 12)))
    program = lower(qgraph, SMALL)
    norm = next(layer for layer in program.layout["layers"] if layer["op"] == "Norm")
    assert norm["stages"] > 1
