/**
 * Sign-in, one-time passwords, throttling, rate limiting, session expiry and API tokens, and
 * the end of every session and token when an account's credentials are recovered.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import { startTestSite, adminWithRoles, adminPassword, ADMIN_PASSWORD, type TestSite } from "../support/site.ts";
import { hashToken } from "../../src/security/password.ts";
import { ACCOUNT_FAILURES, ACCOUNT_THROTTLE_MS, ADDRESS_FAILURES, ADDRESS_WINDOW_MS } from "../../src/site/auth.ts";

/** Signs in over HTTPS from a chosen loopback address (Linux answers on all of 127.0.0.0/8). */
function signInFrom(t: TestSite, address: string, username: string, password: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify({ username, password });
    const req = https.request(new URL("/api/v1/sessions", t.url), {
      method: "POST", ca: t.ca, agent: false, localAddress: address, headers: { "content-type": "application/json" },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8") || "null") }));
    });
    req.on("error", reject);
    req.end(payload);
  });
}

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

  it("an unknown user, a wrong password, a disabled account and a throttled one get the same answer; the audit tells them apart", async () => {
    await adminWithRoles(t, "switched.off", ["read-only-analyst"]);
    const off = (await t.request("GET", "/api/v1/admins/switched.off", { token: await fresh() })).body.id;
    assert.equal((await t.request("PATCH", `/api/v1/admins/${off}`, { token: await fresh(), body: { disabled: true } })).status, 200);
    await adminWithRoles(t, "hammered", ["read-only-analyst"]);
    for (let i = 0; i < 5; i++) await signIn("hammered", "wrong-guess-" + i);
    const answers = [
      await signIn("nobody-here", "whatever-password"),
      await signIn("admin", "whatever-password"),
      await signIn("switched.off", adminPassword("switched.off", true)),
      await signIn("hammered", adminPassword("hammered", true)),
    ];
    for (const a of answers) {
      assert.equal(a.status, 401);
      assert.deepEqual(a.body, answers[0].body);
    }
    assert.equal(answers[0].body.code, "SLIPWAY_LOGIN_FAILED");
    const audit = await t.request("GET", "/api/v1/audit?action=session.login&outcome=failure&limit=1000", { token: await fresh() });
    const reasons = audit.body.map((e: { details: { reason: string } }) => e.details.reason);
    for (const r of ["unknown user", "wrong password", "account disabled"]) assert.ok(reasons.includes(r), `no "${r}" in ${JSON.stringify(reasons)}`);
    assert.ok(reasons.some((r: string) => r.startsWith("throttled: 5 failures from this address")), JSON.stringify(reasons));
    assert.ok(!JSON.stringify(audit.body).includes("wrong-guess"), "a guessed password reached the audit log");
    tick(15 * 60_000 + 1000);
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

describe("sign-in throttling never locks the owner out", () => {
  let t: TestSite;
  let clock = Date.now();
  const tick = (ms: number) => (clock += ms);
  before(async () => {
    t = await startTestSite({ now: () => new Date(clock), loginLimit: 10_000 });
  });
  after(() => t.close());

  it("guesses from one address throttle only that address, and only for a while", async () => {
    await adminWithRoles(t, "target.one", ["read-only-analyst"]);
    const right = adminPassword("target.one", true);
    for (let i = 0; i < 50; i++) {
      const r = await signInFrom(t, "127.0.0.2", "target.one", `guess-${i}`);
      assert.equal(r.status, 401);
      assert.equal(r.body.code, "SLIPWAY_LOGIN_FAILED");
    }
    const throttled = await signInFrom(t, "127.0.0.2", "target.one", right);
    assert.equal(throttled.status, 401, "a throttled address was let in");
    assert.equal(throttled.body.code, "SLIPWAY_LOGIN_FAILED");
    // The owner, elsewhere, is not kept out: one address alone cannot throttle the account.
    assert.equal((await signInFrom(t, "127.0.0.3", "target.one", right)).status, 201);
    tick(ADDRESS_WINDOW_MS + 1000);
    assert.equal((await signInFrom(t, "127.0.0.2", "target.one", right)).status, 201);
  });

  it("guesses sprayed from many addresses throttle the account for minutes, then leave it open as long", async () => {
    await adminWithRoles(t, "target.two", ["read-only-analyst"]);
    const right = adminPassword("target.two", true);
    const spray = async (first: number) => {
      for (let i = 0; i < ACCOUNT_FAILURES; i++) {
        const r = await signInFrom(t, `127.0.${first + Math.floor(i / (ADDRESS_FAILURES - 1))}.1`, "target.two", `guess-${i}`);
        assert.equal(r.status, 401);
      }
    };
    await spray(10);
    const during = await signInFrom(t, "127.0.100.1", "target.two", right);
    assert.equal(during.status, 401, "the account was not throttled after the spray");
    assert.equal(during.body.code, "SLIPWAY_LOGIN_FAILED");
    const listed = await t.request("GET", "/api/v1/admins/target.two", { token: t.adminToken });
    assert.equal(listed.body.locked, true, "administrators see the throttle");
    tick(ACCOUNT_THROTTLE_MS + 1000);
    assert.equal((await signInFrom(t, "127.0.100.2", "target.two", right)).status, 201, "the owner was kept out after the throttle ended");
    // Right after a throttle, spraying again does not shut the owner out at once.
    await spray(20);
    assert.equal((await signInFrom(t, "127.0.100.3", "target.two", right)).status, 201, "a new spray shut the owner out during the open period");
    tick(ACCOUNT_THROTTLE_MS);
    await spray(30);
    assert.equal((await signInFrom(t, "127.0.100.4", "target.two", right)).status, 401, "the throttle did not come back after the open period");
    // An administrator can lift it.
    assert.equal((await t.request("PATCH", `/api/v1/admins/${listed.body.id}`, { token: t.adminToken, body: { unlock: true } })).status, 200);
    assert.equal((await signInFrom(t, "127.0.100.5", "target.two", right)).status, 201);
    const audit = await t.request("GET", "/api/v1/audit?action=session.throttle&limit=100", { token: t.adminToken });
    assert.equal(audit.body.filter((e: { details: { username: string } }) => e.details.username === "target.two").length, 2);
  });

  it("a wrong current password when changing it counts as a failed sign-in", async () => {
    const token = await adminWithRoles(t, "target.three", ["read-only-analyst"]);
    for (let i = 0; i < ADDRESS_FAILURES; i++) {
      const r = await t.request("POST", "/api/v1/me/password", { token, body: { currentPassword: `guess-${i}`, newPassword: "a-brand-new-passphrase-1" } });
      assert.equal(r.status, 401);
    }
    const right = await t.request("POST", "/api/v1/me/password", { token, body: { currentPassword: adminPassword("target.three", true), newPassword: "a-brand-new-passphrase-1" } });
    assert.equal(right.status, 401, "a session could keep guessing its own account's password");
  });
});

describe("recovering an account ends every session and API token", () => {
  let t: TestSite;
  before(async () => {
    t = await startTestSite();
  });
  after(() => t.close());

  /** A new administrator with a second session and an API token; returns their id and credentials. */
  async function withCredentials(username: string) {
    const session = await adminWithRoles(t, username, ["deployment-administrator"]);
    const other = await t.request("POST", "/api/v1/sessions", { body: { username, password: adminPassword(username, true) } });
    assert.equal(other.status, 201);
    const tok = await t.request("POST", "/api/v1/me/tokens", { token: session, body: { name: "ci", role: "deployment-administrator" } });
    assert.equal(tok.status, 201, tok.text);
    const id = (await t.request("GET", "/api/v1/me", { token: session })).body.id as string;
    for (const k of [session, other.body.token, tok.body.token]) assert.equal((await t.request("GET", "/api/v1/me", { token: k })).status, 200);
    return { id, session, otherSession: other.body.token as string, token: tok.body.token as string };
  }
  const works = async (k: string) => (await t.request("GET", "/api/v1/devices", { token: k })).status;

  it("a password change ends every API token and every other session", async () => {
    const c = await withCredentials("changer");
    const r = await t.request("POST", "/api/v1/me/password", { token: c.session, body: { currentPassword: adminPassword("changer", true), newPassword: "another-good-passphrase-7" } });
    assert.equal(r.status, 204);
    assert.equal(await works(c.token), 401, "the API token survived the password change");
    assert.equal(await works(c.otherSession), 401, "another session survived the password change");
    assert.equal(await works(c.session), 200, "the session that made the change stays");
  });

  it("an administrator's reset ends every session and API token", async () => {
    const c = await withCredentials("forgetful");
    const r = await t.request("POST", `/api/v1/admins/${c.id}/reset-password`, { token: t.adminToken });
    assert.equal(r.status, 200);
    for (const k of [c.session, c.otherSession, c.token]) assert.equal(await works(k), 401);
    // Even once the one-time password is changed, the old token stays dead.
    const s = await t.request("POST", "/api/v1/sessions", { body: { username: "forgetful", password: r.body.oneTimePassword } });
    assert.equal((await t.request("POST", "/api/v1/me/password", { token: s.body.token, body: { currentPassword: r.body.oneTimePassword, newPassword: "a-fresh-start-passphrase" } })).status, 204);
    assert.equal(await works(c.token), 401, "the API token came back after the new password was set");
    const audit = await t.request("GET", "/api/v1/audit?action=admin.password.reset&limit=10", { token: t.adminToken });
    assert.deepEqual(audit.body.at(-1).details.ended, { sessions: 2, tokens: 1 });
  });

  it("disabling ends every session and API token, and enabling brings none back", async () => {
    const c = await withCredentials("on.leave");
    assert.equal((await t.request("PATCH", `/api/v1/admins/${c.id}`, { token: t.adminToken, body: { disabled: true } })).status, 200);
    assert.equal((await t.request("PATCH", `/api/v1/admins/${c.id}`, { token: t.adminToken, body: { disabled: false } })).status, 200);
    for (const k of [c.session, c.otherSession, c.token]) assert.equal(await works(k), 401);
    assert.deepEqual((await t.request("GET", `/api/v1/admins/${c.id}/tokens`, { token: t.adminToken })).body, []);
  });

  it("deleting ends every session and API token, also for a new account of the same name", async () => {
    const c = await withCredentials("departed");
    assert.equal((await t.request("DELETE", `/api/v1/admins/${c.id}`, { token: t.adminToken })).status, 204);
    await adminWithRoles(t, "departed", ["deployment-administrator"]);
    for (const k of [c.session, c.otherSession, c.token]) assert.equal(await works(k), 401);
  });
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
