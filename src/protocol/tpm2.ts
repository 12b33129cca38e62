/**
 * The few TPM 2.0 structures and commands Slipway needs to bind a machine to its TPM
 * (TCG TPM 2.0 Library, Part 2 "Structures" and Part 3 "Commands"): the public area of an
 * object (to name it and to read an endorsement key), and the commands the agent sends to
 * prove it holds its endorsement key — CreatePrimary, StartAuthSession, PolicySecret,
 * ActivateCredential, FlushContext, NV_ReadPublic and NV_Read. All big-endian, all pure.
 *
 * Decoding is bounds-checked like every codec here (DecodeError on bad input); a public area
 * that comes from the network is hostile until `decodePublic` has read every byte of it.
 */
import { createHash } from "node:crypto";
import { Reader, Writer } from "./reader.ts";

export const TPM_ST_NO_SESSIONS = 0x8001;
export const TPM_ST_SESSIONS = 0x8002;

export const TPM_ALG = { RSA: 0x0001, SHA256: 0x000b, HMAC: 0x0005, AES: 0x0006, KEYEDHASH: 0x0008, NULL: 0x0010, ECC: 0x0023, CFB: 0x0043 } as const;

export const TPM_RH = { OWNER: 0x40000001, NULL: 0x40000007, RS_PW: 0x40000009, ENDORSEMENT: 0x4000000b } as const;

export const TPM_CC = {
  NV_Read: 0x0000014e, CreatePrimary: 0x00000131, ActivateCredential: 0x00000147, PolicySecret: 0x00000151,
  StartAuthSession: 0x00000176, FlushContext: 0x00000165, NV_ReadPublic: 0x00000169, ReadPublic: 0x00000173,
} as const;

/** Object attributes (TPMA_OBJECT). */
export const TPMA = {
  fixedTPM: 1 << 1, stClear: 1 << 2, fixedParent: 1 << 4, sensitiveDataOrigin: 1 << 5, userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7, noDA: 1 << 10, encryptedDuplication: 1 << 11, restricted: 1 << 16, decrypt: 1 << 17, sign: 1 << 18,
} as const;

/** NV index of the RSA 2048 EK certificate (TCG EK Credential Profile, low range). */
export const EK_CERT_NV_INDEX_RSA = 0x01c00002;

/**
 * PolicySecret(TPM_RH_ENDORSEMENT): the authPolicy of the TCG default EK templates, so only
 * the endorsement hierarchy's owner can use the key (EK Credential Profile 2.0, B.3.3).
 */
export const EK_POLICY = Buffer.from("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa", "hex");

/** A decoded TPMT_PUBLIC: the fields Slipway reads, plus the exact bytes it was decoded from. */
export type TpmPublic = {
  type: number;
  nameAlg: number;
  attributes: number;
  authPolicy: Uint8Array;
  /** RSA: symmetric algorithm (AES or NULL), its key bits and mode; scheme; key bits; exponent (0 = 65537); modulus. */
  rsa?: { symmetric: { alg: number; keyBits: number; mode: number }; scheme: number; keyBits: number; exponent: number; modulus: Uint8Array };
  /** KEYEDHASH: scheme and its hash. */
  keyedHash?: { scheme: number; hashAlg: number; unique: Uint8Array };
  /** The TPMT_PUBLIC bytes (what the object's name hashes). */
  bytes: Uint8Array;
};

function tpm2b(w: Writer, data: Uint8Array): Writer {
  return w.u16(data.length).bytes(data);
}

function readTpm2b(r: Reader, what: string, max = 4096): Uint8Array {
  const n = r.u16();
  if (n > max) r.fail(`${what} is ${n} bytes, more than ${max}`, r.offset - 2);
  return r.bytes(n);
}

