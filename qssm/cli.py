"""`qssm` command line. Each subcommand lives in a module of qssm/commands/ (the table in
qssm/commands/__init__.py) that exposes `register(subparsers)`; errors a user can fix are QssmError,
printed as one line with exit code 2. Only the chosen command's module is imported."""

from __future__ import annotations

import argparse
import importlib
import sys

from qssm.commands import COMMANDS
from qssm.errors import QssmError
from qssm.version import __version__


class Parser(argparse.ArgumentParser):
    """argparse prints its usage and exits on a bad argument; qssm's rule is one line and exit 2."""

    def error(self, message: str):
        raise QssmError(f"{message}; see `{self.prog} --help`")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: the command it names registers its full options (its module is
    imported by name here, the one dynamic import of the command line); every other command is a
    name and a help line. Without argv, every command's module registers (for tests and docs)."""
    parser = Parser(
        prog="qssm", description="Run trained quantum sequence models (QMamba, QLAM) on simulators and QPUs.")
    parser.add_argument("--version", action="version", version=f"qssm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = {a for a in argv if a in COMMANDS}.intersection(argv[:1]) if argv is not None else set(COMMANDS)
    for module in dict.fromkeys(COMMANDS[name][0] for name in chosen):
        importlib.import_module(f"qssm.commands.{module}").register(sub)
    for name, (_, help_) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
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
