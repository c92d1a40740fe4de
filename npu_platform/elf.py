"""The symbols a shared library exports, read from its ELF file without loading it.

Loading a vendor library (``libascendcl.so``) runs its constructors, which may talk to the
driver; the doctor only wants to know which functions it exports, so it reads the dynamic
symbol table from the file. Standard library only.

The table is found through the section headers (``SHT_DYNSYM`` and its string table). A
library whose section headers were stripped still has its dynamic segment, which the loader
itself uses: then ``DT_SYMTAB`` / ``DT_STRTAB`` give the tables and ``DT_HASH`` or
``DT_GNU_HASH`` the number of symbols.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

__all__ = ["ElfError", "exported_symbols"]

_MAGIC = b"\x7fELF"
_SHT_DYNSYM = 11
_SHN_UNDEF = 0
_PT_LOAD = 1
_PT_DYNAMIC = 2
_DT_NULL = 0
_DT_HASH = 4
_DT_STRTAB = 5
_DT_SYMTAB = 6
_DT_STRSZ = 10
_DT_SYMENT = 11
_DT_GNU_HASH = 0x6FFFFEF5
_STB_GLOBAL = 1
_STB_WEAK = 2
_STV_DEFAULT = 0
_STV_PROTECTED = 3


class ElfError(ValueError):
    """The file is not an ELF shared library this reader understands; the message says why."""


class _Layout(NamedTuple):
    """struct formats (without the byte-order prefix) of one ELF class."""

    header: str
    section: str
    program: str
    symbol: str
    dynamic: str
    word: int  # bytes in an address-sized word (GNU hash bloom filter entries)
    symbol_fields: tuple[int, int, int, int]  # st_name, st_info, st_other, st_shndx
    program_fields: tuple[int, int, int, int]  # p_type, p_offset, p_vaddr, p_filesz


# Field order follows <elf.h>: Elf64_Ehdr after e_ident, Elf64_Shdr, Elf64_Phdr, Elf64_Sym,
# Elf64_Dyn, and the Elf32_* structs (whose Phdr and Sym orders differ from 64-bit).
_LAYOUTS = {
    1: _Layout(
        "HHIIIIIHHHHHH", "IIIIIIIIII", "IIIIIIII", "IIIBBH", "iI", 4, (0, 3, 4, 5), (0, 1, 2, 4)
    ),
    2: _Layout(
        "HHIQQQIHHHHHH", "IIQQQQIIQQ", "IIQQQQQQ", "IBBHQQ", "qQ", 8, (0, 1, 2, 3), (0, 2, 3, 5)
    ),
}


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        if data[:4] != _MAGIC:
            raise ElfError(f"{path} is not an ELF file (it starts with {data[:4]!r})")
        if len(data) < 16 or data[4] not in _LAYOUTS or data[5] not in (1, 2):
            raise ElfError(f"{path}: unknown ELF class or byte order")
        self.layout = _LAYOUTS[data[4]]
        self.order = "<" if data[5] == 1 else ">"

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        fmt = self.order + fmt
        end = offset + struct.calcsize(fmt)
        if offset < 0 or end > len(self.data):
            raise ElfError(f"{self.path} is truncated (a structure at {offset} ends past the file)")
        return struct.unpack_from(fmt, self.data, offset)

    def string(self, table: int, size: int, index: int) -> str:
        if index >= size:
            raise ElfError(f"{self.path}: a symbol name lies outside its string table")
        start = table + index
        end = self.data.find(b"\x00", start, table + size)
        if end < 0:
            raise ElfError(f"{self.path}: an unterminated symbol name")
        return self.data[start:end].decode("utf-8", errors="replace")

    def symbols(self, symtab: int, count: int, entsize: int, strtab: int, strsz: int) -> set[str]:
        names: set[str] = set()
        for i in range(count):
            fields = self.unpack(self.layout.symbol, symtab + i * entsize)
            st_name, st_info, st_other, st_shndx = (fields[j] for j in self.layout.symbol_fields)
            binding, visibility = st_info >> 4, st_other & 0x3
            if (
                st_shndx != _SHN_UNDEF
                and binding in (_STB_GLOBAL, _STB_WEAK)
                and visibility in (_STV_DEFAULT, _STV_PROTECTED)
                and st_name
            ):
                names.add(self.string(strtab, strsz, st_name))
        return names

    # -- through the section headers -------------------------------------------------------

    def from_sections(self) -> set[str] | None:
        header = self.unpack(self.layout.header, 16)
        shoff, shentsize, shnum = header[5], header[10], header[11]
        if not shoff or not shnum:
            return None
        sections = [self.unpack(self.layout.section, shoff + i * shentsize) for i in range(shnum)]
        for section in sections:
            sh_type, sh_offset, sh_size, sh_link, sh_entsize = (
                section[1],
                section[4],
                section[5],
                section[6],
                section[9],
            )
            if sh_type != _SHT_DYNSYM:
                continue
            if sh_link >= len(sections) or not sh_entsize:
                raise ElfError(f"{self.path}: a malformed .dynsym section header")
            strtab = sections[sh_link]
            return self.symbols(sh_offset, sh_size // sh_entsize, sh_entsize, strtab[4], strtab[5])
        return None

    # -- through the dynamic segment -------------------------------------------------------

    def from_dynamic(self) -> set[str]:
        header = self.unpack(self.layout.header, 16)
        phoff, phentsize, phnum = header[4], header[8], header[9]
        loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
        dynamic: tuple[int, int] | None = None  # (offset, filesz)
        for i in range(phnum):
            ph = self.unpack(self.layout.program, phoff + i * phentsize)
            p_type, p_offset, p_vaddr, p_filesz = (ph[j] for j in self.layout.program_fields)
            if p_type == _PT_LOAD:
                loads.append((p_vaddr, p_filesz, p_offset))
            elif p_type == _PT_DYNAMIC:
                dynamic = (p_offset, p_filesz)
        if dynamic is None:
            raise ElfError(f"{self.path} has neither a .dynsym section nor a dynamic segment")

        def offset_of(vaddr: int) -> int:
            for start, size, offset in loads:
                if start <= vaddr < start + size:
                    return vaddr - start + offset
            raise ElfError(f"{self.path}: address {vaddr:#x} is in no loaded segment")

        tags: dict[int, int] = {}
        entry_size = struct.calcsize(self.order + self.layout.dynamic)
        for i in range(dynamic[1] // entry_size):
            tag, value = self.unpack(self.layout.dynamic, dynamic[0] + i * entry_size)
            if tag == _DT_NULL:
                break
            tags.setdefault(tag, value)
        if _DT_SYMTAB not in tags or _DT_STRTAB not in tags:
            raise ElfError(f"{self.path}: the dynamic segment names no symbol table")
        symtab, strtab = offset_of(tags[_DT_SYMTAB]), offset_of(tags[_DT_STRTAB])
        strsz = tags.get(_DT_STRSZ, len(self.data) - strtab)
        entsize = tags.get(_DT_SYMENT, struct.calcsize(self.order + self.layout.symbol))
        if _DT_HASH in tags:
            count = self.unpack("II", offset_of(tags[_DT_HASH]))[1]  # nbucket, nchain
        elif _DT_GNU_HASH in tags:
            count = self._gnu_hash_count(offset_of(tags[_DT_GNU_HASH]))
        else:
            raise ElfError(f"{self.path}: no DT_HASH or DT_GNU_HASH to count the symbols")
        return self.symbols(symtab, count, entsize, strtab, strsz)

    def _gnu_hash_count(self, table: int) -> int:
        """The number of dynamic symbols, from a GNU hash table (the highest chain's end)."""
        nbuckets, symoffset, bloom_size, _shift = self.unpack("IIII", table)
        buckets = table + 16 + bloom_size * self.layout.word
        highest = max(self.unpack(f"{nbuckets}I", buckets), default=0) if nbuckets else 0
        if highest < symoffset:
            return symoffset
        chains = buckets + 4 * nbuckets
        index = highest
        while not self.unpack("I", chains + 4 * (index - symoffset))[0] & 1:
            index += 1
        return index + 1


def exported_symbols(path: str | os.PathLike[str]) -> frozenset[str]:
    """Names of the symbols ``path`` defines for other objects (global or weak, default or
    protected visibility) in its dynamic symbol table; the library is not loaded.

    Raises :class:`ElfError` when the file is not an ELF object with a readable dynamic
    symbol table, ``OSError`` when it cannot be read.
    """
    name = os.fspath(path)
    with open(name, "rb") as fh:
        data = fh.read()
    reader = _Reader(data, name)
    found = reader.from_sections()
    return frozenset(found if found is not None else reader.from_dynamic())
