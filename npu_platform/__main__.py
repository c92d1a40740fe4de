"""``python -m npu_platform``: the same as the ``npu-platform`` command."""

from npu_platform.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