/** Encodes a TPMT_PUBLIC for the two kinds Slipway makes: an RSA key or a keyed-hash object. */
export function encodePublic(p: Omit<TpmPublic, "bytes">): Uint8Array {
  const w = new Writer(512).u16(p.type).u16(p.nameAlg).u32(p.attributes);
  tpm2b(w, p.authPolicy);
  if (p.type === TPM_ALG.RSA && p.rsa) {
    const s = p.rsa.symmetric;
    w.u16(s.alg);
    if (s.alg !== TPM_ALG.NULL) w.u16(s.keyBits).u16(s.mode);
    w.u16(p.rsa.scheme).u16(p.rsa.keyBits).u32(p.rsa.exponent);
    tpm2b(w, p.rsa.modulus);
  } else if (p.type === TPM_ALG.KEYEDHASH && p.keyedHash) {
    w.u16(p.keyedHash.scheme);
    if (p.keyedHash.scheme !== TPM_ALG.NULL) w.u16(p.keyedHash.hashAlg);
    tpm2b(w, p.keyedHash.unique);
  } else {
    throw new RangeError("Cannot encode a TPM public area: only RSA and keyed-hash objects are supported");
  }
  return w.finish();
}

/** Decodes a TPMT_PUBLIC of an RSA or keyed-hash object; anything else, or a trailing byte, is refused. */
export function decodePublic(bytes: Uint8Array): TpmPublic {
  const r = new Reader(bytes);
  const type = r.u16();
  const nameAlg = r.u16();
  if (nameAlg !== TPM_ALG.SHA256) r.fail(`name algorithm 0x${nameAlg.toString(16)} is not SHA-256`, 2);
  const attributes = r.u32();
  const authPolicy = readTpm2b(r, "authPolicy", 64);
  let out: TpmPublic;
  if (type === TPM_ALG.RSA) {
    const alg = r.u16();
    let keyBits = 0, mode: number = TPM_ALG.NULL;
    if (alg === TPM_ALG.AES) {
      keyBits = r.u16();
      mode = r.u16();
    } else if (alg !== TPM_ALG.NULL) r.fail(`symmetric algorithm 0x${alg.toString(16)} is not AES`, r.offset - 2);
    const scheme = r.u16();
    if (scheme !== TPM_ALG.NULL) r.fail("an RSA scheme other than NULL is not supported", r.offset - 2);
    const rsaBits = r.u16();
    const exponent = r.u32();
    const modulus = readTpm2b(r, "RSA modulus", 512);
    if (modulus.length * 8 !== rsaBits) r.fail(`RSA modulus of ${modulus.length} bytes does not match ${rsaBits} key bits`);
    out = { type, nameAlg, attributes, authPolicy, rsa: { symmetric: { alg, keyBits, mode }, scheme, keyBits: rsaBits, exponent, modulus }, bytes };
  } else if (type === TPM_ALG.KEYEDHASH) {
    const scheme = r.u16();
    let hashAlg = TPM_ALG.NULL as number;
    if (scheme === TPM_ALG.HMAC) hashAlg = r.u16();
    else if (scheme !== TPM_ALG.NULL) r.fail(`keyed-hash scheme 0x${scheme.toString(16)} is not supported`, r.offset - 2);
    const unique = readTpm2b(r, "unique", 64);
    out = { type, nameAlg, attributes, authPolicy, keyedHash: { scheme, hashAlg, unique }, bytes };
  } else {
    return r.fail(`object type 0x${type.toString(16)} is not RSA or keyed-hash`, 0);
  }
  if (r.remaining !== 0) r.fail(`${r.remaining} bytes after the public area`);
  return out;
}

/** An object's name: its name algorithm, then the hash of its public area (Part 1, 16). */
export function objectName(p: TpmPublic): Uint8Array {
  return Buffer.concat([Buffer.from([p.nameAlg >> 8, p.nameAlg & 0xff]), createHash("sha256").update(p.bytes).digest()]);
}

/** The TCG default RSA 2048 EK template ("L-1"): with an all-zero unique, as a TPM creates it. */
export function ekTemplate(): Omit<TpmPublic, "bytes"> {
  return {
    type: TPM_ALG.RSA, nameAlg: TPM_ALG.SHA256,
    attributes: TPMA.fixedTPM | TPMA.fixedParent | TPMA.sensitiveDataOrigin | TPMA.adminWithPolicy | TPMA.restricted | TPMA.decrypt,
    authPolicy: EK_POLICY,
    rsa: { symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB }, scheme: TPM_ALG.NULL, keyBits: 2048, exponent: 0, modulus: new Uint8Array(256) },
  };
}

