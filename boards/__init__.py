"""Board support: amaranth-boards platforms and the host bridge."""
