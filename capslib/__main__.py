"""`python -m capslib` and the `capslib` command (pyproject.toml's entry point): capslib.cli.main.

capslib.cli.main turns Ctrl-C into one line; this covers the ~0.1 s before it runs, while capslib.cli
and what it imports load. (Ctrl-C while the interpreter itself starts, before any of capslib runs, is
Python's to report.)
"""

import sys

EXIT_NOT_INSTALLED = 1


def run_capslib() -> int:
    try:
        from .cli import main
        return main()
    except KeyboardInterrupt:
        print("capslib: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:
        # Before `make setup` (or in another Python than its environment) the first import of a dependency
        # fails: `capslib --help` already needs Pillow (predict's help). One line saying what to do, not a
        # traceback; a module of capslib itself missing is a broken checkout, and raises as it is.
        if not err.name or err.name.split(".")[0] == "capslib":
            raise
        print(f"capslib: {err.name.split('.')[0]} is not installed in this Python ({sys.executable}): run "
              "`make setup` in the repository first (docs/running.md)", file=sys.stderr)
        return EXIT_NOT_INSTALLED


if __name__ == "__main__":
    sys.exit(run_capslib())
