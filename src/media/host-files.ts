/**
 * Host programs copied into a boot image with everything they need to run there: the shared
 * libraries they name (ELF DT_NEEDED, transitively) and the ELF interpreter
 * (/lib64/ld-linux-x86-64.so.2). Dependencies are read from the ELF files themselves, not from
 * `ldd`, so nothing on the host is executed. A file reached under two names (a library and a
 * symlink to it, the interpreter and libc's own ld-linux entry) is stored once; the other
 * names become symlinks.
 */
import { readFileSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import type { CpioEntry } from "./cpio.ts";

/** Where Debian keeps x86-64 shared libraries, in the order the dynamic linker looks. */
export const LIBRARY_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/** A host file that must exist; throws naming the Debian package to install when it does not. */
export function requireHostFile(candidates: string | string[], debianPackage: string): string {
  const list = typeof candidates === "string" ? [candidates] : candidates;
  for (const c of list) {
    try {
      if (statSync(c).isFile()) return c;
    } catch {
      // try the next
    }
  }
  throw new Error(`Cannot find ${list.join(" or ")}: install the Debian package ${debianPackage} (apt-get install ${debianPackage})`);
}

export interface ElfInfo {
  interpreter?: string;
  needed: string[];
  runpath: string[];
}

/** The interpreter, DT_NEEDED names and DT_RUNPATH/DT_RPATH of a little-endian ELF64 file. */
export function readElf(elf: Buffer): ElfInfo {
  if (elf.length < 0x40 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error("not an ELF file");
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error("not a little-endian ELF64 file");
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const segments = [];
  for (let i = 0; i < phnum; i++) {
    const b = phoff + i * phentsize;
    segments.push({
      type: elf.readUInt32LE(b),
      offset: Number(elf.readBigUInt64LE(b + 0x08)),
      vaddr: Number(elf.readBigUInt64LE(b + 0x10)),
      filesz: Number(elf.readBigUInt64LE(b + 0x20)),
    });
  }
  const PT_LOAD = 1, PT_DYNAMIC = 2, PT_INTERP = 3;
  const cstr = (off: number) => elf.toString("latin1", off, elf.indexOf(0, off));
  const out: ElfInfo = { needed: [], runpath: [] };
  const interp = segments.find((s) => s.type === PT_INTERP);
  if (interp) out.interpreter = cstr(interp.offset);
  const dyn = segments.find((s) => s.type === PT_DYNAMIC);
  if (!dyn) return out;
  const DT_NEEDED = 1, DT_STRTAB = 5, DT_RPATH = 15, DT_RUNPATH = 29;
  const entries: [number, number][] = [];
  for (let off = dyn.offset; off + 16 <= dyn.offset + dyn.filesz; off += 16) {
    const tag = Number(elf.readBigInt64LE(off));
    if (tag === 0) break;
    entries.push([tag, Number(elf.readBigUInt64LE(off + 8))]);
  }
  const strtabAddr = entries.find(([t]) => t === DT_STRTAB)?.[1];
  if (strtabAddr === undefined) return out;
  // DT_STRTAB is a virtual address: map it to a file offset through the loadable segments.
  const load = segments.find((s) => s.type === PT_LOAD && strtabAddr >= s.vaddr && strtabAddr < s.vaddr + s.filesz);
  if (!load) throw new Error("ELF string table is outside every loadable segment");
  const strtab = strtabAddr - load.vaddr + load.offset;
  for (const [tag, val] of entries) {
    if (tag === DT_NEEDED) out.needed.push(cstr(strtab + val));
    else if (tag === DT_RUNPATH || tag === DT_RPATH) out.runpath.push(...cstr(strtab + val).split(":").filter((p) => p && !p.includes("$")));
  }
  return out;
}

export interface HostProgram {
  /** The file on the host (e.g. a stripped copy of node). */
  source: string;
  /** Where it goes in the image, e.g. "/usr/sbin/sfdisk". */
  target: string;
}

/**
 * Archive entries for `programs` and their shared-library closure. Libraries keep their
 * host path (e.g. /lib/x86_64-linux-gnu/libc.so.6); statically linked programs need none.
 * Throws naming the program and library when a library cannot be found.
 */
export function hostProgramEntries(programs: HostProgram[]): CpioEntry[] {
  const entries = new Map<string, CpioEntry>();
  /** realpath on the host → the first image path it was stored at. */
  const stored = new Map<string, string>();
  const place = (source: string, target: string, mode?: number) => {
    if (entries.has(target)) return;
    const real = realpathSync(source);
    const first = stored.get(real);
    if (first) {
      entries.set(target, { path: target, type: "symlink", target: first });
      return;
    }
    stored.set(real, target);
    entries.set(target, { path: target, type: "file", data: readFileSync(real), mode: mode ?? statSync(real).mode & 0o777 });
  };
  const visited = new Set<string>();
  const visit = (file: string, owner: string) => {
    const real = realpathSync(file);
    if (visited.has(real)) return;
    visited.add(real);
    const info = readElf(readFileSync(real));
    if (info.interpreter) place(info.interpreter, info.interpreter, 0o755);
    for (const lib of info.needed) {
      const found = [...info.runpath, ...LIBRARY_DIRS].map((d) => path.join(d, lib)).find((p) => isFile(p));
      if (!found) throw new Error(`Cannot copy ${owner}: its library ${lib} is not in ${LIBRARY_DIRS.join(", ")}`);
      place(found, found, 0o755);
      visit(found, owner);
    }
  };
  for (const p of programs) {
    place(p.source, p.target, 0o755);
    visit(p.source, p.source);
  }
  return [...entries.values()];
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}
