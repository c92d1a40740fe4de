"""The ``npu-platform`` command line.

``main(argv)`` parses the arguments, runs one subcommand and returns its exit status; it
never exits the interpreter itself (the console-script wrapper and ``python -m
npu_platform`` do that). Subcommands import their implementation lazily, so ``--help`` stays
cheap.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import npu_platform


def _doctor(args: argparse.Namespace) -> int:
    from npu_platform import doctor

    return doctor.main(as_json=args.json)


def _conformance(args: argparse.Namespace) -> int:
    from npu_platform import conformance

    groups = args.only.split(",") if args.only else conformance.GROUPS
    unknown = sorted(set(groups) - set(conformance.GROUPS))
    if unknown:
        print(
            f"npu-platform conformance: unknown group(s) {', '.join(unknown)}; "
            f"choose from {', '.join(conformance.GROUPS)}"
        )
        return 2
    return conformance.main(groups, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npu-platform",
        description="Huawei Ascend NPU support for unmodified vLLM and sglang.",
    )
    parser.add_argument(
        "--version", action="version", version=f"npu-platform {npu_platform.__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    doctor = commands.add_parser(
        "doctor",
        help="check whether this environment can run vLLM/sglang on an Ascend NPU",
        description=(
            "Report the installed versions, the CANN libraries, the NPU detection decision "
            "and compatibility verdicts. Exit status 1 when the stack cannot work, 0 otherwise."
        ),
    )
    doctor.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the text report"
    )
    doctor.set_defaults(handler=_doctor)

    conformance = commands.add_parser(
        "conformance",
        help="run the plugin's conformance checks against the installed stack",
        description=(
            "Check entry points, the vLLM platform and attention contracts, custom ops, the "
            "memory manager's pause/resume semantics and the sglang wiring on this machine's "
            "NPU (real, or emulated with NPU_PLATFORM_EMULATE=1). Exit status 1 on any failure."
        ),
    )
    conformance.add_argument("--json", action="store_true", help="print one JSON object")
    conformance.add_argument(
        "--only", metavar="GROUPS", help="comma-separated groups: memory,vllm,sglang"
    )
    conformance.set_defaults(handler=_conformance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``npu-platform`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except BrokenPipeError:  # output piped into `head` and the like
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
