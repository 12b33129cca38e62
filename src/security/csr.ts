/**
 * What an enrolling machine does with keys: make a P-256 key pair that never leaves it and a
 * PKCS#10 request proving it holds the private key.
 */
import crypto from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(globalThis.crypto);

export async function createKeyAndCsr(commonName = "slipway-agent"): Promise<{ keyPem: string; csrPem: string }> {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const keys = (await crypto.subtle.generateKey(alg, true, ["sign", "verify"])) as crypto.webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: [{ CN: [commonName] }], keys, signingAlgorithm: alg });
  const keyPem = crypto.KeyObject.from(keys.privateKey).export({ type: "pkcs8", format: "pem" }) as string;
  return { keyPem, csrPem: csr.toString("pem") };
}
