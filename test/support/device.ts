/**
 * A machine talking to the management point as an agent will: its own key and CSR, real
 * mutual TLS with a keep-alive agent, nothing mocked.
 */
import https from "node:https";
import { createKeyAndCsr } from "../../src/security/csr.ts";
import type { TestSite } from "./site.ts";

export type Reply = { status: number; body: any; text: string };

export type TestMachine = {
  macs: string[];
  smbiosUuid: string | null;
  keyPem: string;
  certPem: string | null;
  agent: https.Agent;
  /** Calls the management point with this machine's certificate (if it has one). */
  call(method: string, path: string, body?: unknown): Promise<Reply>;
  enroll(credential: Record<string, unknown>, extra?: Record<string, unknown>): Promise<Reply>;
  close(): void;
};

export function request(url: string, opts: { method: string; path: string; ca: string; agent?: https.Agent; key?: string; cert?: string; body?: unknown }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = https.request(new URL(opts.path, url), {
      method: opts.method, ca: opts.ca, agent: opts.agent, key: opts.key, cert: opts.cert,
      headers: payload ? { "content-type": "application/json" } : {},
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body, text });
      });
    });
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

export async function newMachine(t: TestSite, ids: { macs: string[]; smbiosUuid?: string | null }): Promise<TestMachine> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const m: TestMachine = {
    macs: ids.macs, smbiosUuid: ids.smbiosUuid ?? null, keyPem, certPem: null,
    agent: new https.Agent({ keepAlive: true, maxSockets: 1 }),
    call(method, path, body) {
      return request(t.mp.url, { method, path, body, ca: t.ca, agent: m.agent, key: m.certPem ? m.keyPem : undefined, cert: m.certPem ?? undefined });
    },
    async enroll(credential, extra = {}) {
      const r = await request(t.mp.url, { method: "POST", path: "/mp/v1/enroll", ca: t.ca,
        body: { credential, csr: csrPem, inventory: { macs: m.macs, smbiosUuid: m.smbiosUuid, vendor: "QEMU", model: "Standard PC", cpus: 2, memoryMiB: 2048, ...extra } } });
      if (r.status === 201) {
        m.certPem = r.body.certificate;
        // A fresh agent: the next connection presents the new certificate.
        m.agent.destroy();
        m.agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
      }
      return r;
    },
    close() {
      m.agent.destroy();
    },
  };
  return m;
}