/**
 * Whether a public area is an endorsement key as the TCG template makes one: a restricted
 * RSA 2048 decryption key that never leaves its TPM, usable only through the endorsement
 * hierarchy's policy, with AES-128-CFB as its symmetric algorithm. The reason if not.
 */
export function ekProblem(p: TpmPublic): string | null {
  const want = ekTemplate();
  if (p.type !== TPM_ALG.RSA || !p.rsa) return "not an RSA key";
  if (p.rsa.keyBits !== 2048) return `an RSA key of ${p.rsa.keyBits} bits, not 2048`;
  if (p.attributes !== want.attributes) return `attributes 0x${p.attributes.toString(16)} are not those of an endorsement key (0x${want.attributes.toString(16)})`;
  if (!Buffer.from(p.authPolicy).equals(EK_POLICY)) return "its policy is not the endorsement hierarchy's";
  const s = p.rsa.symmetric;
  if (s.alg !== TPM_ALG.AES || s.keyBits !== 128 || s.mode !== TPM_ALG.CFB) return "its symmetric algorithm is not AES-128-CFB";
  if (p.rsa.exponent !== 0 && p.rsa.exponent !== 65537) return `RSA exponent ${p.rsa.exponent} is not 65537`;
  return null;
}

/** The keyed-hash object the agent makes in the null hierarchy for a credential to be bound to. */
export function activationObjectTemplate(): Omit<TpmPublic, "bytes"> {
  return {
    type: TPM_ALG.KEYEDHASH, nameAlg: TPM_ALG.SHA256,
    attributes: TPMA.fixedTPM | TPMA.fixedParent | TPMA.sensitiveDataOrigin | TPMA.userWithAuth | TPMA.noDA | TPMA.sign,
    authPolicy: new Uint8Array(0),
    keyedHash: { scheme: TPM_ALG.HMAC, hashAlg: TPM_ALG.SHA256, unique: new Uint8Array(0) },
  };
}

// ---- commands ----

export type Auth = { session: number; nonce?: Uint8Array; attributes?: number; hmac?: Uint8Array };
/** The empty password session, for the endorsement and null hierarchies and objects with no auth value. */
export const PASSWORD_AUTH: Auth = { session: TPM_RH.RS_PW };

function command(cc: number, handles: number[], auths: Auth[], params: Uint8Array): Uint8Array {
  const w = new Writer(64 + params.length).u16(auths.length ? TPM_ST_SESSIONS : TPM_ST_NO_SESSIONS).u32(0).u32(cc);
  for (const h of handles) w.u32(h);
  if (auths.length) {
    const a = new Writer(64);
    for (const s of auths) {
      a.u32(s.session);
      tpm2b(a, s.nonce ?? new Uint8Array(0));
      a.u8(s.attributes ?? 0);
      tpm2b(a, s.hmac ?? new Uint8Array(0));
    }
    const area = a.finish();
    w.u32(area.length).bytes(area);
  }
  w.bytes(params);
  const out = w.finish();
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(2, out.length);
  return out;
}

/** A TPM answered with an error code. */
export class TpmError extends Error {
  readonly rc: number;
  constructor(what: string, rc: number) {
    super(`${what}: the TPM answered 0x${rc.toString(16).padStart(8, "0")}`);
    this.name = "TpmError";
    this.rc = rc;
  }
}

/** Reads a response's header; throws TpmError on a non-zero response code. Returns a reader at the handles. */
function response(what: string, bytes: Uint8Array): { r: Reader; sessions: boolean } {
  const r = new Reader(bytes);
  const tag = r.u16();
  const size = r.u32();
  if (size !== bytes.length) r.fail(`response says ${size} bytes, got ${bytes.length}`, 2);
  const rc = r.u32();
  if (rc !== 0) throw new TpmError(what, rc);
  if (tag !== TPM_ST_SESSIONS && tag !== TPM_ST_NO_SESSIONS) r.fail(`response tag 0x${tag.toString(16)}`, 0);
  return { r, sessions: tag === TPM_ST_SESSIONS };
}

/** Skips to the response parameters: past parameterSize when sessions are present. */
function params(x: { r: Reader; sessions: boolean }): Reader {
  if (x.sessions) x.r.u32();
  return x.r;
}

