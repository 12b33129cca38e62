/** Sign-in, one-time passwords, lockout, rate limiting, session expiry and API tokens. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, adminWithRoles, adminPassword, ADMIN_PASSWORD, type TestSite } from "../support/site.ts";
import { hashToken } from "../../src/security/password.ts";

describe("administrator authentication", () => {
  let t: TestSite;
  let clock = Date.now();
  const tick = (ms: number) => (clock += ms);
  before(async () => {
    t = await startTestSite({ now: () => new Date(clock), loginLimit: 1000 });
  });
  after(() => t.close());

  const signIn = (username: string, password: string) => t.request("POST", "/api/v1/sessions", { body: { username, password } });

  it("a one-time password allows nothing but changing it", async () => {
    const created = await t.request("POST", "/api/v1/admins", { token: t.adminToken, body: { username: "newbie", roles: ["read-only-analyst"] } });
    assert.equal(created.status, 201);
    const otp = created.body.oneTimePassword as string;
    const s = await signIn("newbie", otp);
    assert.equal(s.status, 201);
    assert.equal(s.body.mustChangePassword, true);
    const blocked = await t.request("GET", "/api/v1/devices", { token: s.body.token });
    assert.equal(blocked.status, 403);
    assert.equal(blocked.body.code, "SLIPWAY_PASSWORD_CHANGE_REQUIRED");
    const weak = await t.request("POST", "/api/v1/me/password", { token: s.body.token, body: { currentPassword: otp, newPassword: "short" } });
    assert.equal(weak.status, 422);
    const ok = await t.request("POST", "/api/v1/me/password", { token: s.body.token, body: { currentPassword: otp, newPassword: "a-much-better-passphrase" } });
    assert.equal(ok.status, 204);
    assert.equal((await t.request("GET", "/api/v1/devices", { token: s.body.token })).status, 200);
  });

  it("five wrong passwords lock the account for 15 minutes, even against the right password", async () => {
    await adminWithRoles(t, "victim", ["read-only-analyst"]);
    const right = adminPassword("victim", true);
    for (let i = 0; i < 5; i++) assert.equal((await signIn("victim", "wrong-guess-" + i)).status, 401);
    const locked = await signIn("victim", right);
    assert.equal(locked.status, 423);
    assert.equal(locked.body.code, "SLIPWAY_ACCOUNT_LOCKED");
    tick(15 * 60_000 + 1000);
    assert.equal((await signIn("victim", right)).status, 201);
    const audit = await t.request("GET", "/api/v1/audit?action=session.login&outcome=failure&limit=1000", { token: await fresh() });
    assert.ok(audit.body.length >= 6);
    assert.ok(!JSON.stringify(audit.body).includes("wrong-guess"), "a guessed password reached the audit log");
  });

  it("an unknown user and a wrong password get the same answer", async () => {
    const a = await signIn("nobody-here", "whatever-password");
    const b = await signIn("admin", "whatever-password");
    assert.equal(a.status, 401);
    assert.deepEqual(a.body, b.body);
  });

  it("an idle session expires after an hour; signing out ends a session at once", async () => {
    const token = await fresh();
    assert.equal((await t.request("GET", "/api/v1/me", { token })).status, 200);
    tick(61 * 60_000);
    assert.equal((await t.request("GET", "/api/v1/me", { token })).status, 401);
    const other = await fresh();
    assert.equal((await t.request("DELETE", "/api/v1/sessions/current", { token: other })).status, 204);
    assert.equal((await t.request("GET", "/api/v1/me", { token: other })).status, 401);
  });

  it("an API token is limited to its role, stored hashed, and shown once", async () => {
    t.adminToken = await fresh();
    const token = await adminWithRoles(t, "automation", ["deployment-administrator", "security-administrator"]);
    const created = await t.request("POST", "/api/v1/me/tokens", { token, body: { name: "ci", role: "deployment-administrator", expiresInDays: 7 } });
    assert.equal(created.status, 201);
    const api = created.body.token as string;
    assert.match(api, /^swt_/);
    const stored = await t.site.db.all<{ token_hash: string }>(`SELECT token_hash FROM api_tokens`);
    assert.ok(stored.some((r) => r.token_hash === hashToken(api)));
    assert.ok(!JSON.stringify(stored).includes(api));
    assert.ok(!JSON.stringify((await t.request("GET", "/api/v1/me/tokens", { token })).body).includes(api));
    assert.equal((await t.request("POST", "/api/v1/devices", { token: api, body: { name: "from-ci" } })).status, 201);
    assert.equal((await t.request("GET", "/api/v1/admins", { token: api })).status, 403, "the owner may, the token may not");
    assert.equal((await t.request("GET", "/api/v1/admins", { token })).status, 200);
    assert.equal((await t.request("POST", "/api/v1/me/tokens", { token: api, body: { name: "x", role: "deployment-administrator" } })).status, 403);
    const notHeld = await t.request("POST", "/api/v1/me/tokens", { token, body: { name: "x", role: "full-administrator" } });
    assert.equal(notHeld.status, 400);
    tick(8 * 86_400_000);
    assert.equal((await t.request("GET", "/api/v1/devices", { token: api })).status, 401, "expired token");
  });

  it("a disabled administrator's sessions end and sign-in fails", async () => {
    t.adminToken = await fresh();
    const token = await adminWithRoles(t, "leaver", ["read-only-analyst"]);
    const id = (await t.request("GET", "/api/v1/admins/leaver", { token: await fresh() })).body.id;
    assert.equal((await t.request("PATCH", `/api/v1/admins/${id}`, { token: await fresh(), body: { disabled: true } })).status, 200);
    assert.equal((await t.request("GET", "/api/v1/me", { token })).status, 401);
    assert.equal((await signIn("leaver", adminPassword("leaver", true))).status, 401);
  });

  it("nobody disables, demotes or deletes themselves, so the last Full Administrator stays", async () => {
    const token = await fresh();
    const me = (await t.request("GET", "/api/v1/me", { token })).body.id;
    assert.equal((await t.request("PATCH", `/api/v1/admins/${me}`, { token, body: { disabled: true } })).status, 403);
    assert.equal((await t.request("PATCH", `/api/v1/admins/${me}`, { token, body: { roles: ["read-only-analyst"] } })).status, 403);
    assert.equal((await t.request("DELETE", `/api/v1/admins/${me}`, { token })).status, 409);
    assert.equal((await t.request("GET", "/api/v1/me", { token })).body.roles[0], "full-administrator");
  });

  async function fresh(): Promise<string> {
    const r = await signIn("admin", ADMIN_PASSWORD + "-changed");
    assert.equal(r.status, 201, r.text);
    return r.body.token;
  }
});

describe("sign-in rate limit", () => {
  it("refuses a client address after its limit with 429", async () => {
    const t = await startTestSite({ loginLimit: 3 });
    try {
      // startTestSite itself signed in once.
      const codes = [];
      for (let i = 0; i < 4; i++) codes.push((await t.request("POST", "/api/v1/sessions", { body: { username: "admin", password: "nope-nope-nope" } })).status);
      assert.deepEqual(codes, [401, 401, 429, 429]);
    } finally {
      await t.close();
    }
  });
});
