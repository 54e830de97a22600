"""Shared by the examples: `--url URL` uses a running server, no URL launches one."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import radixlm as rl


def run_example(main: Callable[[Any], Any], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", help="a running radixlm (or SGLang) server; default: launch one")
    args = parser.parse_args()
    if args.url:
        main(rl.RuntimeEndpoint(args.url))
        return
    print("launching a server with the default model (first start takes a minute)...")
    with rl.Runtime() as runtime:
        main(runtime.endpoint)
