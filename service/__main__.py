"""Entry point for ``python -m service``."""

import sys


def main() -> int:
    print(
        "watchtime: the HTTP service is not implemented yet; only the distribution "
        "post-processor (service.distributions) exists so far.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
