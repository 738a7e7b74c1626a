"""The compiler: ONNX import, the IR, its passes, quantization, zero-free lowering and the
two-level program with its memory image.

It depends on the machine's definition (:mod:`flexigan.hw.arch`) only: never on a simulator,
never on an Amaranth block (tests/test_layers.py checks this).
"""
