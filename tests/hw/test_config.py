"""AcceleratorConfig's checks of the options that shrink a machine for a small device."""

import pytest

from flexigan.hw.arch import isa
from flexigan.hw.arch.config import AcceleratorConfig, preset


@pytest.mark.parametrize("bits", [31, 65])
def test_counter_bits_are_checked(bits):
    with pytest.raises(ValueError, match=rf"^AcceleratorConfig.counter_bits must be from 32 to "
                                         rf"64, not {bits}$"):
        AcceleratorConfig(counter_bits=bits)


def test_only_the_icebreaker_preset_keeps_fewer_narrower_counters_and_one_realigner():
    small = preset("icebreaker")
    assert (small.counter_bits, small.dma_realigners) == (32, 1)
    assert set(small.counters) == {"cycles", "macs_issued", "macs_skipped", "dma_bytes"}
    for name in ("sim", "ulx3s"):
        config = preset(name)
        assert (config.counters, config.counter_bits) == (isa.COUNTER_NAMES, 64)
        assert (config.dma_queue, config.dma_realigners, config.fetch_queue) == (8, 2, None)


def test_a_fetch_queue_is_checked_and_holds_two_fetches():
    with pytest.raises(ValueError, match=r"^AcceleratorConfig.fetch_queue must be at least 2 "
                                         r"instructions, not 1$"):
        AcceleratorConfig(fetch_queue=1)
    small = preset("icebreaker")
    assert (small.fetch_queue, small.fetch_insns, small.queue_insns) == (2, 1, 2)
    wide = AcceleratorConfig(axi_data_width=512)           # a beat holds two instructions
    assert (wide.fetch_insns, wide.queue_insns) == (8, 16)
    assert (wide.replace(fetch_queue=2).fetch_insns, wide.replace(fetch_queue=2).queue_insns) \
        == (2, 2)


def test_kept_counters_are_checked_and_read_back_from_a_manifest():
    with pytest.raises(ValueError, match=r"^AcceleratorConfig.counters names no counter 'macs'; "
                                         r"choose from cycles, macs_issued, "):
        AcceleratorConfig(counters=("cycles", "macs"))
    with pytest.raises(ValueError, match=r"^AcceleratorConfig.counters must be a sequence of "
                                         r"counter names, not 'cycles'$"):
        AcceleratorConfig(counters="cycles")
    config = AcceleratorConfig(counters=["cycles", "dma_bytes"])      # as JSON has it
    assert config.counters == ("cycles", "dma_bytes")
    assert AcceleratorConfig(**config.to_dict()) == config


def test_dma_realigners_are_one_or_two():
    with pytest.raises(ValueError, match=r"^AcceleratorConfig.dma_realigners must be 1 or 2, "
                                         r"not 3$"):
        AcceleratorConfig(dma_realigners=3)
