/**
 * TPM manufacturer roots: the certificates an administrator trusts to have issued endorsement
 * key certificates (a TPM vendor's root and intermediate CAs, as published by the vendor). With
 * roots configured, Slipway records an EK only when the TPM's EK certificate — which the
 * manufacturer stored in the TPM's NV memory — is for that very key and chains, signature by
 * signature, to one of them: a software TPM or one the site does not trust cannot be bound.
 *
 * Only signatures and issuer names are checked. EK certificates commonly carry validity
 * periods that end long after the device or never (99991231235959Z), and some vendors'
 * intermediates expire before the TPMs they certified: validity dates are not checked.
 */
import { createHash, createPublicKey, X509Certificate, type KeyObject } from "node:crypto";

/** The certificates of a PEM bundle; throws with the position of one that does not parse. */
export function parseRoots(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error("no PEM certificate in it");
  if (blocks.length > 100) throw new Error(`${blocks.length} certificates; at most 100`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new Error(`certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

/**
 * Why the EK a machine proved (SubjectPublicKeyInfo, base64) may not be recorded for lack of a
 * manufacturer's certificate, or null: always null without roots; with them, the EK certificate
 * it sent (DER, base64) must chain to one.
 */
export function ekCertificateRefusal(rootsPem: string | null, ekSpki: string, certificate: string | undefined): string | null {
  if (!rootsPem) return null;
  if (!certificate) return "the machine sent no EK certificate, and TPM manufacturer roots are configured";
  const key = createPublicKey({ key: Buffer.from(ekSpki, "base64"), format: "der", type: "spki" });
  const problem = ekCertificateProblem(Buffer.from(certificate, "base64"), key, parseRoots(rootsPem));
  return problem ? `${problem} (TPM manufacturer roots are configured)` : null;
}

export function certificateFingerprint(c: X509Certificate): string {
  return `sha256:${createHash("sha256").update(c.raw).digest("hex")}`;
}

/**
 * Why `certDer` is not an EK certificate for `ek` from one of `roots`, or null when it is: it
 * parses, certifies exactly that public key, and each certificate up the chain is issued and
 * signed by the next, ending at a self-signed certificate of the bundle.
 */
export function ekCertificateProblem(certDer: Uint8Array, ek: KeyObject, roots: X509Certificate[]): string | null {
  let cert: X509Certificate;
  let certKey: Buffer;
  try {
    cert = new X509Certificate(Buffer.from(certDer));
    // A key of an algorithm Node does not know fails here, not at parse time.
    certKey = cert.publicKey.export({ type: "spki", format: "der" });
  } catch {
    return "the EK certificate does not parse";
  }
  if (!certKey.equals(ek.export({ type: "spki", format: "der" }))) return "the EK certificate is for another key";
  let at = cert;
  for (let depth = 0; depth < 8; depth++) {
    const issuer = roots.find((r) => {
      try {
        return at.checkIssued(r) && at.verify(r.publicKey);
      } catch {
        return false;
      }
    });
    if (!issuer) return `no configured TPM manufacturer certificate issued "${at.subject.replace(/\n/g, ", ")}"`;
    if (issuer.checkIssued(issuer) && issuer.verify(issuer.publicKey)) return null;
    at = issuer;
  }
  return "the EK certificate's chain is too long";
}
