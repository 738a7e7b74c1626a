import random
import struct

import pytest

from flexigan.errors import FlexiganError
from flexigan.host import BridgeClient
from flexigan.hw.arch.registers import register_addresses, registers

CMD_WRITE, CMD_READ = 0x01, 0x02        # docs/boards.md, written out again on purpose


class FakeBoard:
    """A serial port whose far end speaks the bridge protocol over a word memory."""

    def __init__(self, reply_bytes=None):
        self.mem = {}                   # byte address -> word
        self.frames = []                # (cmd, count, word address)
        self.reply_bytes = reply_bytes  # bytes each read() may return at most (None: all)
        self._incoming = bytearray()
        self._outgoing = bytearray()

    def write(self, data):
        self._incoming += data
        while len(self._incoming) >= 6:
            cmd, count, word = struct.unpack(">BBI", self._incoming[:6])
            size = 6 + 4 * count * (cmd == CMD_WRITE)
            if len(self._incoming) < size:
                break
            body = bytes(self._incoming[6:size])
            del self._incoming[:size]
            self.frames.append((cmd, count, word))
            for k in range(count):
                addr = 4 * (word + k) % (1 << 32)
                if cmd == CMD_WRITE:
                    self.mem[addr], = struct.unpack(">I", body[4 * k:4 * k + 4])
                elif cmd == CMD_READ:
                    self._outgoing += struct.pack(">I", self.mem.get(addr, 0))
        return len(data)

    def read(self, n):
        n = n if self.reply_bytes is None else min(n, self.reply_bytes)
        data = bytes(self._outgoing[:n])
        del self._outgoing[:n]
        return data


def test_registers_are_written_and_read_at_their_byte_addresses():
    board = FakeBoard()
    client = BridgeClient(board)
    base = register_addresses(registers())["base"]
    client.write_words(base, [0x8000_0040])
    assert board.frames == [(CMD_WRITE, 1, base // 4)]
    assert board.mem == {base: 0x8000_0040}
    assert client.read_words(base, 1) == [0x8000_0040]


def test_memory_images_are_little_endian_words_in_frames_of_at_most_255():
    rng = random.Random(3)
    image = bytes(rng.randrange(256) for _ in range(4 * 600))
    board = FakeBoard()
    client = BridgeClient(board)
    client.write_bytes(0x1000_0000, image)
    # The last word is read back once the image is written (less than 4096 bytes).
    assert [f[:2] for f in board.frames] == [(CMD_WRITE, 255), (CMD_WRITE, 255), (CMD_WRITE, 90),
                                             (CMD_READ, 1)]
    assert [f[2] for f in board.frames] == [0x0400_0000, 0x0400_0000 + 255, 0x0400_0000 + 510,
                                            0x0400_0000 + 599]
    assert board.mem[0x1000_0004] == int.from_bytes(image[4:8], "little")
    assert client.read_bytes(0x1000_0000, len(image)) == image
    assert [f[:2] for f in board.frames[4:]] == [(CMD_READ, 255), (CMD_READ, 255), (CMD_READ, 90)]


def test_long_images_are_read_back_every_4096_bytes_and_a_lost_frame_is_named():
    image = bytes(range(256)) * 40                       # 10,240 bytes: checks at 4 K, 8 K, end
    board = FakeBoard()
    BridgeClient(board).write_bytes(0, image)
    assert [f[2] for f in board.frames if f[0] == CMD_READ] == [1023, 2047, 2559]

    class Lossy(FakeBoard):
        def write(self, data):                           # drops the fifth: words 1020-1023
            self.calls = getattr(self, "calls", 0) + 1
            return len(data) if self.calls == 5 else super().write(data)

    with pytest.raises(FlexiganError, match=r"memory at 0x00000ffc reads 0x00000000 after "
                                            r"0xfffefdfc was written \(a frame was lost"):
        BridgeClient(Lossy()).write_bytes(0, image)


def test_empty_transfers_send_nothing():
    board = FakeBoard()
    client = BridgeClient(board)
    client.write_words(0, [])
    assert client.read_words(0, 0) == []
    assert board.frames == []


@pytest.mark.parametrize("reply_bytes,got", [(0, 0), (6, 6)])
def test_a_short_reply_is_one_clear_error(reply_bytes, got):
    client = BridgeClient(FakeBoard(reply_bytes))
    with pytest.raises(FlexiganError) as info:
        client.read_words(0x40, 3)
    assert str(info.value) == (
        f"host bridge: short reply to a read of 3 word(s) at 0x00000040: {got} of 12 bytes "
        f"before the port timed out (is the board programmed, at the same baud rate?)")


def test_port_failures_become_flexigan_errors():
    class Broken:
        def write(self, data):
            raise OSError("device reports readiness to read but returned no data")

    with pytest.raises(FlexiganError, match="^host bridge: cannot write to the port: device "):
        BridgeClient(Broken()).write_words(0, [1])

    class Partial(FakeBoard):
        def write(self, data):
            return len(data) - 1

    with pytest.raises(FlexiganError, match=r"^host bridge: the port took 9 of 10 bytes "
                                            r"\(write timeout\)$"):
        BridgeClient(Partial()).write_words(0, [1])


@pytest.mark.parametrize("call,message", [
    (lambda c: c.write_words(2, [1]), r"addr must be a word-aligned byte address below 2\*\*32, "
                                      "not 2"),
    (lambda c: c.read_words(1 << 32, 1), "addr must be a word-aligned byte address"),
    (lambda c: c.read_words(0xFFFF_FFFC, 2), "transfer of 2 words at 0xfffffffc does not fit"),
    (lambda c: c.write_words(0, [1 << 32]), "words must be 32-bit unsigned integers, not "
                                            "4294967296"),
    (lambda c: c.write_bytes(0, b"abc"), r"data length must be a whole number of 32-bit words "
                                         r"\(a multiple of 4\), not 3"),
    (lambda c: c.read_bytes(0, 6), "n must be a whole number of 32-bit words"),
])
def test_arguments_are_checked_before_anything_is_sent(call, message):
    board = FakeBoard()
    with pytest.raises(ValueError, match=f"^BridgeClient {message}"):
        call(BridgeClient(board))
    assert board.frames == []
