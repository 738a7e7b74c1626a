"""The host side of the board's UART bridge: reads and writes of the board's address space.

The wire protocol is :mod:`flexigan.hw.bridge`'s (described for users in docs/boards.md).
Addresses here are AXI byte addresses, as :func:`flexigan.hw.arch.registers.register_addresses`
gives them; the client turns them into the protocol's word addresses. Memory images are bytes in
the bus's little-endian order (byte ``k`` of a word is ``wdata[8k:8k+8]``).
"""

import struct

from .errors import FlexiganError
from .hw.arch.bridge import CMD_READ, CMD_WRITE, MAX_WORDS

__all__ = ["BridgeClient"]

_ADDRESS_SPACE = 1 << 32
#: Bytes :meth:`BridgeClient.write_bytes` writes between two read-backs.
CHECK_EVERY = 4096


class BridgeClient:
    """Reads and writes 32-bit words on the board through its UART bridge.

    Parameters
    ----------
    port : serial.Serial or alike
        ``write(data)`` sends bytes; ``read(n)`` returns up to ``n`` bytes, fewer when its
        timeout passes. In production ``serial.serial_for_url(url, baudrate=..., timeout=...)``
        (pyserial; ``socket://host:port`` works too); the timeout must cover a reply of 255
        words (1,020 bytes: 89 ms at 115,200 baud).

    Raises
    ------
    FlexiganError
        From every method, when the port fails or a read's reply is short: the board did not
        answer (not programmed, another baud rate, a frame dropped).
    """

    def __init__(self, port):
        self.port = port

    def write_words(self, addr, words):
        """Write ``words`` (each 0 to 2**32 - 1) from byte address ``addr`` on."""
        words = list(words)
        bad = [w for w in words if not isinstance(w, int) or not 0 <= w < 1 << 32]
        if bad:
            raise ValueError(f"BridgeClient words must be 32-bit unsigned integers, not "
                             f"{bad[0]!r}")
        for start, first, count in self._chunks(addr, len(words)):
            body = struct.pack(f">{count}I", *words[first:first + count])
            self._send(_header(CMD_WRITE, start, count) + body)

    def read_words(self, addr, n):
        """Read ``n`` words from byte address ``addr`` on; returns a list of ints."""
        words = []
        for start, _, count in self._chunks(addr, n):
            self._send(_header(CMD_READ, start, count))
            reply = self._receive(4 * count)
            if len(reply) != 4 * count:
                raise FlexiganError(
                    f"host bridge: short reply to a read of {count} word(s) at 0x{start:08x}: "
                    f"{len(reply)} of {4 * count} bytes before the port timed out (is the board "
                    f"programmed, at the same baud rate?)")
            words += struct.unpack(f">{count}I", reply)
        return words

    def write_bytes(self, addr, data, check_every=CHECK_EVERY):
        """Write the memory image ``data`` (a whole number of words) from ``addr`` on.

        After each ``check_every`` bytes (and at the end) the last word written is read back
        and compared: that bounds the bytes in flight (the port's read timeout need only
        cover ``check_every`` bytes on the line, not the whole image) and catches a frame the
        board dropped. A word read back wrong raises :class:`FlexiganError`. ``check_every=0``
        writes without reading back.
        """
        data = bytes(data)
        _check_whole_words("data length", len(data))
        words = list(struct.unpack(f"<{len(data) // 4}I", data))
        if not check_every:
            self.write_words(addr, words)
            return
        step = max(1, check_every // 4)
        for first in range(0, len(words), step):
            part = words[first:first + step]
            self.write_words(addr + 4 * first, part)
            last = addr + 4 * (first + len(part) - 1)
            echo = self.read_words(last, 1)[0]
            if echo != part[-1]:
                raise FlexiganError(f"host bridge: memory at 0x{last:08x} reads 0x{echo:08x} "
                                    f"after 0x{part[-1]:08x} was written (a frame was lost or "
                                    f"garbled on the line)")

    def read_bytes(self, addr, n):
        """Read ``n`` bytes (a whole number of words) of memory from ``addr`` on."""
        _check_whole_words("n", n)
        words = self.read_words(addr, n // 4)
        return struct.pack(f"<{len(words)}I", *words)

    def _chunks(self, addr, n):
        """(byte address, first word, count) of each frame of a transfer of ``n`` words."""
        if not isinstance(addr, int) or addr % 4 or not 0 <= addr < _ADDRESS_SPACE:
            raise ValueError(f"BridgeClient addr must be a word-aligned byte address below "
                             f"2**32, not {addr!r}")
        if not isinstance(n, int) or n < 0 or addr + 4 * n > _ADDRESS_SPACE:
            raise ValueError(f"BridgeClient transfer of {n!r} words at 0x{addr:08x} does not "
                             f"fit the 32-bit address space")
        return [(addr + 4 * k, k, min(MAX_WORDS, n - k)) for k in range(0, n, MAX_WORDS)]

    def _send(self, frame):
        try:
            sent = self.port.write(frame)
        except OSError as e:            # pyserial's SerialException and its timeouts
            raise FlexiganError(f"host bridge: cannot write to the port: {e}") from e
        if sent is not None and sent != len(frame):
            raise FlexiganError(f"host bridge: the port took {sent} of {len(frame)} bytes "
                                f"(write timeout)")

    def _receive(self, n):
        try:
            return bytes(self.port.read(n))
        except OSError as e:
            raise FlexiganError(f"host bridge: cannot read from the port: {e}") from e


def _header(cmd, addr, count):
    return struct.pack(">BBI", cmd, count, addr // 4)


def _check_whole_words(name, n):
    if not isinstance(n, int) or n < 0 or n % 4:
        raise ValueError(f"BridgeClient {name} must be a whole number of 32-bit words "
                         f"(a multiple of 4), not {n!r}")
