/**
 * Starts a real site for a test: a temporary data folder, real SQLite (or the PostgreSQL
 * named by SLIPWAY_TEST_DATABASE_URL, in a fresh schema of its own), real keys and a real
 * HTTPS server on a loopback port. Argon2 runs with cheaper parameters so the suite stays
 * quick; production always uses the OWASP parameters.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import https from "node:https";
import { createHash, randomBytes } from "node:crypto";
import { initSite, type Site } from "../../src/site/site.ts";
import { startSiteServer, type SiteServer } from "../../src/roles/site/server.ts";
import { startManagementPoint, type ManagementPoint } from "../../src/roles/management/server.ts";
import { ensureServerCertificate } from "../../src/security/site-keys.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { RateLimiter } from "../../src/site/auth.ts";
import { createSchema, dropSchema } from "./postgres.ts";

export const ADMIN_PASSWORD = "correct-horse-battery-staple-42";
export const TEST_PASSWORD_COST = { memoryKiB: 1024, passes: 1 };

export type TestSite = {
  site: Site;
  server: SiteServer;
  /** The management point (mutual TLS), on its own loopback port. */
  mp: ManagementPoint;
  url: string;
  ca: string;
  dataDir: string;
  /** The PostgreSQL URL (with its own schema) when the site runs on PostgreSQL. */
  databaseUrl: string | undefined;
  logLines: string[];
  /** A Full Administrator session (password already changed). */
  adminToken: string;
  request(method: string, p: string, opts?: { token?: string | null; body?: unknown; rawBody?: string | Buffer; headers?: Record<string, string> }): Promise<{ status: number; body: any; text: string }>;
  close(): Promise<void>;
};

export function tempDir(prefix = "slipway-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function httpsRequest(url: string, ca: string, method: string, p: string, opts: { token?: string | null; body?: unknown; rawBody?: string | Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: any; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    const headers: Record<string, string> = { ...(payload !== undefined ? { "content-type": "application/json" } : {}), ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const req = https.request(new URL(p, url), { method, ca, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body: unknown = undefined;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body, text });
      });
    });
    req.on("error", reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

export async function startTestSite(opts: { database?: "sqlite" | "postgres"; now?: () => Date; loginLimit?: number } = {}): Promise<TestSite> {
  const dataDir = tempDir();
  const logLines: string[] = [];
  const log: Logger = createLogger({ level: "debug", write: (l) => logLines.push(l) });
  let databaseUrl: string | undefined;
  let schema: string | undefined;
  const wantPg = opts.database === "postgres" || (opts.database === undefined && process.env.SLIPWAY_TEST_DB === "postgres");
  if (wantPg) {
    const base = process.env.SLIPWAY_TEST_DATABASE_URL;
    if (!base) throw new Error("SLIPWAY_TEST_DATABASE_URL is not set; scripts/test.sh sets it after starting PostgreSQL");
    schema = `t_${randomBytes(6).toString("hex")}`;
    databaseUrl = await createSchema(base, schema);
  }
  const { site } = await initSite({ dataDir, databaseUrl, log, now: opts.now, passwordCost: TEST_PASSWORD_COST, adminPassword: ADMIN_PASSWORD });
  const tls = await ensureServerCertificate(site.keys, dataDir, ["localhost", "127.0.0.1"]);
  const server = await startSiteServer({
    site, host: "127.0.0.1", port: 0, tls,
    loginLimiter: new RateLimiter(opts.loginLimit ?? 10_000, 60_000, () => site.now().getTime()),
  });
  const mp = await startManagementPoint({ site, host: "127.0.0.1", port: 0, tls });
  const ca = site.keys.ca.certPem;
  const request: TestSite["request"] = (method, p, o = {}) => httpsRequest(server.url, ca, method, p, o);
  let r = await request("POST", "/api/v1/sessions", { body: { username: "admin", password: ADMIN_PASSWORD } });
  if (r.status !== 201) throw new Error(`admin sign-in failed: ${r.status} ${r.text}`);
  const first = r.body.token as string;
  const newPassword = ADMIN_PASSWORD + "-changed";
  r = await request("POST", "/api/v1/me/password", { token: first, body: { currentPassword: ADMIN_PASSWORD, newPassword } });
  if (r.status !== 204) throw new Error(`admin password change failed: ${r.status} ${r.text}`);
  return {
    site, server, mp, url: server.url, ca, dataDir, databaseUrl, logLines, adminToken: first, request,
    async close() {
      await mp.close();
      await server.close();
      await site.close();
      if (databaseUrl && schema) await dropSchema(process.env.SLIPWAY_TEST_DATABASE_URL!, schema);
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The password adminWithRoles gives an administrator (the changed one when `changed`). */
export function adminPassword(username: string, changed = false): string {
  const tag = createHash("sha256").update(username).digest("hex").slice(0, 8);
  return `Tested-Passphrase-${tag}${changed ? "-renewed" : ""}`;
}

/** Signs in a new administrator holding the given roles; returns their session token. */
export async function adminWithRoles(t: TestSite, username: string, roles: string[], scopes: string[] | null = null): Promise<string> {
  const password = adminPassword(username);
  let r = await t.request("POST", "/api/v1/admins", { token: t.adminToken, body: { username, roles, scopes, password } });
  if (r.status !== 201) throw new Error(`create admin ${username}: ${r.status} ${r.text}`);
  r = await t.request("POST", "/api/v1/sessions", { body: { username, password } });
  const token = r.body.token as string;
  const changed = adminPassword(username, true);
  r = await t.request("POST", "/api/v1/me/password", { token, body: { currentPassword: password, newPassword: changed } });
  if (r.status !== 204) throw new Error(`password change ${username}: ${r.status} ${r.text}`);
  return token;
}
