/**
 * Bad input gets a clear 4xx and changes nothing. Random and malformed bodies are thrown at
 * every route (with real objects behind the path parameters, so validation is reached):
 * never a 5xx, the server keeps serving, and a refused request leaves the database as it was.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { startTestSite, type TestSite } from "../support/site.ts";
import type { Route } from "../../src/roles/site/http.ts";
import { administrativePermissions, type Permission } from "../../src/domain/rbac.ts";

/** A digest of everything an administrator configures (not sessions, counters or the audit log). */
async function snapshot(t: TestSite): Promise<string> {
  const h = createHash("sha256");
  const tables: [string, string][] = [
    ["roles", "*"], ["devices", "*"], ["device_macs", "*"], ["collections", "*"], ["collection_members", "*"],
    ["variables", "*"], ["task_sequences", "*"], ["task_sequence_versions", "*"], ["deployments", "*"],
    ["admins", "id, username, display_name, password_hash, must_change_password, roles, scopes, disabled"],
    ["api_tokens", "id, token_hash, admin_id, name, role_id, expires_at"],
  ];
  for (const [table, cols] of tables) {
    const rows = await t.site.db.all(`SELECT ${cols} FROM ${table} ORDER BY 1`);
    h.update(table + JSON.stringify(rows));
  }
  return h.digest("hex");
}

