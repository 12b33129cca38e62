/**
 * Writing key files so that a crash never leaves a half-written key behind: write a temporary
 * file beside the target, fsync it, rename it over the target, fsync the directory.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/** Atomically create or replace `file` with `data`, readable only as `mode` allows. */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode: number): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${crypto.randomBytes(6).toString("hex")}.tmp`);
  // "wx" refuses to follow a pre-planted file or symlink at the temporary name.
  const fd = fs.openSync(tmp, "wx", mode);
  try {
    try {
      fs.fchmodSync(fd, mode); // the umask may have narrowed or (on odd systems) not applied the mode
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(dir);
}

/** Make the directory entry changes (create, rename, unlink) in `dir` durable. */
export function fsyncDir(dir: string): void {
  if (process.platform === "win32") return; // directories cannot be opened for fsync there
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Create `dir` (and parents) and make it private to the owner (0700). */
export function makePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
}
