/**
 * Envelope encryption of secrets at rest (trust model §4). Each secret gets its own random data
 * key; the data key encrypts the secret with AES-256-GCM bound to a caller-chosen AAD naming the
 * row it belongs to, and a master key wraps the data key. Master keys live one per file in a
 * private directory, so rotation is "add a key, rewrap every row's 60-byte wrapped key, retire
 * the old key" — ciphertexts are never touched.
 *
 * Layout of the keyring directory (0700):
 *   master-<kid>.key   32 raw key bytes, 0600; kid = 16 random hex digits
 *   current            the kid that seals new secrets, followed by a newline
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { assertPrivate, fsyncDir, makePrivateDir, writeFileAtomic } from "./key-files.ts";

/** A sealed secret: JSON-serializable, every binary field base64. */
export type Sealed = {
  v: 1;
  /** Id of the master key that wrapped the data key. */
  kid: string;
  /** nonce (12) ‖ encrypted data key (32) ‖ GCM tag (16), wrapped under master key `kid`. */
  wrappedKey: string;
  nonce: string;
  ciphertext: string;
  tag: string;
};

/** Why a sealed secret could not be opened. The message never contains key or secret bytes. */
export class EnvelopeError extends Error {
  readonly reason: "malformed" | "unknown-key" | "tampered";

  constructor(reason: "malformed" | "unknown-key" | "tampered", message: string) {
    super(message);
    this.name = "EnvelopeError";
    this.reason = reason;
  }
}

const KEY_BYTES = 32; // AES-256
const NONCE_BYTES = 12; // the GCM nonce size NIST SP 800-38D recommends
const TAG_BYTES = 16;
const WRAPPED_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES;
const KID = /^[0-9a-f]{16}$/;
const KEY_FILE = /^master-([0-9a-f]{16})\.key$/;
const CURRENT_FILE = "current";

/** The master keys of one keyring directory. Open with `Keyring.open`, make with `Keyring.create`. */
export class Keyring {
  readonly dir: string;
  #keys: Map<string, crypto.KeyObject>;
  #current: string;

  private constructor(dir: string, keys: Map<string, crypto.KeyObject>, current: string) {
    this.dir = dir;
    this.#keys = keys;
    this.#current = current;
  }

  /** Create a keyring with its first master key; refuses if `dir` already holds one. */
  static create(dir: string): Keyring {
    makePrivateDir(dir);
    const existing = fs.readdirSync(dir).filter((f) => f === CURRENT_FILE || KEY_FILE.test(f));
    if (existing.length > 0) {
      throw new Error(`Cannot create a keyring in ${dir}: it already holds ${existing.join(", ")}`);
    }
    const kid = writeNewMasterKey(dir);
    writeFileAtomic(path.join(dir, CURRENT_FILE), `${kid}\n`, 0o600);
    return Keyring.open(dir);
  }

  /** Load every master key in `dir` and the `current` pointer. Refuses key files or a directory
   *  that others can read, as ssh does, because that means the keys may already be copied. */
  static open(dir: string): Keyring {
    const { keys, current } = readKeyring(dir);
    return new Keyring(dir, keys, current);
  }

  /** The id of the master key that seals and rewraps. */
  get currentKid(): string {
    return this.#current;
  }

