"""AcceleratorConfig's checks of the options that shrink a machine for a small device."""

import pytest

from flexigan.hw.arch.config import AcceleratorConfig, preset


@pytest.mark.parametrize("bits", [31, 65])
def test_counter_bits_are_checked(bits):
    with pytest.raises(ValueError, match=rf"^AcceleratorConfig.counter_bits must be from 32 to "
                                         rf"64, not {bits}$"):
        AcceleratorConfig(counter_bits=bits)


def test_only_the_icebreaker_preset_narrows_its_counters():
    assert preset("icebreaker").counter_bits == 32
    assert preset("sim").counter_bits == preset("ulx3s").counter_bits == 64
