"""InstanceNorm on the machine (docs/isa.md, "InstanceNorm"): MAC ``square``, NORM SAVE and
FINISH, then the normalizing pass, run by the ISA's semantics on a fresh machine state, against
the golden model's :class:`~flexigan.compiler.quant.Norm` and against exact normalization."""

import numpy as np
import pytest

from flexigan.compiler.quant import Norm
from flexigan.hw.arch import isa, numerics
from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.sim.isa_sim import ProgramError, semantics
from flexigan.sim.isa_sim.state import MachineState

CONFIG = AcceleratorConfig(groups=1, lanes=2, act_banks=2, act_bank_bytes=4096,
                           weight_bytes=256, param_entries=16, uop_depth=32,
                           axi_data_width=32, mem_latency=10, burst_bytes=16)


def program(*ops):
    """A loaded micro-program's words for ``(op, fields)`` pairs."""
    return [isa.encode_uop(op, **fields) for op, fields in ops]


def run(state, words, **registers):
    """One RUN of ``words`` on group 0 with ``registers`` (the rest 0 or 1)."""
    state.uop[0, :len(words)] = words
    args = {"group_mask": 1, "uop_addr": 0, "uop_count": len(words), "rows": 1, "cols": 1,
            "lanes": 1, "act_offset": 0, "wgt_offset": 0, "param_offset": 0, "out_offset": 0,
            "lut_offset": 0, **registers}
    return semantics.run(state, 0, args, sparse=True)


def channel_sums(h, w, c, square):
    """The micro-program summing (``square``: the squares of) one channel of an ``h x w x c``
    HWC image read at ``act_offset``, then NORM SAVE. (``WGT lane_stride=1``: the RTL group
    runs a MAC only with it, whatever the lanes.)"""
    return program((isa.UopOp.LOOP, {"level": 0, "count": h, "act_stride": w * c}),
                   (isa.UopOp.LOOP, {"level": 1, "count": w, "act_stride": c}),
                   (isa.UopOp.WGT, {"lane_stride": 1}),
                   (isa.UopOp.CLEAR, {"use_bias": 0}),
                   (isa.UopOp.MAC, {"square": int(square)}),
                   (isa.UopOp.NORM, {"step": isa.NormStep.SAVE}))


def normalize(state, image, norm, channel):
    """Run the four RUNs that normalize ``channel`` of the HWC int8 ``image`` into ACT after
    it; return the channel as the machine wrote it."""
    h, w, c = image.shape
    n = h * w
    state.act[:image.size] = image.ravel()
    state.wgt[0, :2] = (numerics.NORM_WEIGHT, 1)
    state.param[0, 2] = (norm.beta[channel], norm.gain[channel], norm.gain_shift[channel], 0)
    run(state, channel_sums(h, w, c, False), act_offset=channel, wgt_offset=1, param_offset=0)
    run(state, channel_sums(h, w, c, True), act_offset=channel, param_offset=1)
    run(state, program((isa.UopOp.NORM, {"step": isa.NormStep.FINISH, "count": n,
                                         "eps": norm.eps})), param_offset=0)
    out = image.size
    run(state, program((isa.UopOp.ACT, {"row_stride": w * c, "col_stride": c}),
                       (isa.UopOp.WGT, {"lane_stride": 1}),
                       (isa.UopOp.CLEAR, {"use_bias": 1}), (isa.UopOp.MAC, {}),
                       (isa.UopOp.POST, {"use_lut": 0}),
                       (isa.UopOp.WRITE, {"row_stride": w, "col_stride": 1})),
        rows=h, cols=w, act_offset=channel, out_offset=out)
    return state.act[out:out + n].reshape(h, w)


def random_norm(rng, channels, eps):
    gain = rng.integers(1 << 14, 1 << 15, channels) * rng.choice([-1, 1], channels)
    return Norm(gain, rng.integers(8, 14, channels), rng.integers(-3 << 12, 3 << 12, channels),
                eps)


@pytest.mark.parametrize("h, w, spread, eps", [(6, 5, 40, 3), (16, 16, 3, 0), (9, 7, 127, 900),
                                               (4, 4, 0, 5)])
def test_the_machine_normalizes_a_channel_as_the_golden_model(h, w, spread, eps):
    rng = np.random.default_rng(h * w + spread)
    image = np.clip(rng.normal(rng.integers(-20, 20), spread, (h, w, 3)), -128, 127) \
        .round().astype(np.int8)
    norm = random_norm(rng, 3, eps)
    golden = norm.apply(image.transpose(2, 0, 1)[None])[0]
    for channel in range(3):
        state = MachineState.power_on(bytes(4096), CONFIG)
        assert (normalize(state, image, norm, channel) == golden[channel]).all()


def test_norm_save_and_finish_leave_the_entry_the_golden_model_computes():
    rng = np.random.default_rng(1)
    image = rng.integers(-128, 128, (8, 8, 1)).astype(np.int8)
    norm = random_norm(rng, 1, 17)
    state = MachineState.power_on(bytes(4096), CONFIG)
    normalize(state, image, norm, 0)
    bias, multiplier, shift = norm.params(image.transpose(2, 0, 1)[None])[:, 0, 0]
    entry = state.param[0, 0]
    assert (entry["bias"], entry["multiplier"], entry["shift"]) == (bias, multiplier, shift)


def test_a_constant_channel_gives_its_bias_exactly():
    norm = Norm(np.array([20000]), np.array([10]), np.array([-5 << 12]), 40)
    image = np.full((1, 1, 5, 5), -9, np.int8)
    expected = numerics.rshift_round(-5 * 20000, 10)
    assert (norm.apply(image) == expected).all()


@pytest.mark.parametrize("spread", [2.0, 10.0, 40.0])
def test_norm_is_within_one_step_of_exact_normalization(spread):
    rng = np.random.default_rng(int(spread))
    x = np.clip(rng.normal(5, spread, (1, 4, 32, 32)), -128, 127).round().astype(np.int8)
    gamma, beta, s_out = np.array([1.0, 0.5, -2.0, 1.5]), np.array([0.0, 0.3, -1.0, 0.7]), 0.04
    from flexigan.compiler.quant import requant
    gain = requant(gamma / s_out)
    norm = Norm(gain.multiplier, gain.shift,
                numerics.round_half_up(np.ldexp(beta / gamma, numerics.NORM_BETA_FRAC))
                .astype(np.int64), 0)
    xs = x.astype(np.float64)
    mean, std = xs.mean(axis=(2, 3), keepdims=True), xs.std(axis=(2, 3), keepdims=True)
    exact = (gamma[None, :, None, None] * (xs - mean) / std + beta[None, :, None, None]) / s_out
    assert np.abs(norm.apply(x) - np.clip(exact, -128, 127)).max() <= 1


def test_norm_of_a_run_of_several_pixels_is_a_program_error():
    state = MachineState.power_on(bytes(4096), CONFIG)
    words = program((isa.UopOp.NORM, {"step": isa.NormStep.SAVE}))
    with pytest.raises(ProgramError, match="NORM in a RUN of 2 x 1 pixels"):
        run(state, words, rows=2)