export function createPrimaryCommand(hierarchy: number, template: Omit<TpmPublic, "bytes">): Uint8Array {
  const pub = encodePublic(template);
  const w = new Writer(600);
  w.u16(4).u16(0).u16(0); // TPM2B_SENSITIVE_CREATE: empty userAuth, empty data
  tpm2b(w, pub);
  w.u16(0); // outsideInfo
  w.u32(0); // creationPCR: no selection
  return command(TPM_CC.CreatePrimary, [hierarchy], [PASSWORD_AUTH], w.finish());
}

export function parseCreatePrimary(bytes: Uint8Array): { handle: number; public: TpmPublic } {
  const x = response("CreatePrimary", bytes);
  const handle = x.r.u32();
  const r = params(x);
  return { handle, public: decodePublic(readTpm2b(r, "outPublic")) };
}

/** StartAuthSession for an unsalted, unbound policy session with SHA-256 and no parameter encryption. */
export function startPolicySessionCommand(nonceCaller: Uint8Array): Uint8Array {
  const w = new Writer(64);
  tpm2b(w, nonceCaller);
  w.u16(0); // encryptedSalt
  w.u8(0x01); // TPM_SE_POLICY
  w.u16(TPM_ALG.NULL); // symmetric
  w.u16(TPM_ALG.SHA256); // authHash
  return command(TPM_CC.StartAuthSession, [TPM_RH.NULL, TPM_RH.NULL], [], w.finish());
}

export function parseStartAuthSession(bytes: Uint8Array): { session: number; nonceTpm: Uint8Array } {
  const x = response("StartAuthSession", bytes);
  const session = x.r.u32();
  return { session, nonceTpm: readTpm2b(params(x), "nonceTPM") };
}

/** PolicySecret(authHandle) on `session`, authorized by `authHandle`'s (empty) password. */
export function policySecretCommand(authHandle: number, session: number): Uint8Array {
  const w = new Writer(32);
  w.u16(0); // nonceTPM
  w.u16(0); // cpHashA
  w.u16(0); // policyRef
  w.u32(0); // expiration
  return command(TPM_CC.PolicySecret, [authHandle, session], [PASSWORD_AUTH], w.finish());
}

export function parseOk(what: string, bytes: Uint8Array): void {
  response(what, bytes);
}

/** ActivateCredential: the object the credential names (password auth), the EK (a policy session). */
export function activateCredentialCommand(activateHandle: number, keyHandle: number, keySession: number, credentialBlob: Uint8Array, secret: Uint8Array): Uint8Array {
  const w = new Writer(64 + credentialBlob.length + secret.length);
  tpm2b(w, credentialBlob);
  tpm2b(w, secret);
  return command(TPM_CC.ActivateCredential, [activateHandle, keyHandle], [PASSWORD_AUTH, { session: keySession }], w.finish());
}

export function parseActivateCredential(bytes: Uint8Array): Uint8Array {
  const x = response("ActivateCredential", bytes);
  return readTpm2b(params(x), "certInfo");
}

export function flushContextCommand(handle: number): Uint8Array {
  return command(TPM_CC.FlushContext, [], [], new Writer(4).u32(handle).finish());
}

export function nvReadPublicCommand(index: number): Uint8Array {
  return command(TPM_CC.NV_ReadPublic, [index], [], new Uint8Array(0));
}

/** The size of an NV index's data (from NV_ReadPublic). */
export function parseNvReadPublic(bytes: Uint8Array): { dataSize: number } {
  const x = response("NV_ReadPublic", bytes);
  const nvPublic = new Reader(readTpm2b(x.r, "nvPublic", 1024));
  nvPublic.u32(); // index
  nvPublic.u16(); // nameAlg
  nvPublic.u32(); // attributes
  readTpm2b(nvPublic, "authPolicy", 64);
  return { dataSize: nvPublic.u16() };
}

/** NV_Read of `size` bytes at `offset`, authorized by the index itself (empty password). */
export function nvReadCommand(index: number, size: number, offset: number): Uint8Array {
  return command(TPM_CC.NV_Read, [index, index], [PASSWORD_AUTH], new Writer(8).u16(size).u16(offset).finish());
}

export function parseNvRead(bytes: Uint8Array): Uint8Array {
  return readTpm2b(params(response("NV_Read", bytes)), "NV data", 4096);
}

