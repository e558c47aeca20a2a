"""`python -m capslib` and the `capslib` command (pyproject.toml's entry point): capslib.cli.main.

capslib.cli.main turns Ctrl-C into one line; this covers the ~0.1 s before it runs, while capslib.cli
and what it imports load. (Ctrl-C while the interpreter itself starts, before any of capslib runs, is
Python's to report.)
"""

import sys


def run_capslib() -> int:
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("capslib: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run_capslib())
