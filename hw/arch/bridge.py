"""The host bridge's wire protocol: what the board's UART bridge (:mod:`flexigan.hw.bridge`)
and the host's client (:mod:`flexigan.host`) agree on. docs/boards.md, "Host bridge wire
protocol", describes it for users.

LiteX UARTBone's incrementing bursts, host to board::

    cmd (1 byte)  count (1 byte)  address (4 bytes, big-endian, in 32-bit words)  [words]

:data:`CMD_WRITE` is followed by ``count`` words of 4 bytes each, big-endian; :data:`CMD_READ`
by nothing, and the board answers with ``count`` words, big-endian. Word ``k`` of a frame is at
AXI byte address ``4 * (address + k)`` (the low 32 bits).
"""

__all__ = ["CMD_WRITE", "CMD_READ", "MAX_WORDS"]

#: Command byte of a write frame (UARTBone's incrementing write burst).
CMD_WRITE = 0x01
#: Command byte of a read frame (UARTBone's incrementing read burst).
CMD_READ = 0x02
#: Most words in one frame: the count is one byte.
MAX_WORDS = 255
