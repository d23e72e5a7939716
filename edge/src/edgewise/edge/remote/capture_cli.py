"""``edgewise capture pull``: a device's captured samples into a CSV or .npz (edge extra only)."""

from __future__ import annotations

import argparse

from edgewise.edge.link.topics import DEFAULT_PREFIX
from edgewise.edge.remote.args import add_broker_arguments, endpoint_from_args


def configure_capture(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edgewise capture``."""
    p.add_argument("action", choices=["pull"], help="pull: fetch the samples into a file")
    add_broker_arguments(p, with_device=False)
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, metavar="FILE", help=".csv (tables, texts) or .npz")
    p.add_argument("--clear", action="store_true", help="then delete the pulled rows on the device")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per answer (default 10)")
    p.set_defaults(run=run_capture)


def run_capture(args: argparse.Namespace) -> int:
    from edgewise.edge.errors import EdgewiseError
    from edgewise.edge.remote.capture_client import pull

    if args.timeout <= 0:
        raise EdgewiseError(f"--timeout {args.timeout}: use a positive number of seconds")
    result = pull(
        endpoint_from_args(args),
        args.prefix or DEFAULT_PREFIX,
        args.device,
        args.model,
        args.out,
        clear=args.clear,
        timeout=args.timeout,
    )
    span = f" (seq {result.first}..{result.last})" if result.rows else ""
    print(
        f"pulled {result.rows} samples{span} of {args.model} from {args.device} into "
        f"{result.out}; {result.dropped} dropped on the device by its size bound"
    )
    if result.cleared is not None:
        print(f"cleared {result.cleared} pulled samples on the device")
    return 0