  /** Ids of the master keys this instance holds, current included (for deciding what to retire). */
  kids(): string[] {
    return [...this.#keys.keys()].sort();
  }

  /** Encrypt `plaintext` under a fresh data key, bound to `aad` (e.g. `variable:site::DomainPassword`). */
  seal(plaintext: string, aad: string): Sealed {
    if (typeof plaintext !== "string" || typeof aad !== "string") {
      throw new TypeError("Cannot seal: plaintext and aad must be strings");
    }
    this.#followRotation();
    const dataKey = crypto.randomBytes(KEY_BYTES);
    try {
      const nonce = crypto.randomBytes(NONCE_BYTES);
      const cipher = crypto.createCipheriv("aes-256-gcm", dataKey, nonce, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(aad, "utf8"));
      const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
      return {
        v: 1,
        kid: this.#current,
        wrappedKey: this.#wrap(dataKey).toString("base64"),
        nonce: nonce.toString("base64"),
        ciphertext: ciphertext.toString("base64"),
        tag: cipher.getAuthTag().toString("base64"),
      };
    } finally {
      dataKey.fill(0);
    }
  }

  /** Decrypt a sealed secret; throws EnvelopeError if it was altered, `aad` differs, or its
   *  master key is gone. */
  open(sealed: Sealed, aad: string): string {
    if (typeof aad !== "string") throw new TypeError("Cannot open sealed secret: aad must be a string");
    const s = parseSealed(sealed);
    const dataKey = this.#unwrap(s.kid, s.wrappedKey);
    try {
      const decipher = crypto.createDecipheriv("aes-256-gcm", dataKey, s.nonce, { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(aad, "utf8"));
      decipher.setAuthTag(s.tag);
      const plaintext = Buffer.concat([decipher.update(s.ciphertext), decipher.final()]);
      return plaintext.toString("utf8");
    } catch {
      throw new EnvelopeError("tampered", "Cannot open sealed secret: it was altered or belongs to another record");
    } finally {
      dataKey.fill(0);
    }
  }

  /** Re-wrap the data key under the current master key; the ciphertext is copied unchanged. */
  rewrap(sealed: Sealed): Sealed {
    const s = parseSealed(sealed);
    this.#followRotation();
    const dataKey = this.#unwrap(s.kid, s.wrappedKey);
    try {
      return {
        v: 1,
        kid: this.#current,
        wrappedKey: this.#wrap(dataKey).toString("base64"),
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        tag: sealed.tag,
      };
    } finally {
      dataKey.fill(0);
    }
  }

  /** Add a new master key and make it current; returns its kid. Old keys stay until retired. */
  rotate(): string {
    const kid = writeNewMasterKey(this.dir);
    writeFileAtomic(path.join(this.dir, CURRENT_FILE), `${kid}\n`, 0o600);
    this.#keys.set(kid, loadKeyFile(path.join(this.dir, `master-${kid}.key`)));
    this.#current = kid;
    return kid;
  }

  /** Delete an old master key. Call only after every row sealed under it was rewrapped:
   *  anything still wrapped under `kid` becomes unreadable for good. */
  retire(kid: string): void {
    if (!KID.test(kid)) throw new TypeError(`Cannot retire master key "${kid}": not a key id`);
    const onDisk = readCurrent(this.dir);
    if (kid === this.#current || kid === onDisk) {
      throw new Error(`Cannot retire master key ${kid}: it is the current key`);
    }
    fs.rmSync(path.join(this.dir, `master-${kid}.key`), { force: true });
    fsyncDir(this.dir);
    this.#keys.delete(kid);
  }

  /** If another process rotated, wrap under its new key rather than ours, which it may retire
   *  once its rewrap pass is done. One small file read per seal; secrets are written rarely. */
  #followRotation(): void {
    if (readCurrent(this.dir) !== this.#current) this.#reload();
  }

  #reload(): void {
    const fresh = readKeyring(this.dir);
    this.#keys = fresh.keys;
    this.#current = fresh.current;
  }

  #wrap(dataKey: Buffer): Buffer {
    const nonce = crypto.randomBytes(NONCE_BYTES);
    const cipher = crypto.createCipheriv("aes-256-gcm", this.#keys.get(this.#current)!, nonce, {
      authTagLength: TAG_BYTES,
    });
    cipher.setAAD(Buffer.from(this.#current, "utf8"));
    return Buffer.concat([nonce, cipher.update(dataKey), cipher.final(), cipher.getAuthTag()]);
  }

  #unwrap(kid: string, wrapped: Buffer): Buffer {
    let master = this.#keys.get(kid);
    if (!master) {
      // Another process may have rotated since we loaded; look once more before giving up.
      this.#reload();
      master = this.#keys.get(kid);
    }
    if (!master) {
      throw new EnvelopeError("unknown-key", `Cannot open sealed secret: master key ${kid} is not in the keyring`);
    }
    try {
      const decipher = crypto.createDecipheriv("aes-256-gcm", master, wrapped.subarray(0, NONCE_BYTES), {
        authTagLength: TAG_BYTES,
      });
      decipher.setAAD(Buffer.from(kid, "utf8"));
      decipher.setAuthTag(wrapped.subarray(NONCE_BYTES + KEY_BYTES));
      return Buffer.concat([decipher.update(wrapped.subarray(NONCE_BYTES, NONCE_BYTES + KEY_BYTES)), decipher.final()]);
    } catch {
      throw new EnvelopeError("tampered", "Cannot open sealed secret: its wrapped data key was altered");
    }
  }
}

