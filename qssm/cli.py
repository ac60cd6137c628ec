"""`qssm` command line. Each subcommand lives in qssm/commands/<name>.py and exposes
`register(subparsers)`; errors a user can fix are QssmError, printed as one line with exit code 2."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from qssm import __version__, commands
from qssm.errors import QssmError


class Parser(argparse.ArgumentParser):
    """argparse prints its usage and exits on a bad argument; qssm's rule is one line and exit 2."""

    def error(self, message: str):
        raise QssmError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="qssm", description="Run trained quantum sequence models (QMamba, QLAM) on simulators and QPUs.")
    parser.add_argument("--version", action="version", version=f"qssm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"qssm.commands.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except QssmError as e:
        # one line whatever the message holds (a path or a provider's text with a newline in it)
        print("qssm: error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("qssm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
