"""Assembler and disassembler: exact round trips over random valid instructions, and errors."""

import pytest
from amaranth.lib import enum
from hypothesis import given, settings
from hypothesis import strategies as st

from flexigan.compiler import asm
from flexigan.hw.arch import isa


def _operand(shape):
    if isinstance(shape, type) and issubclass(shape, enum.Enum):
        return st.sampled_from(list(shape))
    if shape.signed:
        return st.integers(-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1)
    return st.integers(0, (1 << shape.width) - 1)


@st.composite
def instruction(draw, level):
    ops, table, *_ = asm.LEVELS[level]
    op = draw(st.sampled_from(list(ops)))
    fields = isa.fields_of(table[op]) if table[op] is not None else []
    return op, {name: draw(_operand(shape)) for name, shape in fields}


def program(level):
    return st.lists(instruction(level), max_size=12)


@pytest.mark.parametrize("level", ["global", "uop"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip(level, data):
    insns = data.draw(program(level))
    binary = b"".join(asm.encode(level, op, **operands) for op, operands in insns)
    text = asm.disassemble(binary, level)
    assert asm.assemble(text, level) == binary
    assert asm.disassemble(asm.assemble(text, level), level) == text
    assert len(text.splitlines()) == len(insns)


@settings(max_examples=50, deadline=None)
@given(instruction("global"), instruction("uop"))
def test_encodings_are_the_isa_definitions(g, u):
    assert asm.encode("global", g[0], **g[1]) == \
        isa.encode_global(g[0], **g[1]).to_bytes(isa.GLOBAL_BYTES, "little")
    assert asm.encode("uop", u[0], **u[1]) == \
        isa.encode_uop(u[0], **u[1]).to_bytes(isa.UOP_BYTES, "little")


def test_canonical_text():
    binary = asm.encode("global", "DMA_LOAD", space=isa.Space.WGT, group_mask=5, length=10)
    assert asm.disassemble(binary) == (
        "DMA_LOAD space=WGT group_mask=0x5 ext_addr=0 local_addr=0 length=10 chunk=0\n")
    assert asm.disassemble(asm.encode("uop", "LOOP", level=2, count=3, act_stride=-7), "uop") \
        == "LOOP level=2 count=3 act_stride=-7 wgt_stride=0\n"


def test_assembler_accepts_comments_order_and_omissions():
    text = """
    # a comment
    RUN lanes=8 group_mask=3   # operands in any order, the rest 0
    END
    """
    assert asm.assemble(text) == (asm.encode("global", "RUN", group_mask=3, lanes=8)
                                  + asm.encode("global", "END"))


@pytest.mark.parametrize("line, message", [
    ("JUMP", "line 1: unknown global opcode 'JUMP'"),
    ("RUN rows=1 speed=2", "line 1: RUN has no operand 'speed=2'"),
    ("DMA_LOAD space=ROM", "line 1: DMA_LOAD.space must be one of ACT, WGT, PARAM, LUT, UOP"),
    ("RUN lanes=256", "line 1: RUN.lanes = 256 does not fit unsigned(8)"),
])
def test_errors_name_the_line(line, message):
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.").replace("(", r"\(")
                       .replace(")", r"\)")):
        asm.assemble(line)


def test_disassembler_wants_whole_instructions():
    with pytest.raises(ValueError, match="multiple of 16 bytes, not 20"):
        asm.disassemble(bytes(20), "uop")
