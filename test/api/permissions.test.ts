/**
 * Default deny, proven by walking every route with every built-in role: each route names a
 * permission, a caller without it gets 403 before anything happens, anonymous callers get
 * 401, and the roles keep their promises (a Deployment Administrator cannot touch
 * identities or certificates; a Read-only Analyst changes nothing).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";
import { builtinRoles, isPermission } from "../../src/domain/rbac.ts";
import type { Route } from "../../src/roles/site/http.ts";

const PUBLIC_ROUTES = new Set([
  "POST /api/v1/sessions",
  "GET /api/v1/health",
  "GET /api/v1/openapi.json",
  "GET /api/v1/site/ca.pem",
  "GET /api/v1/site/signing-key.pem",
  "GET /api/v1/schemas/task-sequence.json",
  "GET /api/v1/crl.pem",
]);

const key = (r: Route) => `${r.method} ${r.path}`;
const concrete = (p: string) => p.replace(/:[A-Za-z]+/g, "00000000-0000-4000-8000-000000000000");

describe("route permissions", () => {
  let t: TestSite;
  const tokens = new Map<string, string>();
  before(async () => {
    t = await startTestSite();
    for (const role of builtinRoles) tokens.set(role.id, await adminWithRoles(t, role.id.replace(/-/g, "."), [role.id]));
  });
  after(() => t.close());

  it("every route declares a permission, and only the known public ones are public", () => {
    for (const r of t.server.routes) {
      assert.ok(r.access === "public" || r.access === "authenticated" || isPermission(r.access), `${key(r)} has no valid permission`);
      if (r.access === "public") assert.ok(PUBLIC_ROUTES.has(key(r)), `${key(r)} is public but not on the allowlist`);
    }
    const keys = t.server.routes.map(key);
    assert.equal(new Set(keys).size, keys.length, "no route is declared twice");
  });

  it("anonymous callers get 401 on every non-public route", async () => {
    for (const r of t.server.routes.filter((x) => x.access !== "public")) {
      const res = await t.request(r.method, concrete(r.path), { body: r.body ? {} : undefined });
      assert.equal(res.status, 401, `${key(r)} answered ${res.status} to an anonymous caller`);
      assert.equal(res.body.code, "SLIPWAY_UNAUTHENTICATED");
    }
  });

  it("every route × every role: 403 exactly when the role lacks the route's permission", async () => {
    for (const role of builtinRoles) {
      const token = tokens.get(role.id)!;
      for (const r of t.server.routes) {
        if (!isPermission(r.access)) continue;
        const res = await t.request(r.method, concrete(r.path), { token, body: r.body ? {} : undefined });
        const denied = res.status === 403 && res.body?.code === "SLIPWAY_FORBIDDEN";
        const allowed = role.permissions.includes(r.access);
        assert.equal(denied, !allowed, `${role.name} on ${key(r)} (${r.access}): got ${res.status} ${res.text.slice(0, 120)}`);
        assert.ok(res.status < 500, `${key(r)} answered ${res.status}`);
      }
    }
  });

  it("a Deployment Administrator cannot create identities, certificates or credentials", async () => {
    const token = tokens.get("deployment-administrator")!;
    const cases: [string, string, unknown][] = [
      ["POST", "/api/v1/admins", { username: "sneaky", roles: ["full-administrator"], password: "a-long-enough-password-1" }],
      ["POST", "/api/v1/roles", { id: "mine", name: "Mine", permissions: ["certificate.issue"] }],
      ["GET", "/api/v1/certificates", undefined],
      ["POST", "/api/v1/keys/rotate", undefined],
      ["POST", "/api/v1/devices", { name: "pre-approved", macs: ["52:54:00:12:34:56"], state: "approved" }],
    ];
    for (const [method, p, body] of cases) {
      const res = await t.request(method, p, { token, body });
      assert.equal(res.status, 403, `${method} ${p}: ${res.status} ${res.text}`);
    }
    // It may record a device, but only as pending: approval is an identity decision.
    const ok = await t.request("POST", "/api/v1/devices", { token, body: { name: "recorded", macs: ["52:54:00:12:34:57"] } });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.state, "pending");
    const approve = await t.request("POST", `/api/v1/devices/${ok.body.id}/approve`, { token });
    assert.equal(approve.status, 403);
  });

  it("a Read-only Analyst changes nothing", async () => {
    const token = tokens.get("read-only-analyst")!;
    for (const r of t.server.routes) {
      if (r.method === "GET" || !isPermission(r.access) || r.path === "/api/v1/audit/verify" || r.path === "/api/v1/task-sequences/validate") continue;
      const res = await t.request(r.method, concrete(r.path), { token, body: r.body ? {} : undefined });
      assert.equal(res.status, 403, `analyst on ${key(r)}: ${res.status}`);
    }
  });

  it("a Security Administrator assigns roles but cannot make a Full Administrator or change itself", async () => {
    const token = tokens.get("security-administrator")!;
    const res = await t.request("POST", "/api/v1/admins", { token, body: { username: "escalated", roles: ["full-administrator"], password: "a-long-enough-password-1" } });
    assert.equal(res.status, 403);
    const everything = await t.request("POST", "/api/v1/roles", { token, body: { id: "all-in-one", name: "All", permissions: builtinRoles[0].permissions } });
    assert.equal(everything.status, 403, "a custom role with every permission is a Full Administrator too");
    const ok = await t.request("POST", "/api/v1/admins", { token, body: { username: "helper.desk", roles: ["read-only-analyst"] } });
    assert.equal(ok.status, 201);
    assert.match(ok.body.oneTimePassword, /^.{20}$/);
    const me = (await t.request("GET", "/api/v1/me", { token })).body.id;
    const self = await t.request("PATCH", `/api/v1/admins/${me}`, { token, body: { roles: ["security-administrator", "deployment-administrator"] } });
    assert.equal(self.status, 403);
  });

  it("a Deployment Administrator with admin.write in a custom role still grants only what it holds", async () => {
    const create = await t.request("POST", "/api/v1/roles", { token: t.adminToken, body: { id: "team-lead", name: "Team lead", permissions: ["admin.read", "admin.write", "device.read"] } });
    assert.equal(create.status, 201, create.text);
    const token = await adminWithRoles(t, "lead", ["team-lead"]);
    assert.equal((await t.request("POST", "/api/v1/admins", { token, body: { username: "junior", roles: ["read-only-analyst"] } })).status, 403);
    assert.equal((await t.request("POST", "/api/v1/admins", { token, body: { username: "junior", roles: ["team-lead"] } })).status, 201);
  });

  it("denied requests are audited", async () => {
    const audit = await t.request("GET", "/api/v1/audit?action=request.denied&limit=1000", { token: t.adminToken });
    assert.equal(audit.status, 200);
    assert.ok(audit.body.some((e: { actor: string; outcome: string }) => e.actor === "admin:deployment.administrator" && e.outcome === "denied"));
  });
});
