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

#: subcommand -> module providing ``add_parser(subparsers)``; imported lazily so that
#: ``defectcam --help`` stays fast and one broken optional dependency breaks one command only.
COMMANDS = {
    "propose": "defectcam.commands.propose",
    "serve": "defectcam.serve",
    "simulate": "defectcam.commands.train",
    "train": "defectcam.commands.train",
    "evaluate": "defectcam.commands.evaluate",
    "feedback": "defectcam.commands.feedback",
}


def build_parser(names: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defectcam",
        description="Crack / spalling / rust proposals for CVAT from click-trained classifiers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
