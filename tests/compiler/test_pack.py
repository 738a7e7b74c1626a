"""Pass 2b (compiler/plan/pack.py): few output channels pack neighbouring output columns
into the lanes, writing the same bytes, bit-exact with the golden model."""

import numpy as np
import pytest
from onnx import helper

from flexigan.compiler.plan import plan
from flexigan.hw.arch.config import AcceleratorConfig
from tests.helpers import SIM, check_bit_exact, conv_model, convt_model, make_model, quantized

#: A small machine whose tiny memories force stages and per-segment tiles.
SMALL = AcceleratorConfig(groups=3, lanes=8, act_banks=2, act_bank_bytes=1024, weight_bytes=512,
                          param_entries=16, uop_depth=24, axi_data_width=32, mem_latency=4,
                          burst_bytes=64)

CASES = {
    # (model, packed columns per pixel, kernel columns after packing)
    "conv 3x3, 3 channels": (conv_model(4, 3, [6, 8], [3, 3], pads=[1, 1, 1, 1]), 2, 4),
    "conv 3x3 stride 2": (conv_model(4, 2, [8, 16], [3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                          4, 9),
    # A model output: columns 2j + 1, 2j + 2 read input columns j, j + 1 (2j, 2j + 1 read
    # three), the first and last packed pixels reaching a column past the image.
    "convT k4 s2 p1": (convt_model(6, 3, [5, 4], [4, 4], strides=[2, 2], pads=[1, 1, 1, 1],
                                   act="Tanh"), 2, 2),
    # 10 columns in 3 packed pixels of 4 (9 MAC steps along a row, 10 in 5 pixels of 2).
    "convT k3 s2 p1 op1": (convt_model(4, 2, [4, 5], [3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                       output_padding=[1, 1]), 4, 3),
    # Neighbouring phase pairs too, as many as the lanes hold: 8 columns of 1 channel read
    # 6 input columns (3 + one more per further pair), 4 of 2 channels read 4.
    "convT k4 s2 p1, 1 channel": (convt_model(4, 1, [3, 4], [4, 4], strides=[2, 2],
                                              pads=[1, 1, 1, 1], act="Tanh"), 8, 6),
    "convT k4 s2 p1, 2 channels": (convt_model(4, 2, [3, 4], [4, 4], strides=[2, 2],
                                               pads=[1, 1, 1, 1]), 4, 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_few_channels_pack_columns(case):
    model, columns, kernel = CASES[case]
    qgraph, inputs = quantized(model)
    layer = plan(qgraph, SIM).layers[0]
    assert layer.out_mul == (1, columns)
    assert layer.weight.shape[1] == columns * layer.dst_grid.channels
    assert layer.weight.shape[4] == kernel
    assert not layer.transposed[1]
    for config in (SIM, SMALL):
        check_bit_exact(qgraph, inputs, config)
        check_bit_exact(qgraph, inputs, config, sparse=False)


def test_enough_channels_do_not_pack():
    qgraph, _ = quantized(conv_model(4, 5, [6, 8], [3, 3], pads=[1, 1, 1, 1]))
    assert plan(qgraph, SIM).layers[0].out_mul == (1, 1)
    qgraph, _ = quantized(conv_model(4, 3, [6, 8], [1, 1]))      # 1x1: no columns shared
    assert plan(qgraph, SIM).layers[0].out_mul == (1, 1)


def test_margins_only_on_a_model_output_its_layer_alone_writes():
    # The output: 8 x 8 pixels in an array of 10 columns, the image one column in.
    qgraph, _ = quantized(convt_model(6, 3, [4, 4], [4, 4], strides=[2, 2],
                                      pads=[1, 1, 1, 1]))
    p = plan(qgraph, SIM)
    storage = p.storage(p.layers[0].dst)
    assert (storage.grid.cols, storage.view.cols, storage.view.off_w) == (10, 10, 1)
    assert (storage.view.width, p.layers[0].out_hw) == (8, (8, 5))
    # Read by a convolution: packed without margins, 2j and 2j + 1 (3 input columns).
    rng = np.random.default_rng(5)
    model = make_model(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["t"], kernel_shape=[4, 4],
                          strides=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["t"], ["r"]),
         helper.make_node("Conv", ["r", "v", "c"], ["y"], kernel_shape=[3, 3],
                          pads=[1, 1, 1, 1])],
        [("x", ["N", 6, 4, 4])], [("y", ["N", 4, 8, 8])],
        {"w": rng.normal(0, 0.3, (6, 3, 4, 4)), "b": rng.normal(0, 0.1, 3),
         "v": rng.normal(0, 0.3, (4, 3, 3, 3)), "c": rng.normal(0, 0.1, 4)})
    qgraph, inputs = quantized(model)
    layer = plan(qgraph, SIM).layers[0]
    assert (layer.out_mul, layer.weight.shape[4]) == ((1, 2), 3)
    assert plan(qgraph, SIM).storage(layer.dst).view is None
    check_bit_exact(qgraph, inputs, SIM)
