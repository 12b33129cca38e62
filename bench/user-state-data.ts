/**
 * Helper of bench/user-state.ts: an old system's root with users' files (see that file's
 * comment), made once per run.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export const USERS: [string, number][] = [["alice", 1000], ["bob", 1001]];

/** A small deterministic PRNG (sizes and choices; file contents come from randomBytes). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (() => {
  const r = prng(7);
  const letters = "etaoinshrdlcumwfgypbvkjxqz";
  const out: Buffer[] = [];
  for (let i = 0; i < 256; i++) {
    let w = "";
    const n = 2 + Math.floor(r() * 9);
    for (let k = 0; k < n; k++) w += letters[Math.floor(Math.pow(r(), 1.6) * 26)];
    out.push(Buffer.from(w));
  }
  return out;
})();

/** `size` bytes of text: random words (one random byte picks each), spaces and line breaks. */
function text(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  const picks = randomBytes(Math.ceil(size / 2) + 16);
  let o = 0;
  let p = 0;
  let line = 0;
  while (o < size) {
    const w = WORDS[picks[p++ % picks.length]!]!;
    const n = Math.min(w.length, size - o);
    w.copy(out, o, 0, n);
    o += n;
    line += n;
    if (o < size) {
      out[o++] = line > 70 ? 10 : 32;
      if (line > 70) line = 0;
    }
  }
  return out;
}

export function writeAccounts(root: string): void {
  fs.mkdirSync(path.join(root, "etc"), { recursive: true });
  fs.writeFileSync(path.join(root, "etc/passwd"), [
    "root:x:0:0:root:/root:/bin/bash",
    ...USERS.map(([n, u]) => `${n}:x:${u}:${u}:${n}:/home/${n}:/bin/bash`),
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
  ].join("\n") + "\n");
  fs.writeFileSync(path.join(root, "etc/group"), ["root:x:0:", ...USERS.map(([n, g]) => `${n}:x:${g}:`)].join("\n") + "\n");
}

export type Tree = { root: string; files: number; bytes: number; textBytes: number };

/** An old system's root with `mib` MiB of users' files (see the module comment). */
export function makeTree(root: string, mib: number, opts: { seed: number; textShare: number; large: number }): Tree {
  const r = prng(opts.seed);
  writeAccounts(root);
  fs.mkdirSync(path.join(root, "home"));
  const total = mib * 1048576;
  const largeEach = opts.large > 0 ? Math.floor((total * 0.375) / opts.large) : 0;
  const smallTotal = total - largeEach * opts.large;
  const tree: Tree = { root, files: 0, bytes: 0, textBytes: 0 };
  const put = (file: string, size: number, isText: boolean, uid: number) => {
    const data = isText ? text(size) : randomBytes(size);
    fs.writeFileSync(file, data);
    fs.chownSync(file, uid, uid);
    tree.files++;
    tree.bytes += size;
    if (isText) tree.textBytes += size;
  };
  const mkdir = (dir: string, uid: number) => {
    fs.mkdirSync(dir);
    fs.chownSync(dir, uid, uid);
  };
  for (const [name, uid] of USERS) mkdir(path.join(root, "home", name), uid);
  let small = 0;
  let n = 0;
  let dir = "";
  while (small < smallTotal) {
    const [user, uid] = USERS[Math.floor(n / 50) % USERS.length]!;
    if (n % 50 === 0) {
      const group = Math.floor(n / 50);
      const top = path.join(root, "home", user, `projects-${Math.floor(group / 40)}`);
      const mid = path.join(top, `p${Math.floor(group / 8) % 5}`);
      dir = path.join(mid, `d${group}`);
      for (const d of [top, mid]) if (!fs.existsSync(d)) mkdir(d, uid);
      mkdir(dir, uid);
    }
    const size = Math.min(smallTotal - small, 1024 + Math.floor(r() * 63 * 1024));
    const isText = r() < opts.textShare;
    put(path.join(dir, `file-${n}${isText ? ".txt" : ".bin"}`), size, isText, uid);
    small += size;
    n++;
  }
  for (let i = 0; i < opts.large; i++) {
    const [user, uid] = USERS[i % USERS.length]!;
    const isText = i === 1;
    const file = path.join(root, "home", user, isText ? `notes-${i}.log` : `disk-${i}.img`);
    // Written in 8 MiB pieces: a 128 MiB Buffer of text at once is slow to build.
    const fd = fs.openSync(file, "w");
    for (let left = largeEach; left > 0;) {
      const k = Math.min(left, 8 << 20);
      fs.writeSync(fd, isText ? text(k) : randomBytes(k));
      left -= k;
    }
    fs.closeSync(fd);
    fs.chownSync(file, uid, uid);
    tree.files++;
    tree.bytes += largeEach;
    if (isText) tree.textBytes += largeEach;
  }
  return tree;
}
