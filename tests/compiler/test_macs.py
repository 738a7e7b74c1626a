"""MAC counting rules, checked against brute-force counts on explicit index arithmetic."""

import itertools

import numpy as np
import pytest

from flexigan.compiler import ir, macs


def brute_convt(size, kernel, stride, pad, outpad, dilation):
    """1-D (useful, phase, zero_insertion) by enumerating every output and tap."""
    out = ir.convt_out(size, kernel, stride, pad, pad, outpad, dilation)
    useful = phase = 0
    for o, k in itertools.product(range(out), range(kernel)):
        # position of tap k in the zero-inserted, padded input of the equivalent convolution
        num = o + pad - k * dilation
        if num % stride == 0:
            phase += 1
            useful += 0 <= num // stride < size
    return useful, phase, out * kernel


@pytest.mark.parametrize("size, kernel, stride, pad, outpad, dilation", [
    (4, 4, 2, 1, 0, 1), (5, 3, 2, 1, 1, 1), (7, 5, 2, 2, 1, 1), (3, 4, 4, 0, 0, 1),
    (6, 3, 3, 2, 2, 2), (1, 4, 1, 0, 0, 1), (8, 2, 2, 0, 1, 1),
])
def test_convtranspose_counts_match_brute_force(size, kernel, stride, pad, outpad, dilation):
    cin, cout, group = 4, 6, 2
    op = ir.ConvTranspose(np.zeros((cin, cout // group, kernel, kernel)), np.zeros(cout),
                          (stride, stride), (pad, pad, pad, pad), (outpad, outpad),
                          (dilation, dilation), group)
    out_shape = op.shape((cin, size, size))
    got = macs.layer_macs(op, (cin, size, size), out_shape)
    u, p, z = brute_convt(size, kernel, stride, pad, outpad, dilation)
    channels = cin * cout // group
    assert got.useful == channels * u * u
    assert got.zero_insertion == channels * z * z
    assert got.phase == (got.useful if size == 1 else channels * p * p)


def test_phase_tap_counts_for_k5_s2():
    # the four phases of a k=5, s=2 transposed convolution have 3x3, 3x2, 2x3, 2x2 taps
    taps = [sum(1 for k in range(5) if (o + 2 - k) % 2 == 0) for o in range(2)]
    assert sorted(a * b for a in taps for b in taps) == [4, 6, 6, 9]


def test_conv_useful_excludes_padding():
    op = ir.Conv(np.zeros((8, 3, 3, 3)), np.zeros(8), (1, 1), (1, 1, 1, 1))
    got = macs.layer_macs(op, (3, 4, 4), (8, 4, 4))
    # per axis: 4 outputs x 3 taps = 12 pairs, 2 of them on padding
    assert got.useful == 8 * 3 * 10 * 10
    assert got.phase == got.zero_insertion == 8 * 3 * 12 * 12


def test_dense_and_layout_ops():
    assert macs.layer_macs(ir.Dense(np.zeros((5, 7)), np.zeros(5)), (7,), (5,)) == \
        macs.Macs(35, 35, 35)
    assert macs.layer_macs(ir.Activation("relu"), (3, 2, 2), (3, 2, 2)) == macs.Macs()
