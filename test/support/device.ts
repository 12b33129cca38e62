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
  /** Enrolls with `credential`; `extra` joins the inventory, `top` the request body (e.g. `tpm`). */
  enroll(credential: Record<string, unknown>, extra?: Record<string, unknown>, top?: Record<string, unknown>): Promise<Reply>;
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
    async enroll(credential, extra = {}, top = {}) {
      const r = await request(t.mp.url, { method: "POST", path: "/mp/v1/enroll", ca: t.ca,
        body: { credential, csr: csrPem, inventory: { macs: m.macs, smbiosUuid: m.smbiosUuid, vendor: "QEMU", model: "Standard PC", cpus: 2, memoryMiB: 2048, ...extra }, ...top } });
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

export type Download = { status: number; headers: Record<string, string | string[] | undefined>; body: Buffer };

/**
 * GET (or HEAD) with a client certificate, pinning the site CA; the body as bytes. `stopAfter`
 * breaks the connection once that many bytes arrived (a download cut off mid-way).
 */
export function fetchBytes(url: string, ca: string, who: { keyPem: string; certPem: string | null } | null, p: string,
  opts: { headers?: Record<string, string>; method?: string; stopAfter?: number; agent?: https.Agent | false } = {}): Promise<Download> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(p, url), {
      method: opts.method ?? "GET", ca, headers: opts.headers, agent: opts.agent ?? false,
      key: who?.certPem ? who.keyPem : undefined, cert: who?.certPem ?? undefined,
    }, (res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      res.on("data", (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (opts.stopAfter !== undefined && got >= opts.stopAfter) {
          res.destroy();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        }
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * Enrolls `m` with its device's pre-approval (which proves only the MAC and UUID: `sniffable`)
 * and has the site's administrator approve that enrollment, as `slipway enrollment approve`
 * does: the reply of the enrollment, its assurance now `approved`.
 */
export async function enrollApproved(t: TestSite, m: TestMachine): Promise<Reply> {
  const r = await m.enroll({ kind: "pre-approved" });
  if (r.status !== 201) return r;
  const a = await t.request("POST", "/api/v1/enrollments/approve", { token: t.adminToken, body: { serials: [r.body.serial] } });
  if (a.status !== 200 || a.body.enrollments.length !== 1) throw new Error(`Cannot approve enrollment ${r.body.serial}: ${a.status} ${a.text}`);
  return { ...r, body: { ...r.body, assurance: "approved" } };
}

/** A management-point request with the machine's certificate whose body (if any) is raw bytes; the answer as bytes and, where it parses, JSON. */
export function bytesCall(t: { mp: { url: string }; ca: string }, m: TestMachine, method: string, p: string, body?: Buffer): Promise<{ status: number; body: Buffer; json: any }> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(p, t.mp.url), {
      method, ca: t.ca, key: m.keyPem, cert: m.certPem ?? undefined, agent: false,
      headers: body ? { "content-type": "application/octet-stream", "content-length": String(body.length) } : {},
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const all = Buffer.concat(chunks);
        let json: any = null;
        try {
          json = JSON.parse(all.toString("utf8"));
        } catch {
          // bytes
        }
        resolve({ status: res.statusCode ?? 0, body: all, json });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}