type ParsedSealed = { kid: string; wrappedKey: Buffer; nonce: Buffer; ciphertext: Buffer; tag: Buffer };

function parseSealed(sealed: unknown): ParsedSealed {
  const malformed = (why: string) => new EnvelopeError("malformed", `Cannot open sealed secret: ${why}`);
  if (typeof sealed !== "object" || sealed === null) throw malformed("not an object");
  const s = sealed as Record<string, unknown>;
  if (s.v !== 1) throw malformed("unknown version");
  if (typeof s.kid !== "string" || !KID.test(s.kid)) throw malformed("bad key id");
  const wrappedKey = strictBase64(s.wrappedKey, WRAPPED_BYTES);
  const nonce = strictBase64(s.nonce, NONCE_BYTES);
  const ciphertext = strictBase64(s.ciphertext);
  const tag = strictBase64(s.tag, TAG_BYTES);
  if (!wrappedKey || !nonce || !ciphertext || !tag) throw malformed("a field is not base64 of the right length");
  return { kid: s.kid, wrappedKey, nonce, ciphertext, tag };
}

/** Decode base64 only in its one canonical spelling, so no field can change and still decode alike. */
function strictBase64(value: unknown, length?: number): Buffer | null {
  if (typeof value !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return null;
  const bytes = Buffer.from(value, "base64");
  if (bytes.toString("base64") !== value) return null;
  if (length !== undefined && bytes.length !== length) return null;
  return bytes;
}

function writeNewMasterKey(dir: string): string {
  let kid: string;
  do kid = crypto.randomBytes(8).toString("hex");
  while (fs.existsSync(path.join(dir, `master-${kid}.key`)));
  const key = crypto.randomBytes(KEY_BYTES);
  try {
    writeFileAtomic(path.join(dir, `master-${kid}.key`), key, 0o600);
  } finally {
    key.fill(0);
  }
  return kid;
}

function readKeyring(dir: string): { keys: Map<string, crypto.KeyObject>; current: string } {
  assertPrivate(dir, "open keyring");
  const keys = new Map<string, crypto.KeyObject>();
  for (const name of fs.readdirSync(dir)) {
    const m = KEY_FILE.exec(name);
    if (m) keys.set(m[1], loadKeyFile(path.join(dir, name)));
  }
  const current = readCurrent(dir);
  if (!keys.has(current)) {
    throw new Error(`Cannot open keyring ${dir}: the current master key ${current} is missing`);
  }
  return { keys, current };
}

function readCurrent(dir: string): string {
  const file = path.join(dir, CURRENT_FILE);
  const kid = fs.readFileSync(file, "utf8").trim();
  if (!KID.test(kid)) throw new Error(`Cannot open keyring ${dir}: ${CURRENT_FILE} does not name a key id`);
  return kid;
}

function loadKeyFile(file: string): crypto.KeyObject {
  const fd = fs.openSync(file, "r");
  try {
    assertPrivate(file, "open keyring", fs.fstatSync(fd));
    const bytes = fs.readFileSync(fd);
    if (bytes.length !== KEY_BYTES) {
      throw new Error(`Cannot open keyring: ${file} is ${bytes.length} bytes, not ${KEY_BYTES}`);
    }
    const key = crypto.createSecretKey(bytes);
    bytes.fill(0);
    return key;
  } finally {
    fs.closeSync(fd);
  }
}
