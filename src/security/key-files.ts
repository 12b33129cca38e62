/**
 * How key files live on disk: written atomically (temporary file beside the target, fsync,
 * rename, fsync the directory) so a crash never leaves a half-written key, in directories only
 * the owner can enter, and refused when group or others can read them — as ssh does, because
 * such a key may already have been copied.
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

/** Throw if group or others have any access to `file` (a file or directory). `what` names the
 *  operation for the message, e.g. "open keyring". No-op on Windows, where modes are not ACLs. */
export function assertPrivate(file: string, what: string, st: fs.Stats = fs.statSync(file)): void {
  if (process.platform === "win32") return;
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, "0");
    const fix = st.isDirectory() ? "chmod 700" : "chmod 600";
    throw new Error(`Cannot ${what}: ${file} has mode ${mode}; group and others must have no access (${fix})`);
  }
}
