"""Start-up hook of the emulated NPU: put the emulated ``torch_npu`` on ``sys.path``.

Run in every Python process from the project's ``.pth`` file::

    import npu_platform.emulation.boot as _npe; _npe.install()

so it must cost (almost) nothing and never stop an interpreter from starting. It imports only
``os`` and ``sys``. With ``NPU_PLATFORM_EMULATE`` on (``1``, ``true``, ``yes``, ``on``, the
rules of :mod:`npu_platform.env`) it inserts :data:`SITE`, the folder that holds the emulated
``torch_npu`` package, at ``sys.path[0]``; ``import torch_npu`` then gives the emulated package
under its real name. Otherwise it does nothing at all.
"""

import os
import sys

VARIABLE = "NPU_PLATFORM_EMULATE"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

#: The folder put in front of ``sys.path``: it holds the emulated ``torch_npu`` package.
SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")


def enabled(environ=None):
    """Whether ``NPU_PLATFORM_EMULATE`` is on; an unknown value raises ``ValueError``."""
    env = os.environ if environ is None else environ
    value = env.get(VARIABLE)
    if value is None:
        return False
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(
        f"{VARIABLE}={value!r} is not valid: {VARIABLE} accepts 1/0 "
        "(also true/false, yes/no, on/off; empty means 0)"
    )


def _put_first():
    if sys.path[:1] == [SITE] and sys.path.count(SITE) == 1:
        return
    while SITE in sys.path:
        sys.path.remove(SITE)
    sys.path.insert(0, SITE)


def install(force=False):
    """Put :data:`SITE` at ``sys.path[0]`` when emulation is on (or ``force``); never raises.

    Returns whether the emulated packages are importable afterwards. Calling it again is
    harmless. ``force=True`` (for tests and for :mod:`npu_platform.emulation.autoload`) acts
    whatever the environment says; it does not change the environment, so child processes
    follow ``NPU_PLATFORM_EMULATE`` as usual.
    """
    try:
        if not force:
            try:
                if not enabled():
                    return False
            except ValueError:
                # A bad value: the emulated NPU stays off; detection and `npu-platform
                # doctor` name the variable and its accepted values.
                return False
        _put_first()
        return True
    except Exception as exc:  # a start-up hook must never stop the interpreter
        try:
            sys.stderr.write(f"npu_platform: emulated NPU not installed: {exc!r}\n")
        except Exception:
            pass
        return False
