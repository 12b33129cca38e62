/**
 * A machine answering the site's TPM challenge as the agent does: asks
 * POST /mp/v1/enroll/tpm-challenge with its boot token and what it claims about its TPM, recovers
 * the credential with the TPM, and returns the `tpm` part of its enrollment request (with the
 * proof when the site made a challenge; a made-up credential when its TPM cannot recover it).
 */
import { randomBytes } from "node:crypto";
import assert from "node:assert/strict";
import { request } from "./device.ts";
import type { TestSite } from "./site.ts";
import type { TpmSession } from "../../src/agent/tpm.ts";

export async function tpmPart(t: TestSite, token: string, tpm: TpmSession, claim: Record<string, unknown> = tpm.identity()): Promise<Record<string, unknown>> {
  const c = await request(t.mp.url, { method: "POST", path: "/mp/v1/enroll/tpm-challenge", ca: t.ca, body: { token, tpm: claim } });
  assert.equal(c.status, 200, c.text);
  if (!c.body.challenge) return claim;
  let credential: string;
  try {
    credential = Buffer.from(await tpm.activate(Buffer.from(c.body.challenge.credentialBlob, "base64"), Buffer.from(c.body.challenge.secret, "base64"))).toString("base64");
  } catch {
    credential = randomBytes(32).toString("base64"); // the TPM could not recover it: guess
  }
  return { ...claim, proof: { nonce: c.body.challenge.nonce, expiresAt: c.body.challenge.expiresAt, credential } };
}
