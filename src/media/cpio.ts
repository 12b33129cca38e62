/**
 * The "newc" cpio format the Linux kernel unpacks as an initramfs
 * (Documentation/driver-api/early-userspace/buffer-format.rst). Output is deterministic:
 * every entry has mtime 0, uid/gid 0 and inode numbers in the order entries are written.
 * `buildCpio` sorts entries by path and adds missing parent directories, so the same set of
 * entries always gives the same bytes.
 */

export type CpioEntry =
  | { path: string; type: "dir"; mode?: number }
  | { path: string; type: "file"; data: Buffer; mode?: number }
  | { path: string; type: "symlink"; target: string }
  | { path: string; type: "char"; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/** Writes entries in the order given; callers that want determinism add them sorted. */
export class CpioWriter {
  private chunks: Buffer[] = [];
  private ino = 1;
  private length = 0;

  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  private pad(): void {
    const n = (4 - (this.length % 4)) % 4;
    if (n) this.push(Buffer.alloc(n));
  }

  private entry(name: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): void {
    const nameBytes = Buffer.from(name + "\0", "utf8");
    // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    const fields = [this.ino++, mode, 0, 0, (mode & 0o170000) === S_IFDIR ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0];
    this.push(Buffer.from("070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join(""), "latin1"));
    this.push(nameBytes);
    this.pad();
    if (data.length) {
      this.push(data);
      this.pad();
    }
  }

  dir(name: string, perm = 0o755): void {
    this.entry(name, S_IFDIR | perm, Buffer.alloc(0));
  }

  file(name: string, data: Buffer, perm = 0o644): void {
    this.entry(name, S_IFREG | perm, data);
  }

  symlink(name: string, target: string): void {
    this.entry(name, S_IFLNK | 0o777, Buffer.from(target, "utf8"));
  }

  charDevice(name: string, major: number, minor: number, perm = 0o600): void {
    this.entry(name, S_IFCHR | perm, Buffer.alloc(0), [major, minor]);
  }

  add(e: CpioEntry): void {
    if (e.type === "dir") this.dir(e.path, e.mode);
    else if (e.type === "file") this.file(e.path, e.data, e.mode);
    else if (e.type === "symlink") this.symlink(e.path, e.target);
    else this.charDevice(e.path, e.major, e.minor, e.mode);
  }

  /** Appends the trailer and returns the archive. */
  finish(): Buffer {
    this.ino = 0;
    this.entry("TRAILER!!!", 0, Buffer.alloc(0));
    return Buffer.concat(this.chunks);
  }
}

/** Normalizes "/a/b/" to "a/b"; refuses empty, "." and ".." components. */
export function cpioPath(p: string): string {
  const parts = p.split("/").filter((s) => s !== "");
  if (parts.length === 0 || parts.some((s) => s === "." || s === "..")) throw new Error(`bad archive path "${p}"`);
  return parts.join("/");
}

/**
 * A cpio archive of `entries`, sorted by path (bytewise), with every missing parent directory
 * added (mode 0755). Two entries for one path are an error unless both are directories (the
 * later one wins).
 */
export function buildCpio(entries: Iterable<CpioEntry>): Buffer {
  const byPath = new Map<string, CpioEntry>();
  const put = (e: CpioEntry) => {
    const prev = byPath.get(e.path);
    if (prev) {
      if (prev.type !== "dir" || e.type !== "dir") throw new Error(`archive path "${e.path}" added twice`);
    }
    byPath.set(e.path, e);
  };
  for (const e of entries) {
    const p = cpioPath(e.path);
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const prev = byPath.get(parent);
      if (prev && prev.type !== "dir") throw new Error(`archive path "${parent}" is not a directory but "${p}" is inside it`);
      if (!prev) byPath.set(parent, { path: parent, type: "dir" });
    }
    put({ ...e, path: p });
  }
  const w = new CpioWriter();
  for (const p of [...byPath.keys()].sort(compareBytes)) w.add(byPath.get(p)!);
  return w.finish();
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** The entries of a newc archive (up to the trailer), for checking what an image holds. */
export function readCpio(archive: Buffer): CpioEntry[] {
  const out: CpioEntry[] = [];
  let off = 0;
  const align = (n: number) => (n + 3) & ~3;
  for (;;) {
    if (off + 110 > archive.length) throw new Error(`cpio archive truncated at offset ${off}`);
    if (archive.toString("latin1", off, off + 6) !== "070701") throw new Error(`no newc header at offset ${off}`);
    const field = (i: number) => parseInt(archive.toString("latin1", off + 6 + i * 8, off + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const rdev = [field(9), field(10)];
    const name = archive.toString("utf8", off + 110, off + 110 + nameSize - 1);
    const dataStart = align(off + 110 + nameSize);
    const data = archive.subarray(dataStart, dataStart + size);
    off = align(dataStart + size);
    if (name === "TRAILER!!!") return out;
    const type = mode & 0o170000;
    if (type === S_IFDIR) out.push({ path: name, type: "dir", mode: mode & 0o7777 });
    else if (type === S_IFREG) out.push({ path: name, type: "file", data, mode: mode & 0o7777 });
    else if (type === S_IFLNK) out.push({ path: name, type: "symlink", target: data.toString("utf8") });
    else if (type === S_IFCHR) out.push({ path: name, type: "char", major: rdev[0], minor: rdev[1], mode: mode & 0o7777 });
    else throw new Error(`unsupported cpio entry type ${type.toString(8)} for ${name}`);
  }
}
