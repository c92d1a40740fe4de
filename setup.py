"""Build glue for what pyproject.toml cannot say: the start-up ``.pth`` file and a C shim.

``npu_platform-startup.pth`` must sit at the top of site-packages (the wheel's purelib root)
so that every Python process runs :mod:`npu_platform.patches._boot`. The ``build_pth``
command writes it: into ``build_lib`` for regular wheels (``install_lib`` then copies it to
the wheel root), and straight into the wheel being assembled for editable installs
(setuptools' ``editable_wheel`` points ``install_lib`` there and does not copy ``build_lib``).

``npu_platform/memory/_alloc_shim.c`` is compiled into ``npu_platform/memory/_alloc_shim.so``:
the plain C library (no Python, CANN or CUDA headers) that torch's pluggable allocators
(``NPUPluggableAllocator`` / ``CUDAPluggableAllocator``) load. It is not a Python module, so
its file name carries no interpreter tag. It is optional: without a C compiler the install
still succeeds, and using ``torch_memory_saver.region()`` on a device explains what is
missing.

Everything else is configured in pyproject.toml.
"""

from __future__ import annotations

import os

from setuptools import Command, Extension, setup
from setuptools.command.build import build
from setuptools.command.build_ext import build_ext

PTH_NAME = "npu_platform-startup.pth"
# site.py executes .pth lines that start with "import"; neither hook ever raises. The first
# puts the emulated torch_npu on sys.path when NPU_PLATFORM_EMULATE is on (and does nothing
# otherwise); the second arms the start-up patches.
PTH_CONTENT = (
    "import npu_platform.emulation.boot as _npe; _npe.install()\n"
    "import npu_platform.patches._boot as _npb; _npb.install()\n"
)


class build_pth(Command):  # noqa: N801 - setuptools command names are lower case
    description = f"write {PTH_NAME} (the npu_platform start-up hook) next to the packages"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self.editable_mode = False
        self._outputs: list[str] = []

    def finalize_options(self) -> None:
        self.set_undefined_options("build", ("build_lib", "build_lib"))

    def run(self) -> None:
        if self.editable_mode:
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        assert target is not None
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, PTH_NAME)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(PTH_CONTENT)
        self._outputs = [path]

    def get_outputs(self) -> list[str]:
        return list(self._outputs)

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return []


class build_with_pth(build):  # noqa: N801
    sub_commands = [*build.sub_commands, ("build_pth", None)]


# Plain C shared libraries built as "extensions": no PyInit, no interpreter tag in the name.
PLAIN_LIBRARIES = {"npu_platform.memory._alloc_shim"}
_PLAIN_BASENAMES = {name.rsplit(".", 1)[-1] for name in PLAIN_LIBRARIES}


class build_ext_plain(build_ext):  # noqa: N801
    def get_ext_filename(self, fullname: str) -> str:
        # Called with the dotted name and, from get_ext_fullpath, with its last part only.
        filename = super().get_ext_filename(fullname)
        if fullname in PLAIN_LIBRARIES or fullname in _PLAIN_BASENAMES:
            folder, name = os.path.split(filename)
            filename = os.path.join(folder, name.split(".", 1)[0] + ".so")
        return filename

    def get_export_symbols(self, ext: Extension) -> list[str]:
        if ext.name in PLAIN_LIBRARIES:
            return list(ext.export_symbols or [])
        return super().get_export_symbols(ext)


ALLOC_SHIM = Extension(
    "npu_platform.memory._alloc_shim",
    sources=["npu_platform/memory/_alloc_shim.c"],
    extra_compile_args=["-O2", "-fvisibility=hidden"],
    optional=True,
)

setup(
    ext_modules=[ALLOC_SHIM],
    cmdclass={"build": build_with_pth, "build_pth": build_pth, "build_ext": build_ext_plain},
)
