"""The ``defectcam`` console script: one subcommand per job.

    defectcam propose IMAGE... --weights weights/ --out out/
    defectcam serve --port 8080
    defectcam simulate / train      (clicks -> classifiers)
    defectcam evaluate              (proposals vs ground truth, time saved)
    defectcam feedback              (CVAT edits -> new clicks)
"""

from __future__ import annotations

import argparse
import importlib
import sys

from defectcam import __version__

#: subcommand -> module providing ``add_parser(subparsers)``; imported lazily so that
#: ``defectcam --help`` stays fast and one broken optional dependency breaks one command only.
COMMANDS = {
    "propose": "defectcam.commands.propose",
    "serve": "defectcam.commands.serve",
    "simulate": "defectcam.commands.train",
    "train": "defectcam.commands.train",
    "evaluate": "defectcam.commands.evaluate",
    "feedback": "defectcam.commands.feedback",
    "pseudo-masks": "defectcam.commands.pixels",
    "annotated-masks": "defectcam.commands.pixels",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default unless it says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or "default" in text.lower():
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return f"{text} (default: {'on' if action.default else 'off'})"
        if action.default is not None and action.default is not argparse.SUPPRESS:
            return f"{text} (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: :class:`HelpFormatter`, whatever the module asked for."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)


def build_parser(names: list[str] | None = None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="defectcam",
        description="Crack / spalling / rust proposals for CVAT from click-trained classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"defectcam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=Parser)
    done = set()
    for name in names or list(COMMANDS):
        module_name = COMMANDS[name]
        if module_name in done:
            continue
        module = importlib.import_module(module_name)
        module.add_parser(sub)
        done.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else None
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # user errors: one clear line, no traceback
        print(f"defectcam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
