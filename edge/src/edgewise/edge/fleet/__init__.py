"""The device side of roll-outs: desired states, downloads, activation, probation and
shadows, and what the device remembers of them. Features of the core."""
