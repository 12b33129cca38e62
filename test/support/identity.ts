/** Device certificates from outside: calling the management point as one key and certificate, renewing, reading the CRL. */
import assert from "node:assert/strict";
import * as x509 from "@peculiar/x509";
import { createKeyAndCsr } from "../../src/security/csr.ts";
import { request, type Reply } from "./device.ts";
import type { TestSite } from "./site.ts";

export type Holder = { keyPem: string; certPem: string };

/** Calls the management point as the holder of one key and certificate, on a fresh connection. */
export function callAs(t: TestSite, who: Holder, method: string, path: string, body?: unknown): Promise<Reply> {
  return request(t.mp.url, { method, path, body, ca: t.ca, key: who.keyPem, cert: who.certPem });
}

/** Renews `who`'s certificate with a new key; the new key and certificate on success. */
export async function renew(t: TestSite, who: Holder): Promise<{ r: Reply; next?: Holder }> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const r = await callAs(t, who, "POST", "/mp/v1/renew", { csr: csrPem });
  return { r, next: r.status === 201 ? { keyPem, certPem: r.body.certificate } : undefined };
}

/** The serials the site's CRL lists (checked to be signed by the site CA), with their reason codes. */
export async function crlEntries(t: TestSite): Promise<Map<string, x509.X509CrlReason | undefined>> {
  const crl = new x509.X509Crl((await request(t.mp.url, { method: "GET", path: "/mp/v1/crl", ca: t.ca })).body.pem);
  assert.ok(await crl.verify({ publicKey: await new x509.X509Certificate(t.ca).publicKey.export() }), "the CRL is signed by the site CA");
  return new Map(crl.entries.map((e) => [e.serialNumber.toLowerCase(), e.reason]));
}
