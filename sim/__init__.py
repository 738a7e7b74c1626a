"""Simulators: the golden fixed-point interpreter, the instruction-level simulator and the RTL
runner (cocotb testbenches under Verilator and Icarus), each checked bit for bit against the one
before it."""
