"""`radixlm serve [flags]`: the command-line entry point."""

from __future__ import annotations

import sys

USAGE = "usage: radixlm serve [--model-path PATH] [--port 30000] ... (radixlm serve --help)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("serve",):
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    from radixlm.runtime.server import main as serve_main

    serve_main(argv[1:])


if __name__ == "__main__":
    main()
