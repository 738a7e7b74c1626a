"""Text assembler and disassembler for both instruction levels.

One instruction per line: the opcode name, then every operand of its payload as
``name=value`` in layout order (docs/isa.md), for example::

    RUN group_mask=0x3 uop_addr=12 uop_count=9 rows=4 cols=4 lanes=8 ...
    LOOP level=2 count=64 act_stride=1 wgt_stride=8

``group_mask`` is written in hex, enum operands by name (``space=WGT``), everything else in
decimal (signed fields may be negative). The assembler also accepts any integer literal Python
accepts, operands in any order, omitted operands (0), blank lines and ``#`` comments.
:func:`disassemble` writes the canonical form, and ``assemble(disassemble(b), level) == b`` for
every sequence of valid encoded instructions (and the converse for canonical text).

Encodings come from :mod:`flexigan.hw.arch.isa`, the one definition of the formats; :func:`encode`
caches them, since a program repeats most of its instructions.
"""

from __future__ import annotations

import functools

from amaranth.lib import enum

from ..hw.arch import isa

__all__ = ["LEVELS", "encode", "assemble", "disassemble", "format_insn", "parse_insn"]

#: The two levels: (opcode enum, payload table, bytes per instruction, encoder, decoder).
LEVELS = {
    "global": (isa.GlobalOp, isa.GLOBAL_ARGS, isa.GLOBAL_BYTES, isa.encode_global,
               isa.decode_global),
    "uop": (isa.UopOp, isa.UOP_ARGS, isa.UOP_BYTES, isa.encode_uop, isa.decode_uop),
}


def _level(level):
    try:
        return LEVELS[level]
    except KeyError:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, not {level!r}") from None


@functools.cache
def _encode_cached(level, op, operands):
    ops, _, nbytes, encoder, _ = _level(level)
    return encoder(ops(op), **dict(operands)).to_bytes(nbytes, "little")


def encode(level, op, /, **operands):
    """The bytes of one instruction of ``level`` ("global" or "uop"); ``op`` is the opcode (enum,
    code or name); omitted operands are 0."""
    ops = _level(level)[0]
    op = ops[op] if isinstance(op, str) else ops(op)
    return _encode_cached(level, op.value,
                          tuple(sorted((k, _plain(v)) for k, v in operands.items())))


def _plain(value):
    return value.value if isinstance(value, enum.Enum) else int(value)


@functools.cache
def decode(level, word):
    """``(op, {operand: int or enum})`` of one encoded instruction (an ``int``), cached."""
    return _level(level)[4](word)


def format_insn(op, operands):
    """The canonical text of one decoded instruction."""
    parts = [op.name]
    for name, value in operands.items():
        if isinstance(value, enum.Enum):
            text = value.name
        elif name == "group_mask":
            text = hex(value)
        else:
            text = str(int(value))
        parts.append(f"{name}={text}")
    return " ".join(parts)


def parse_insn(level, line):
    """``(op, operands)`` of one line of assembly (without comment), for :func:`encode`."""
    ops, table, *_ = _level(level)
    words = line.split()
    try:
        op = ops[words[0]]
    except KeyError:
        raise ValueError(f"unknown {level} opcode {words[0]!r}; expected one of "
                         f"{', '.join(o.name for o in ops)}") from None
    shapes = dict(isa.fields_of(table[op])) if table[op] is not None else {}
    operands = {}
    for word in words[1:]:
        name, eq, text = word.partition("=")
        if not eq or name not in shapes:
            raise ValueError(f"{op.name} has no operand {word!r}; it has {list(shapes)}")
        shape = shapes[name]
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            try:
                operands[name] = shape[text]
            except KeyError:
                raise ValueError(f"{op.name}.{name} must be one of "
                                 f"{', '.join(m.name for m in shape)}, not {text!r}") from None
        else:
            operands[name] = int(text, 0)
    return op, operands


def assemble(text, level="global"):
    """The bytes of the assembly ``text`` (instructions of one ``level``).

    Raises ``ValueError`` naming the line number for an unknown opcode or operand, or an
    operand out of its field's range.
    """
    out = bytearray()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            op, operands = parse_insn(level, line)
            out += encode(level, op, **operands)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return bytes(out)


def disassemble(data, level="global"):
    """The canonical text of ``data`` (whole instructions of one ``level``), one per line."""
    _, _, nbytes, _, _ = _level(level)
    if len(data) % nbytes:
        raise ValueError(f"{level} code must be a multiple of {nbytes} bytes, not {len(data)}")
    lines = []
    for at in range(0, len(data), nbytes):
        op, operands = decode(level, int.from_bytes(data[at:at + nbytes], "little"))
        lines.append(format_insn(op, operands))
    return "".join(line + "\n" for line in lines)
