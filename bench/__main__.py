"""`python -m bench [load|run|all|explain]` — `make bench` runs `all` on a throwaway
PostgreSQL; `explain` prints the list queries' plans (bench/README.md)."""

from __future__ import annotations

import argparse
import json

from bench import env


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "command", choices=["load", "run", "all", "explain"], nargs="?", default="all"
    )
    parser.add_argument("--only", help="run only scenarios whose name holds this (or any of a|b|c)")
    parser.add_argument("--label", default="", help="a label for the results file")
    args = parser.parse_args()
    env.setup()
    from bench import load, runner

    if args.command == "explain":
        from bench.explain import explain

        print(explain())
        return

    load_timings = None
    if args.command in ("load", "all"):
        shape = load.Shape.from_env()
        print(f"bench load: {shape}", flush=True)
        load_timings = {"shape": shape.__dict__, **load.load(shape)}
        print(json.dumps(load_timings), flush=True)
    if args.command in ("run", "all"):
        runner.run(only=args.only, label=args.label, load_timings=load_timings)


if __name__ == "__main__":
    main()
