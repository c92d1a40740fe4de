"""Edge cases of CANN discovery (``npu_platform.cann``) and the ELF symbol reader
(``npu_platform.elf``): the system library cache, version files that hold no version, and
damaged or unusual ELF files, each edited from a real library built here."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from npu_platform import cann, elf
from tests.fake_acl import build

# -- cann: the system library cache ------------------------------------------------------------


def test_library_found_through_the_ld_cache(tmp_path: Path, monkeypatch) -> None:
    lib = tmp_path / "sys" / "libascendcl.so"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    cache = tmp_path / "ld.so.cache"
    # entries are NUL-terminated strings; a relative one and a missing one come first
    cache.write_bytes(
        b"glibc-ld.so.cache1.1\x00libascendcl.so\x00rel/libascendcl.so\x00"
        b"/gone/libascendcl.so\x00" + str(lib).encode() + b"\x00"
    )
    monkeypatch.setattr(cann, "_LD_CACHE", str(cache))
    env = {"LD_LIBRARY_PATH": str(tmp_path / "empty")}
    assert cann.library_file("libascendcl.so", env) == str(lib)
    assert cann.find_library("libascendcl.so", env) == f"{cache} (system library cache)"
    assert cann.library_file("libhccl.so", env) is None
    assert cann.find_library("libhccl.so", env) is None


def test_unreadable_ld_cache_finds_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cann, "_LD_CACHE", str(tmp_path / "no-such-cache"))
    env = {"LD_LIBRARY_PATH": str(tmp_path)}
    assert cann.find_library("libascendcl.so", env) is None
    assert cann.library_file("libascendcl.so", env) is None


def test_toolkit_root_above_an_arch_linux_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cann, "_LD_CACHE", str(tmp_path / "no-such-cache"))
    lib64 = tmp_path / "latest" / "x86_64-linux" / "lib64"
    lib64.mkdir(parents=True)
    (lib64 / "libascendcl.so").write_bytes(b"")
    roots = cann.toolkit_roots({"LD_LIBRARY_PATH": str(lib64)})
    assert roots[:2] == [str(tmp_path / "latest" / "x86_64-linux"), str(tmp_path / "latest")]
    assert roots[2:] == list(cann.DEFAULT_TOOLKIT_ROOTS)


def test_version_files_without_a_version(tmp_path: Path) -> None:
    cfg = tmp_path / "version.cfg"
    cfg.write_text("# nothing released\nruntime_running_version=[]\nother=1\n")
    assert cann.parse_version_file(str(cfg)) is None
    cfg.write_text("runtime_running_version=[7.6.0.1.220:8.0.0]\n")
    assert cann.parse_version_file(str(cfg)) == ("8.0.0", "release")
    folder = tmp_path / "version.info"
    folder.mkdir()  # unreadable as a file
    assert cann.parse_version_file(str(folder)) is None


def test_cann_version_value_semantics() -> None:
    a = cann.CannVersion("8.0.0", "/x/version.cfg", "release", ("/x",), ("/x/version.cfg",))
    b = cann.CannVersion("8.0.0", "/x/version.cfg", "release", ["/x"], ["/x/version.cfg"])
    c = cann.CannVersion("8.0.0", "/x/version.cfg", "component", ("/x",), ("/x/version.cfg",))
    assert a == b and hash(a) == hash(b) and len({a, b, c}) == 2
    assert a != c
    assert a != "8.0.0"
    assert repr(a) == "CannVersion('8.0.0', source='/x/version.cfg', kind='release')"


# -- elf: damaged and unusual libraries ---------------------------------------------------------


def _compile(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / f"lib{name}.so"
    cmd = [build.compiler(), "-shared", "-fPIC", "-O0", *flags, "-o", str(out), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


MANY = "".join(f"int exported_{i}(void) {{ return {i}; }}\n" for i in range(300))


@pytest.fixture(scope="module")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if build.compiler() is None:
        pytest.skip("no C compiler")
    tmp = tmp_path_factory.mktemp("elf")
    return {
        "many": _compile(tmp, "many", MANY, "-Wl,--hash-style=gnu"),
        "none": _compile(
            tmp,
            "none",
            "static int hidden(void) { return 0; }\nint (*keep)(void) = hidden;\n",
            "-Wl,--hash-style=gnu",
            "-fvisibility=hidden",
        ),
    }


def _sections(data: bytes) -> list[tuple[int, ...]]:
    """(name, type, flags, addr, offset, size, link, info, align, entsize) of each
    section of a little-endian ELF64 file."""
    assert data[4] == 2 and data[5] == 1, "the tests edit little-endian ELF64 files"
    shoff, shentsize, shnum = (
        struct.unpack_from("<Q", data, 0x28)[0],
        *struct.unpack_from("<HH", data, 0x3A),
    )
    return [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]


def _section_header(data: bytes, index: int) -> int:
    shoff, shentsize = (
        struct.unpack_from("<Q", data, 0x28)[0],
        struct.unpack_from("<H", data, 0x3A)[0],
    )
    return shoff + index * shentsize


def _dynsym_index(data: bytes) -> int:
    return next(i for i, s in enumerate(_sections(data)) if s[1] == 11)


def _strip_sections(data: bytearray) -> None:
    data[0x28:0x30] = bytes(8)  # e_shoff
    data[0x3C:0x40] = bytes(4)  # e_shnum, e_shstrndx


def _programs(data: bytes) -> list[tuple[int, int]]:
    """(offset of the header, p_type) of each program header."""
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return [
        (phoff + i * phentsize, struct.unpack_from("<I", data, phoff + i * phentsize)[0])
        for i in range(phnum)
    ]


def _dynamic_entries(data: bytes) -> list[tuple[int, int]]:
    """(offset, tag) of each dynamic entry up to DT_NULL."""
    (header,) = [h for h, t in _programs(data) if t == 2]
    offset, filesz = (
        struct.unpack_from("<QQ", data, header + 8)[0],
        struct.unpack_from("<Q", data, header + 32)[0],
    )
    out = []
    for i in range(filesz // 16):
        tag = struct.unpack_from("<q", data, offset + 16 * i)[0]
        if tag == 0:
            break
        out.append((offset + 16 * i, tag))
    return out


def _write(tmp_path: Path, data: bytes, name: str = "libedited.so") -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def test_gnu_hash_with_long_chains(libs: dict[str, Path], tmp_path: Path) -> None:
    """300 symbols share fewer buckets: the count walks the last chain to its end."""
    expected = {f"exported_{i}" for i in range(300)}
    assert expected <= elf.exported_symbols(libs["many"])
    data = bytearray(libs["many"].read_bytes())
    _strip_sections(data)
    assert elf.exported_symbols(_write(tmp_path, data)) == elf.exported_symbols(libs["many"])


def test_library_exporting_nothing(libs: dict[str, Path], tmp_path: Path) -> None:
    names = elf.exported_symbols(libs["none"])
    assert "hidden" not in names and "keep" not in names
    data = bytearray(libs["none"].read_bytes())
    _strip_sections(data)
    assert elf.exported_symbols(_write(tmp_path, data)) == names


def test_sections_without_dynsym_fall_back_to_the_dynamic_segment(
    libs: dict[str, Path], tmp_path: Path
) -> None:
    data = bytearray(libs["many"].read_bytes())
    header = _section_header(data, _dynsym_index(data))
    struct.pack_into("<I", data, header + 4, 0)  # SHT_NULL instead of SHT_DYNSYM
    assert elf.exported_symbols(_write(tmp_path, data)) == elf.exported_symbols(libs["many"])


def test_malformed_dynsym_header(libs: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(libs["many"].read_bytes())
    header = _section_header(data, _dynsym_index(data))
    struct.pack_into("<I", data, header + 40, 9999)  # sh_link past the section table
    with pytest.raises(elf.ElfError, match="a malformed .dynsym section header"):
        elf.exported_symbols(_write(tmp_path, data))


def test_symbol_names_outside_or_unterminated_in_the_string_table(
    libs: dict[str, Path], tmp_path: Path
) -> None:
    data = bytearray(libs["many"].read_bytes())
    sections = _sections(data)
    link = sections[_dynsym_index(data)][6]
    strtab_header = _section_header(data, link)
    offset, size = sections[link][4], sections[link][5]
    short = bytearray(data)
    struct.pack_into("<Q", short, strtab_header + 32, 1)  # sh_size: only the leading NUL
    with pytest.raises(elf.ElfError, match="a symbol name lies outside its string table"):
        elf.exported_symbols(_write(tmp_path, short, "libshort.so"))
    unterminated = bytearray(data)
    unterminated[offset + 1 : offset + size] = b"A" * (size - 1)
    with pytest.raises(elf.ElfError, match="an unterminated symbol name"):
        elf.exported_symbols(_write(tmp_path, unterminated, "libunterminated.so"))


def test_stripped_library_with_damaged_dynamic_segment(
    libs: dict[str, Path], tmp_path: Path
) -> None:
    base = bytearray(libs["many"].read_bytes())
    _strip_sections(base)
    dt_loos = 0x6000000D

    no_dynamic = bytearray(base)
    for header, ptype in _programs(base):
        if ptype == 2:
            struct.pack_into("<I", no_dynamic, header, 0)  # PT_NULL
    with pytest.raises(elf.ElfError, match="has neither a .dynsym section nor a dynamic segment"):
        elf.exported_symbols(_write(tmp_path, no_dynamic, "libnodyn.so"))

    no_loads = bytearray(base)
    for header, ptype in _programs(base):
        if ptype == 1:
            struct.pack_into("<I", no_loads, header, 0)
    with pytest.raises(elf.ElfError, match=r"address 0x[0-9a-f]+ is in no loaded segment"):
        elf.exported_symbols(_write(tmp_path, no_loads, "libnoload.so"))

    for tags, message, name in (
        ((6,), "the dynamic segment names no symbol table", "libnosymtab.so"),
        ((4, 0x6FFFFEF5), "no DT_HASH or DT_GNU_HASH to count the symbols", "libnohash.so"),
    ):
        edited = bytearray(base)
        for offset, tag in _dynamic_entries(base):
            if tag in tags:
                struct.pack_into("<q", edited, offset, dt_loos)
        with pytest.raises(elf.ElfError, match=message):
            elf.exported_symbols(_write(tmp_path, edited, name))


def test_nm_agrees_on_the_many_symbol_library(libs: dict[str, Path]) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    proc = subprocess.run(
        [nm, "-D", "--defined-only", str(libs["many"])], capture_output=True, text=True, check=True
    )
    assert elf.exported_symbols(libs["many"]) == {
        line.split()[-1] for line in proc.stdout.splitlines()
    }
