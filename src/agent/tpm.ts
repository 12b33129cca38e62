/**
 * The machine's TPM 2.0, for enrollment: the agent reads its endorsement key (creating it
 * from the TCG template, as every TPM yields the same EK from its endorsement seed), reads
 * the EK certificate the manufacturer stored in NV where there is one, and recovers a
 * credential the site made for that EK (ActivateCredential). Nothing here leaves the TPM but
 * public keys and the recovered credential.
 *
 * Transport: the kernel's resource manager (/dev/tpmrm0), or for tests a swtpm's TCP data
 * channel (`swtpm socket --server type=unixio,path=P --flags not-need-init,startup-clear`), which takes the
 * same command bytes.
 */
import { randomBytes } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import net from "node:net";
import {
  activateCredentialCommand, activationObjectTemplate, createPrimaryCommand, ekTemplate, EK_CERT_NV_INDEX_RSA, flushContextCommand,
  nvReadCommand, nvReadPublicCommand, parseActivateCredential, parseCreatePrimary, parseNvRead, parseNvReadPublic, parseOk, parseStartAuthSession,
  policySecretCommand, startPolicySessionCommand, TpmError, TPM_RH, type TpmPublic,
} from "../protocol/tpm2.ts";

export interface TpmTransport {
  send(command: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** The kernel's TPM resource manager: one command written, one response read. */
export async function openTpmDevice(path = "/dev/tpmrm0"): Promise<TpmTransport> {
  const fh = await open(path, "r+");
  return {
    async send(cmd) {
      await fh.write(cmd, 0, cmd.length, null);
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      return buf.subarray(0, bytesRead);
    },
    close: () => fh.close(),
  };
}

/** A swtpm's data channel, a Unix socket path or a TCP port on loopback (tests). */
export async function openTpmSocket(where: string | number): Promise<TpmTransport> {
  const sock = typeof where === "number" ? net.connect({ port: where, host: "127.0.0.1" }) : net.connect({ path: where });
  await new Promise<void>((resolve, reject) => sock.once("connect", resolve).once("error", reject));
  let pending = Buffer.alloc(0);
  let waiter: { resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  let failed: Error | null = null;
  const deliver = () => {
    if (!waiter || pending.length < 10) return;
    const size = pending.readUInt32BE(2);
    if (pending.length < size) return;
    const out = pending.subarray(0, size);
    pending = pending.subarray(size);
    const w = waiter;
    waiter = null;
    w.resolve(out);
  };
  sock.on("data", (d: Buffer) => {
    pending = Buffer.concat([pending, d]);
    deliver();
  });
  sock.on("error", (e) => (failed = e));
  sock.on("close", () => {
    failed ??= new Error("the TPM socket closed");
    waiter?.reject(failed);
    waiter = null;
  });
  return {
    send(cmd) {
      if (failed) return Promise.reject(failed);
      return new Promise((resolve, reject) => {
        waiter = { resolve, reject };
        sock.write(cmd);
      });
    },
    async close() {
      sock.destroy();
    },
  };
}

/** What the agent tells the site about its TPM. */
export type TpmIdentity = {
  /** The EK's TPMT_PUBLIC, base64. */
  ekPublic: string;
  /** The EK certificate from NV (DER, base64), when the manufacturer stored one. */
  ekCertificate?: string;
  /** The activation object's TPMT_PUBLIC, base64. */
  objectPublic: string;
};

/**
 * A session with the TPM for one enrollment: creates the EK and a keyed-hash object in the
 * null hierarchy (both transient, flushed on close) and recovers credentials made for them.
 */
export class TpmSession {
  readonly #t: TpmTransport;
  readonly #ek: { handle: number; public: TpmPublic };
  readonly #object: { handle: number; public: TpmPublic };
  readonly ekCertificate: Uint8Array | undefined;

  private constructor(t: TpmTransport, ek: { handle: number; public: TpmPublic }, object: { handle: number; public: TpmPublic }, ekCertificate: Uint8Array | undefined) {
    this.#t = t;
    this.#ek = ek;
    this.#object = object;
    this.ekCertificate = ekCertificate;
  }

  static async open(t: TpmTransport): Promise<TpmSession> {
    const ek = parseCreatePrimary(await t.send(createPrimaryCommand(TPM_RH.ENDORSEMENT, ekTemplate())));
    let object;
    try {
      object = parseCreatePrimary(await t.send(createPrimaryCommand(TPM_RH.NULL, activationObjectTemplate())));
    } catch (err) {
      await t.send(flushContextCommand(ek.handle)).catch(() => undefined);
      throw err;
    }
    return new TpmSession(t, ek, object, await readEkCertificate(t));
  }

  identity(): TpmIdentity {
    return {
      ekPublic: Buffer.from(this.#ek.public.bytes).toString("base64"),
      objectPublic: Buffer.from(this.#object.public.bytes).toString("base64"),
      ...(this.ekCertificate ? { ekCertificate: Buffer.from(this.ekCertificate).toString("base64") } : {}),
    };
  }

  /** ActivateCredential: the credential the site protected for this TPM's EK and object. */
  async activate(credentialBlob: Uint8Array, secret: Uint8Array): Promise<Uint8Array> {
    const s = parseStartAuthSession(await this.#t.send(startPolicySessionCommand(randomBytes(32))));
    try {
      parseOk("PolicySecret", await this.#t.send(policySecretCommand(TPM_RH.ENDORSEMENT, s.session)));
      return parseActivateCredential(await this.#t.send(activateCredentialCommand(this.#object.handle, this.#ek.handle, s.session, credentialBlob, secret)));
    } finally {
      // A session used without continueSession is flushed by the TPM; one that failed earlier is not.
      await this.#t.send(flushContextCommand(s.session)).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    for (const h of [this.#object.handle, this.#ek.handle]) await this.#t.send(flushContextCommand(h)).catch(() => undefined);
    await this.#t.close();
  }
}

/** The RSA EK certificate in NV, read in chunks; undefined when the index is not defined. */
async function readEkCertificate(t: TpmTransport): Promise<Uint8Array | undefined> {
  let size: number;
  try {
    size = parseNvReadPublic(await t.send(nvReadPublicCommand(EK_CERT_NV_INDEX_RSA))).dataSize;
  } catch (err) {
    if (err instanceof TpmError) return undefined;
    throw err;
  }
  const parts: Uint8Array[] = [];
  for (let off = 0; off < size; ) {
    const n = Math.min(512, size - off);
    const part = parseNvRead(await t.send(nvReadCommand(EK_CERT_NV_INDEX_RSA, n, off)));
    if (part.length === 0) break;
    parts.push(part);
    off += part.length;
  }
  return Buffer.concat(parts);
}

/**
 * The machine's TPM, if it has one the kernel knows: /dev/tpmrm0, or SLIPWAY_TPM_DEVICE (a
 * TPM character device, or a swtpm's Unix socket for running the agent off a real machine).
 */
export async function openMachineTpm(): Promise<TpmSession | null> {
  const path = process.env.SLIPWAY_TPM_DEVICE || "/dev/tpmrm0";
  if (!existsSync(path)) return null;
  return TpmSession.open(statSync(path).isSocket() ? await openTpmSocket(path) : await openTpmDevice(path));
}

