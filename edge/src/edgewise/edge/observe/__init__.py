"""What the device says about itself beyond health: drift, captured samples, answer
states and Home Assistant discovery. Features of the core."""
