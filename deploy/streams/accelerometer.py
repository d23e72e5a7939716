#!/usr/bin/env python3
"""A local accelerometer program for an edgewise stream: one JSON line per sample on stdout.

    {"t": 12.3456, "x": 0.0123, "y": -0.0456, "z": 0.0021}

``t`` is the sample time in seconds (the stream's ``timestamp``; a gap in it starts a
new window), x/y/z are accelerations in g. Two modes:

- ``--mpu6050``: an MPU-6050 on I2C (``--bus 1``, address 0x68; needs ``smbus2``), read
  as fast as the bus allows up to ``--rate`` samples a second (about 1 kHz on a Pi);
- ``--simulate`` (the default): a rotating machine's bearing housing, the physics of
  edgewise's built-in vibration data set (a 35 Hz shaft; 1x and 2x components; noise),
  paced in real time at ``--rate`` (2,560 Hz). ``--fault-after S`` (or
  ``$ACCEL_FAULT_AFTER``) adds an imbalance after S seconds: a strong 1x, radial.

Standard library only (smbus2 for the sensor): it runs with any python3 on the device,
outside the agent's environment. It exits on SIGTERM or when stdout closes.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

CHUNK_S = 0.01  # samples are written in chunks of 10 ms of signal


def simulate(rate: float, fault_after: float | None, seed: int) -> None:
    rng = random.Random(seed)
    f = 35.0  # shaft speed, Hz
    a1, a2 = 0.1, 0.025  # 1x and 2x of a healthy machine, in g
    noise = 0.05
    n = 0
    start = time.monotonic()
    per_chunk = max(1, int(rate * CHUNK_S))
    out = sys.stdout
    while True:
        lines = []
        for _ in range(per_chunk):
            t = n / rate
            w1, w2 = 2 * math.pi * f * t, 4 * math.pi * f * t
            x = a1 * math.cos(w1) + a2 * math.cos(w2)
            y = a1 * math.sin(w1) + a2 * math.sin(w2)
            z = 0.025 * math.cos(w1)
            if fault_after is not None and t >= fault_after:
                x, y = x + 0.7 * math.cos(w1), y + 0.7 * math.sin(w1)  # imbalance
            x, y, z = (v + rng.gauss(0.0, noise) for v in (x, y, z))
            lines.append(f'{{"t": {t:.6f}, "x": {x:.5f}, "y": {y:.5f}, "z": {z:.5f}}}\n')
            n += 1
        out.write("".join(lines))
        out.flush()
        ahead = start + n / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def mpu6050(rate: float, bus_number: int, address: int) -> None:
    from smbus2 import SMBus  # the sensor's mode only

    with SMBus(bus_number) as bus:
        bus.write_byte_data(address, 0x6B, 0)  # wake up (PWR_MGMT_1)
        start = time.monotonic()
        n = 0
        while True:
            raw = bus.read_i2c_block_data(address, 0x3B, 6)  # ACCEL_XOUT_H..ACCEL_ZOUT_L
            x, y, z = (
                int.from_bytes(bytes(raw[i : i + 2]), "big", signed=True) / 16384.0
                for i in (0, 2, 4)
            )
            t = time.monotonic() - start
            sys.stdout.write(f'{{"t": {t:.6f}, "x": {x:.5f}, "y": {y:.5f}, "z": {z:.5f}}}\n')
            n += 1
            if n % 64 == 0:
                sys.stdout.flush()
            ahead = start + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--simulate", action="store_true", help="a simulated machine (default)")
    mode.add_argument("--mpu6050", action="store_true", help="an MPU-6050 on I2C (smbus2)")
    p.add_argument("--rate", type=float, default=2560.0, help="samples per second")
    p.add_argument("--bus", type=int, default=1, help="I2C bus number (--mpu6050)")
    p.add_argument("--address", type=lambda v: int(v, 0), default=0x68, help="I2C address")
    p.add_argument("--fault-after", type=float, default=None, help="seconds to an imbalance")
    p.add_argument("--seed", type=int, default=0, help="noise seed (--simulate)")
    args = p.parse_args()
    if not 1 <= args.rate <= 100_000:
        p.error("--rate: use 1..100000 samples per second")
    fault = args.fault_after
    if fault is None and os.environ.get("ACCEL_FAULT_AFTER"):
        fault = float(os.environ["ACCEL_FAULT_AFTER"])
    try:
        if args.mpu6050:
            mpu6050(args.rate, args.bus, args.address)
        else:
            simulate(args.rate, fault, args.seed)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
