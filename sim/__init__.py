"""Simulators: the golden fixed-point interpreter (and later the instruction-level and RTL runs)."""
