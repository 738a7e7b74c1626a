"""An AXI4 memory and an AXI4-Lite host for Amaranth simulations of the accelerator.

Slower than the cocotb testbench but with every signal visible: the controller tests use it
to run small programs cycle by cycle.
"""

import random

from flexigan.hw.axi import register_addresses
from flexigan.hw.controller import registers


class AxiMemory:
    """Serves ``port`` (an AXI4 master's signature, seen from the memory) from ``mem``.

    ``faults`` is ``(lo, hi, resp)``: beats of bytes in ``[lo, hi)`` answer ``resp`` (SLVERR
    2, DECERR 3) instead of OKAY; a read beat brings zeros; a write burst writes none of its
    beats from the first such one on, and its response is ``resp``.
    """

    def __init__(self, port, mem, data_bytes, latency, pause=0.0, seed=0, faults=None):
        self.port, self.mem, self.nbytes = port, mem, data_bytes
        self.latency, self.pause = latency, pause
        self.rng = random.Random(seed)
        self.faults = faults

    def _stall(self):
        return self.pause and self.rng.random() < self.pause

    def _resp(self, addr):
        """The response to a beat at byte ``addr``."""
        if self.faults is None:
            return 0
        lo, hi, resp = self.faults
        return resp if addr < hi and lo < addr + self.nbytes else 0

    async def reads(self, ctx):
        r = self.port.read
        bursts = []
        while True:
            ctx.set(r.arready, not self._stall())
            ctx.set(r.rvalid, 0)
            beat = None
            if bursts and bursts[0][2] <= 0 and not self._stall():
                addr, left, _ = bursts[0]
                beat = addr
                resp = self._resp(addr)
                data = bytes(self.nbytes) if resp else bytes(self.mem[addr:addr + self.nbytes])
                ctx.set(r.rdata, int.from_bytes(data, "little"))
                ctx.set(r.rresp, resp)
                ctx.set(r.rlast, left == 1)
                ctx.set(r.rvalid, 1)
            ar_valid, ar_ready, araddr, arlen, r_ready = (await ctx.tick().sample(
                r.arvalid, r.arready, r.araddr, r.arlen, r.rready))[-5:]
            for b in bursts:
                b[2] -= 1
            if beat is not None and r_ready:
                addr, left, wait = bursts[0]
                if left == 1:
                    bursts.pop(0)
                else:
                    bursts[0] = [addr + self.nbytes, left - 1, wait]
            if ar_valid and ar_ready:
                bursts.append([araddr, arlen + 1, self.latency])

    async def writes(self, ctx):
        w = self.port.write
        addrs, responses = [], []
        current = None
        while True:
            ctx.set(w.awready, not self._stall())
            ctx.set(w.wready, current is not None and not self._stall())
            ctx.set(w.bvalid, bool(responses))
            ctx.set(w.bresp, responses[0] if responses else 0)
            (aw_valid, aw_ready, awaddr, awlen, w_valid, w_ready, wdata, wstrb, wlast,
             b_ready) = (await ctx.tick().sample(w.awvalid, w.awready, w.awaddr, w.awlen,
                                                 w.wvalid, w.wready, w.wdata, w.wstrb, w.wlast,
                                                 w.bready))[-10:]
            if responses and b_ready:
                responses.pop(0)
            if w_valid and w_ready:
                current[2] = current[2] or self._resp(current[0])
                for k in range(self.nbytes):
                    if wstrb >> k & 1 and not current[2]:
                        self.mem[current[0] + k] = wdata >> 8 * k & 0xFF
                current[0] += self.nbytes
                current[1] -= 1
                if current[1] == 0:
                    assert wlast
                    responses.append(current[2])
                    current = None
            if aw_valid and aw_ready:
                addrs.append([awaddr, awlen + 1, 0])
            if current is None and addrs:
                current = addrs.pop(0)


class Host:
    """Writes and reads the controller's registers over AXI4-Lite."""

    def __init__(self, port):
        self.port = port
        self.addresses = register_addresses(registers())

    async def write(self, ctx, name, value):
        p = self.port
        ctx.set(p.awaddr, self.addresses[name])
        ctx.set(p.wdata, value)
        ctx.set(p.wstrb, 0xF)
        ctx.set(p.awvalid, 1)
        ctx.set(p.wvalid, 1)
        ctx.set(p.bready, 1)
        await ctx.tick().until(p.awready)
        ctx.set(p.awvalid, 0)
        ctx.set(p.wvalid, 0)
        await ctx.tick().until(p.bvalid)
        ctx.set(p.bready, 0)

    async def read(self, ctx, name, words=1):
        p = self.port
        value = 0
        for k in range(words):
            ctx.set(p.araddr, self.addresses[name] + 4 * k)
            ctx.set(p.arvalid, 1)
            ctx.set(p.rready, 1)
            await ctx.tick().until(p.arready)
            ctx.set(p.arvalid, 0)
            data = (await ctx.tick().sample(p.rdata).until(p.rvalid))[-1]
            value |= data << 32 * k
            ctx.set(p.rready, 0)
        return value