describe("malformed input on every route", () => {
  let t: TestSite;
  const ids: Record<string, string> = {};
  before(async () => {
    t = await startTestSite();
    const req = async (m: string, p: string, body?: unknown) => {
      const r = await t.request(m, p, { token: t.adminToken, body });
      assert.ok(r.status < 300, `${m} ${p}: ${r.status} ${r.text}`);
      return r.body;
    };
    ids.collections = (await req("POST", "/api/v1/collections", { name: "Lab" })).id;
    ids.devices = (await req("POST", "/api/v1/devices", { name: "pc-1", macs: ["52:54:00:00:00:01"], collections: ["Lab"] })).id;
    ids.variables = (await req("POST", "/api/v1/variables", { scope: "site", name: "Secret1", value: "s3cr3t-value", secret: true })).id;
    ids["task-sequences"] = (await req("POST", "/api/v1/task-sequences", { document: { name: "Base", steps: [{ name: "Reboot", type: "reboot" }] } })).id;
    ids.deployments = (await req("POST", "/api/v1/deployments", { name: "Base to lab", taskSequence: "Base", collection: "Lab" })).id;
    ids.admins = (await req("POST", "/api/v1/admins", { username: "other", roles: ["read-only-analyst"] })).id;
    ids.roles = (await req("POST", "/api/v1/roles", { id: "custom", name: "Custom", permissions: ["device.read"] })).id;
  });
  after(() => t.close());

  /** Fills path parameters with the id of a real object of the route's kind. */
  function pathFor(r: Route): string {
    const kind = r.path.split("/")[3];
    return r.path
      .replace(/:tokenId/, "00000000-0000-4000-8000-000000000000")
      .replace(/:version/, "1")
      .replace(/:device/, ids.devices)
      .replace(/:id/, ids[kind] ?? "00000000-0000-4000-8000-000000000000");
  }

  // Routes that would legitimately change state on an empty body or are exercised elsewhere.
  const skipUnchanged = (r: Route) => r.path === "/api/v1/sessions" || r.path === "/api/v1/sessions/current" || r.path.endsWith("/reset-password")
    || r.path.endsWith("/keys/rotate") || /\/devices\/:id\/(approve|block|unapprove)$/.test(r.path) || r.path === "/api/v1/audit/verify";

  it("random JSON bodies: 4xx, never 5xx, nothing changed", async () => {
    const routes = t.server.routes.filter((r) => r.body && !skipUnchanged(r));
    assert.ok(routes.length >= 15);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...routes), fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.object({ maxDepth: 3 })), async (r, body) => {
        const before = await snapshot(t);
        const res = await t.request(r.method, pathFor(r), { token: t.adminToken, rawBody: JSON.stringify(body) ?? "null" });
        assert.ok(res.status < 500, `${r.method} ${r.path} answered ${res.status} to ${JSON.stringify(body).slice(0, 200)}`);
        if (res.status >= 400) {
          assert.match(res.body?.code ?? "", /^SLIPWAY_[A-Z_]+$/);
          assert.equal(typeof res.body.message, "string");
          assert.equal(await snapshot(t), before, `${r.method} ${r.path} refused the body but changed something`);
        }
      }),
      { numRuns: 400 },
    );
  });

  it("bodies that are not JSON, the wrong type, too deep or too large are refused", async () => {
    // Routes the Full Administrator may call (not recovery.read's: authorization comes before the body).
    const routes = t.server.routes.filter((r) => r.body && !skipUnchanged(r) && (r.access === "public" || administrativePermissions.includes(r.access as Permission)));
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    const cases: { raw: string | Buffer; headers?: Record<string, string>; status: number }[] = [
      { raw: "", status: 400 },
      { raw: "{", status: 400 },
      { raw: "{\"name\": \"x\",}", status: 400 },
      { raw: Buffer.from([0xff, 0xfe, 0x00, 0x7b]), status: 400 },
      { raw: "{\"name\":\"x\"}", headers: { "content-type": "text/plain" }, status: 415 },
      { raw: deep, status: 400 },
      { raw: "{\"__proto__\": {\"admin\": true}, \"constructor\": {\"prototype\": {}}}", status: 400 },
      { raw: JSON.stringify({ name: "x".repeat(2 * 1024 * 1024) }), status: 413 },
    ];
    for (const r of routes) {
      for (const c of cases) {
        const before = await snapshot(t);
        const res = await t.request(r.method, pathFor(r), { token: t.adminToken, rawBody: c.raw, headers: c.headers });
        assert.equal(res.status, c.status, `${r.method} ${r.path} with ${String(c.raw).slice(0, 30)}: ${res.status} ${res.text.slice(0, 200)}`);
        assert.equal(await snapshot(t), before);
      }
    }
    const health = await t.request("GET", "/api/v1/health");
    assert.equal(health.status, 200);
  });

  it("malformed paths, queries and methods are 4xx", async () => {
    const cases: [string, string, number][] = [
      ["GET", "/api/v1/devices/%E0%A4%A", 400],
      ["GET", "/api/v1/nothing-here", 404],
      ["PUT", "/api/v1/devices", 405],
      ["GET", "/api/v1/devices?state=sideways", 400],
      ["GET", "/api/v1/audit?limit=-5", 400],
      ["GET", "/api/v1/task-sequences/Base/versions/one", 400],
      ["GET", `/api/v1/${"a/".repeat(2000)}`, 404],
    ];
    for (const [m, p, status] of cases) {
      const res = await t.request(m, p, { token: t.adminToken });
      assert.equal(res.status, status, `${m} ${p.slice(0, 60)}: ${res.status} ${res.text.slice(0, 200)}`);
      assert.match(res.body.code, /^SLIPWAY_/);
    }
  });

  it("an unexpected failure is a bare 500 that leaks nothing, and the server keeps serving", async () => {
    // Break the database under the server: every query on devices now fails inside SQLite.
    await t.site.db.run(`ALTER TABLE devices RENAME TO devices_moved`);
    try {
      const res = await t.request("GET", "/api/v1/devices", { token: t.adminToken });
      assert.equal(res.status, 500);
      assert.deepEqual(Object.keys(res.body).sort(), ["code", "details", "message"]);
      assert.equal(res.body.message, "Internal error");
      assert.ok(!/devices|sqlite|no such table|at /i.test(JSON.stringify(res.body).replace(/"requestId":"[^"]+"/, "")), res.text);
      assert.ok(t.logLines.some((l) => l.includes("request failed") && l.includes(res.body.details.requestId)), "the failure is logged");
    } finally {
      await t.site.db.run(`ALTER TABLE devices_moved RENAME TO devices`);
    }
    assert.equal((await t.request("GET", "/api/v1/devices", { token: t.adminToken })).status, 200);
  });
});
