"""The machine's latencies and setup costs, which the RTL has and the cycle model charges.

Each constant is a property of the Amaranth blocks (:mod:`flexigan.hw`) measured or stated by
their tests (tests/hw/), and the instruction-level simulator's timing model
(:mod:`flexigan.sim.isa_sim`) charges exactly these. Change a block's pipeline and its constant here
changes with it, or the hw tests fail.
"""

__all__ = ["DECODE_CYCLES", "ACCESS_BUBBLE", "SLICE_LATENCY", "ACCESS_FILL", "EXECUTE_FILL",
           "AHEAD_PIXELS", "POST_LATENCY", "POST_DRAIN", "NORM_FINISH_CYCLES", "NORM_CARRY_CYCLES",
           "NORM_DRAIN",
           "ISSUE_CYCLES", "FETCH_DELAY", "LOAD_SETUP", "LOAD_CLAIM", "STORE_SETUP",
           "WAIT_DELAY", "RUN_ENTRY", "SCAN_DRAIN", "SCAN_CYCLES", "RUN_LATENCY",
           "TESTBENCH_MEM_LATENCY", "ONCHIP_MEM_LATENCY"]

# --- an engine group (hw/group) ----------------------------------------------------------------

#: Cycles the decoder spends on a RUN besides one per micro-op (accept, last read, offer).
DECODE_CYCLES = 4
#: Idle cycles of the access engine between two RUNs (the address generator's accept and
#: the cycle that loads its loop nest).
ACCESS_BUBBLE = 2
#: Cycles through a register slice (:class:`flexigan.hw.fifo.StreamSlice`).
SLICE_LATENCY = 1
#: Cycles from the address generator to the execute engine (its load cycle, register slice,
#: the crossbar port's queue, its registered grant, read and the bank's output register,
#: FIFO, sparse core, weight fetch's three stages: the step, the block RAM read, its output
#: register), paid by a RUN with MAC that finds the group idle.
ACCESS_FILL = 2 * SLICE_LATENCY + 10
#: Cycles from the execute engine to the post-writer (lanes: operands, product, sum; job
#: queue; the post-writer's register slice), paid by a RUN that finds the group idle.
EXECUTE_FILL = 8
#: Pixels (of one tap) the access engine runs ahead of the post-writer, the pipeline between
#: them included (the steps FIFO, the lanes, the job queue): a RUN whose post-writer is
#: behind (a pass after NORM FINISH) holds the access engine, and the next RUN's taps, back
#: until it has only these left. Measured (tests/hw/test_group.py, InstanceNorm).
AHEAD_PIXELS = 20
#: Cycles of the requantizer's pipeline (hw/post.py: the operands registered as the PARAM
#: memory gives them, bias, multiply, shift, round and saturate, table read, the table's word
#: registered beside its block RAM).
POST_LATENCY = 8
#: Cycles from a RUN's last POST to its last byte in ACT (Post's pipeline, the post-writer's
#: register slice, write, end job).
POST_DRAIN = POST_LATENCY + SLICE_LATENCY + 2
#: Post-writer cycles of NORM FINISH per lane (hw/group/norm_writer.py): three PARAM reads,
#: the bit-serial unit's 219 cycles (hw/norm.py: products, square root, two divisions, on a
#: timetable fixed by the operands' widths) and the entry's write. NORM SAVE takes one per
#: lane, as a write.
NORM_FINISH_CYCLES = 223
#: Post-writer cycles per lane of a NORM SAVE after ``CLEAR use_bias=1`` (a sum carried on
#: from an earlier row band, hw/group/norm_writer.py): the bias's PARAM read, the block RAM's
#: word and the lane's sum registered, their sum registered, the write.
NORM_CARRY_CYCLES = 4
#: Cycles from a NORM RUN's last PARAM write to its end (the NORM writer's job taken the
#: cycle after it, the post-writer's end job): no requantizer or ACT write to drain.
NORM_DRAIN = 3

# --- the global controller (hw/controller) -----------------------------------------------------

#: Cycles the global controller takes to issue one instruction.
ISSUE_CYCLES = 1
#: Cycles from an instruction's last beat to the instruction at the head of the queue.
FETCH_DELAY = 2
#: Cycles the DMA engine holds the read port for a load besides its transfer (decode, hazard
#: check, registered claim, reader command, realigner and its two register slices), measured
#: on the RTL with lone and chained loads.
LOAD_SETUP = 5
#: Cycles from a load's issue to its claim on the read port: a fetch starting earlier keeps
#: the port (the load waits for it); a later one waits for the load. (The claim is a
#: register set after the hazard check; 1 missed the fetch that starts the cycle after a
#: BARRIER releases a UOP_LOAD: 20 cycles on the tiny generator's second layer.)
LOAD_CLAIM = 2
#: The same as LOAD_SETUP for a store (decode, registered hazard check, writer command, the
#: crossbar port's queue, its registered grant and the bank's output register, register
#: slice, last write response).
STORE_SETUP = 13
#: Cycles from the end of the work BARRIER, COUNTERS or END waits for (the last DMA, the
#: groups' RUNs) to the issue stage seeing it: it sees the DMA engine and the groups through
#: registers.
WAIT_DELAY = 1
#: Cycles from a RUN's issue to its record in a group's RUN scoreboard (the scoreboard's entry
#: register, which ends the issue stage's paths): a RUN that finds its DMAs done and its group
#: idle reaches the group that much later.
RUN_ENTRY = 1

#: Cycles from the end of a RUN's micro-program scan (the scoreboard's decoder is done) to its
#: weight range and tables in the scoreboard (the scan's multiply and sums, pipelined): until
#: then a DMA into the group's WGT or LUT waits for the RUN. The cycle model does not charge
#: the scan (a RUN is scanned while it waits for its own DMAs or runs).
SCAN_DRAIN = 4
#: Cycles the scoreboard's scanner spends on a RUN besides one per micro-op and SCAN_DRAIN
#: (release, the decoder's start and done, the record written).
SCAN_CYCLES = 3

# --- estimates and test benches ----------------------------------------------------------------

#: The compiler's estimate of a RUN's cycles on top of its taps, used only to balance work
#: over groups (the cycle model charges the stages above instead).
RUN_LATENCY = 8
#: Cycles from a burst's address to its first beat in the cocotb testbench's external memory
#: (cocotbext-axi's ``AxiRam``, measured, as the cycle model counts ``mem_latency``): the memory
#: of the RTL tests with random backpressure and bus errors. The RTL engine's memory is in the
#: design and takes the configuration's ``mem_latency`` (:mod:`flexigan.sim.memory`).
TESTBENCH_MEM_LATENCY = 3
#: The ``mem_latency`` at which the cycle model matches the board top's on-chip memory
#: (:class:`flexigan.hw.onchip.OnChipMemory`, first read beat 3 cycles after its address), as
#: TESTBENCH_MEM_LATENCY matches the testbench's; measured through the simulated board's UART
#: (tests/boards/test_board_run.py): with 5, the tiny generator on 1 x 2 lanes runs 3,107
#: cycles for 2,964 modelled (4.8 %), the digits generator on 1 x 4 46,919 for 46,241 (1.5 %).
#: The board presets' ``mem_latency``.
ONCHIP_MEM_LATENCY = 5
