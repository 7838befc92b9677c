"""How the commands speak (``memtrackfs`` and ``vpu-sim``): ``--help`` with a description of each
subcommand, its options with their defaults and examples to copy; errors that name their file."""
from __future__ import annotations

import argparse
from typing import Any, Sequence


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written (line breaks kept); options in a wider column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def subcommand(subparsers: Any, name: str, summary: str, description: str = "",
               examples: Sequence[str] = (), **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand: ``summary`` in the command list, ``description`` and ``examples`` in its --help."""
    epilog = ("examples:\n" + "".join(f"  {example}\n" for example in examples)) if examples else None
    parser = subparsers.add_parser(name, help=summary, description=description or summary[:1].upper() + summary[1:],
                                   epilog=epilog, formatter_class=HelpFormatter, **kwargs)
    # A usage error found after parsing (options that do not go together) shows this command's
    # usage, as argparse's own errors do: `parse_args(...).command_parser.error(...)`.
    parser.set_defaults(command_parser=parser)
    return parser


def error_text(exc: OSError) -> str:
    """An OSError as a sentence that names the file it is about, when it has one."""
    text = exc.strerror or str(exc)
    return f"{exc.filename}: {text}" if exc.filename is not None else text
