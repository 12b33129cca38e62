/**
 * Signing and verifying a device's policy. The agent keeps only the site's public signing
 * key (pinned in its boot image) and refuses a policy that is not signed by it, is for
 * another device, or has expired — whatever server it came from.
 */
import type { KeyObject } from "node:crypto";
import { POLICY_KIND, type Policy } from "../domain/policy.ts";
import { signValue, verifyValue } from "./signing.ts";

export type SignedPolicy = { policy: Policy; signature: string };

export class PolicyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PolicyError";
  }
}

export function signPolicy(policy: Policy, signingKey: KeyObject): SignedPolicy {
  return { policy, signature: signValue(signingKey, policy) };
}

/** Returns the policy when it is genuine, meant for `deviceId` and current; throws PolicyError otherwise. */
export function verifyPolicy(signed: unknown, pinnedKey: KeyObject, expect: { deviceId: string; now: Date; skewSeconds?: number }): Policy {
  const s = signed as Partial<SignedPolicy> | null;
  if (!s || typeof s !== "object" || typeof s.signature !== "string" || !s.policy || typeof s.policy !== "object") {
    throw new PolicyError("Cannot use the policy: it is not a signed policy document");
  }
  let genuine = false;
  try {
    genuine = verifyValue(pinnedKey, s.policy, s.signature);
  } catch {
    genuine = false;
  }
  if (!genuine) throw new PolicyError("Cannot use the policy: its signature is not the site's");
  const p = s.policy;
  if (p.kind !== POLICY_KIND) throw new PolicyError(`Cannot use the policy: it is a "${String(p.kind)}", not a policy`);
  if (p.deviceId !== expect.deviceId) throw new PolicyError("Cannot use the policy: it was issued to another device");
  const skew = (expect.skewSeconds ?? 300) * 1000;
  const now = expect.now.getTime();
  if (!(Date.parse(p.expiresAt) > now - skew)) throw new PolicyError(`Cannot use the policy: it expired at ${p.expiresAt}`);
  if (!(Date.parse(p.issuedAt) <= now + skew)) throw new PolicyError("Cannot use the policy: it was issued in the future");
  return p;
}
