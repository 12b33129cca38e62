/**
 * Passwords and tokens. Admin passwords are hashed with argon2id (memory-hard, so a stolen
 * database is slow to crack on GPUs) and stored as self-describing PHC strings, so the cost can
 * be raised later without breaking old hashes. API and session tokens are 256 random bits, which
 * no one can guess, so a fast SHA-256 is the right way to store them.
 */
import crypto from "node:crypto";

/** OWASP Password Storage Cheat Sheet minimum for argon2id: 19 MiB, 2 passes, 1 lane. */
const DEFAULT_MEMORY_KIB = 19456;
const DEFAULT_PASSES = 2;
const PARALLELISM = 1;
const SALT_BYTES = 16;
const TAG_BYTES = 32;
const ARGON2_VERSION = 19; // 0x13, the only version node implements

// Bounds for parameters read back from a stored hash, so a corrupted or planted row cannot
// make a login allocate gigabytes or spin for minutes.
const MAX_MEMORY_KIB = 1024 * 1024;
const MAX_PASSES = 64;
const MAX_PARALLELISM = 16;

/** Hash a password with argon2id. `cost` is for tests and benchmarks only; production uses the defaults. */
export async function hashPassword(
  password: string,
  cost: { memoryKiB?: number; passes?: number } = {},
): Promise<string> {
  const memory = cost.memoryKiB ?? DEFAULT_MEMORY_KIB;
  const passes = cost.passes ?? DEFAULT_PASSES;
  if (!Number.isInteger(memory) || memory < 8 * PARALLELISM || memory > MAX_MEMORY_KIB) {
    throw new RangeError(`Cannot hash password: memoryKiB must be an integer from ${8 * PARALLELISM} to ${MAX_MEMORY_KIB}`);
  }
  if (!Number.isInteger(passes) || passes < 1 || passes > MAX_PASSES) {
    throw new RangeError(`Cannot hash password: passes must be an integer from 1 to ${MAX_PASSES}`);
  }
  const salt = crypto.randomBytes(SALT_BYTES);
  const tag = await argon2id(password, salt, { memory, passes, parallelism: PARALLELISM, tagLength: TAG_BYTES });
  return `$argon2id$v=${ARGON2_VERSION}$m=${memory},t=${passes},p=${PARALLELISM}$${b64(salt)}$${b64(tag)}`;
}

const PHC = /^\$argon2id\$v=19\$m=(\d{1,7}),t=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{11,86})\$([A-Za-z0-9+/]{22,86})$/;

/** True if `password` matches the stored argon2id PHC string; false (never a throw) for a wrong
 *  password or a malformed string. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  if (typeof password !== "string" || typeof encoded !== "string") return false;
  const m = PHC.exec(encoded);
  if (!m) return false;
  const memory = Number(m[1]);
  const passes = Number(m[2]);
  const parallelism = Number(m[3]);
  const salt = unb64(m[4]);
  const expected = unb64(m[5]);
  if (!salt || !expected || salt.length < 8 || expected.length < 16 || expected.length > 64) return false;
  if (parallelism < 1 || parallelism > MAX_PARALLELISM) return false;
  if (memory < 8 * parallelism || memory > MAX_MEMORY_KIB || passes < 1 || passes > MAX_PASSES) return false;
  let actual: Buffer;
  try {
    actual = await argon2id(password, salt, { memory, passes, parallelism, tagLength: expected.length });
  } catch {
    return false;
  }
  return crypto.timingSafeEqual(actual, expected);
}

// Letters and digits that cannot be mistaken for each other when read aloud or off a screen:
// no 0/O/o, 1/I/l/i.
const UNAMBIGUOUS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789";

/** A random 20-character password (about 115 bits) for one-time admin passwords. */
export function generatePassword(): string {
  let out = "";
  for (let i = 0; i < 20; i++) out += UNAMBIGUOUS[crypto.randomInt(UNAMBIGUOUS.length)];
  return out;
}

