"""Command line: ``python -m resilience demo [--requests N] [--fault-rate R] [--seed S]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m resilience`` and the ``resilience`` console script."""
    parser = argparse.ArgumentParser(prog="resilience", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="bare httpx vs resilience against a flaky server on 127.0.0.1"
    )
    demo.add_argument("--requests", type=int, default=300, help="requests per run (default 300)")
    demo.add_argument(
        "--fault-rate", type=float, default=0.3, help="share of faulty answers (default 0.3)"
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the fault sequence")
    demo.add_argument(
        "--concurrency", type=int, default=20, help="concurrent requests in the async runs"
    )
    args = parser.parse_args(argv)
    try:
        from ._demo import run_demo
    except ModuleNotFoundError as exc:
        if exc.name != "rich":
            raise
        print("the demo needs rich: pip install 'resilience[demo]'", file=sys.stderr)
        return 2

    return run_demo(
        requests=args.requests,
        fault_rate=args.fault_rate,
        seed=args.seed,
        concurrency=args.concurrency,
        out=sys.stdout,
    )


if __name__ == "__main__":
    raise SystemExit(main())
