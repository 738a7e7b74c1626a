# amaranth: UnusedElaboratable=no
"""Construction-time contracts of hw/axi.py (the protocols run in test_axi_cocotb.py)."""

import pytest

from flexigan.hw.axi import AxiLiteRegisters, RegisterField, axi4_signature, register_addresses


def test_register_addresses_pack_fields_in_words():
    fields = [RegisterField("a", 1, "strobe"), RegisterField("b", 64, "ro"),
              RegisterField("c", 33, "rw"), RegisterField("d", 32, "rw")]
    assert register_addresses(fields) == {"a": 0, "b": 4, "c": 12, "d": 20}
    assert AxiLiteRegisters(fields).addr_width == 5


def test_register_field_errors():
    with pytest.raises(ValueError, match="width must be an integer from 1 to 64, not 65"):
        RegisterField("x", 65, "rw")
    with pytest.raises(ValueError, match="access must be one of .*, not 'wo'"):
        RegisterField("x", 8, "wo")
    with pytest.raises(ValueError, match="must be unique and not 'axil'"):
        AxiLiteRegisters([RegisterField("x", 1, "rw"), RegisterField("x", 1, "ro")])


def test_axi4_signature_names_and_width_error():
    sig = axi4_signature(addr_width=32, data_width=64)
    assert sig.members["read"].signature.members["rdata"].shape == 64
    assert sig.members["write"].signature.members["wstrb"].shape == 8
    with pytest.raises(ValueError, match="data_width must be a power of two >= 8, not 12"):
        axi4_signature(addr_width=32, data_width=12)