// Words that make up the passwords attackers try first. A password made only of these, digits
// and punctuation ("Password2024!", "slipway-admin-1") is refused. Length does the rest: NIST
// SP 800-63B advises against composition rules.
const OBVIOUS_WORDS = [
  "password", "passwort", "passwd", "pass", "slipway", "admin", "administrator", "root", "user",
  "login", "welcome", "letmein", "changeme", "default", "secret", "qwerty", "qwertz", "azerty",
  "asdf", "zxcv", "abc", "iloveyou", "monkey", "dragon", "master", "test", "temp", "guest",
];
const LEET: Record<string, string> = { "0": "o", "1": "il", "!": "i", "3": "e", "4": "a", "@": "a", "5": "s", $: "s", "7": "t" };

/** Why `password` is not acceptable as an admin password; empty when it is. */
export function passwordProblems(password: string, context: { username?: string } = {}): string[] {
  const problems: string[] = [];
  const length = [...password].length;
  if (length < 12) problems.push("must be at least 12 characters long");
  if (length > 1024) problems.push("must be at most 1024 characters long");
  const lower = password.toLowerCase();
  const username = context.username?.trim().toLowerCase();
  if (username && username.length >= 3 && lower.includes(username)) {
    problems.push("must not contain the username");
  }
  if (length > 0 && new Set(password).size === 1) problems.push("must not repeat a single character");
  if (length > 0 && length <= 1024 && isObvious(lower)) {
    problems.push("must not be made only of common words, digits and punctuation");
  }
  return problems;
}

/** Can `lower` be cut into obvious words (letters or their look-alike digits and symbols) and
 *  ASCII digits, spaces and punctuation? Dynamic programming rather than a regex, which would backtrack exponentially. */
function isObvious(lower: string): boolean {
  const chars = [...lower];
  const reachable = new Array<boolean>(chars.length + 1).fill(false);
  reachable[0] = true;
  for (let i = 0; i < chars.length; i++) {
    if (!reachable[i]) continue;
    if (/^[\x20-\x40\x5b-\x60\x7b-\x7e]$/.test(chars[i])) reachable[i + 1] = true; // ASCII digit, space, punctuation
    for (const word of OBVIOUS_WORDS) {
      if (i + word.length > chars.length) continue;
      let matches = true;
      for (let j = 0; j < word.length && matches; j++) {
        const c = chars[i + j];
        matches = c === word[j] || (LEET[c] ?? "").includes(word[j]);
      }
      if (matches) reachable[i + word.length] = true;
    }
  }
  return reachable[chars.length];
}

/** SHA-256 hex of a high-entropy token, for storing API and session tokens. */
export function hashToken(token: string): string {
  return crypto.createHash("sha256").update(token, "utf8").digest("hex");
}

/** A new 256-bit token, prefixed so a leaked one is recognisable: `${prefix}_${base64url}`. */
export function newToken(prefix: string): string {
  if (!/^[a-z][a-z0-9]{0,15}$/.test(prefix)) {
    throw new TypeError("Cannot make a token: the prefix must be 1-16 lowercase letters and digits");
  }
  return `${prefix}_${crypto.randomBytes(32).toString("base64url")}`;
}

function argon2id(
  password: string,
  salt: Buffer,
  p: { memory: number; passes: number; parallelism: number; tagLength: number },
): Promise<Buffer> {
  // NFC so the same password typed on different systems (composed vs decomposed accents)
  // hashes the same, as NIST SP 800-63B §5.1.1.2 recommends.
  const message = Buffer.from(password.normalize("NFC"), "utf8");
  return new Promise((resolve, reject) => {
    crypto.argon2("argon2id", { message, nonce: salt, ...p }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** PHC strings use standard base64 without padding. */
function b64(bytes: Buffer): string {
  return bytes.toString("base64").replace(/=+$/, "");
}

/** Decode unpadded base64, refusing any spelling that does not re-encode identically. */
function unb64(text: string): Buffer | null {
  const bytes = Buffer.from(text, "base64");
  return b64(bytes) === text ? bytes : null;
}
