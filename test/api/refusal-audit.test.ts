/**
 * Every refused request leaves exactly one audit entry, over real HTTPS: refusals raised
 * inside handlers (a token making a token, a scoped administrator reaching outside its
 * scope, a grant beyond one's own permissions) as request.denied with the code, path and
 * reason; a refusal the handler audited itself is not audited twice; anonymous refusals are
 * audited at most 60 a minute per address.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";

type Entry = { seq: number; actor: string; action: string; object: string | null; outcome: string; details: Record<string, unknown> | null };

describe("refusals raised inside handlers are audited once", () => {
  let t: TestSite;
  before(async () => {
    t = await startTestSite();
  });
  after(() => t.close());

  const lastSeq = async () => Number((await t.site.db.get<{ m: number }>(`SELECT MAX(seq) AS m FROM audit_log`))!.m);
  /** The entries written since `after`, read over the API. */
  const since = async (after: number): Promise<Entry[]> => (await t.request("GET", `/api/v1/audit?after=${after}&limit=1000`, { token: t.adminToken })).body;

  async function refusedOnce(call: () => Promise<{ status: number; body: any }>, expect: { status: number; code: string; actor: string; object: string; reason: RegExp }) {
    const from = await lastSeq();
    const r = await call();
    assert.equal(r.status, expect.status, JSON.stringify(r.body));
    assert.equal(r.body.code, expect.code);
    const written = await since(from);
    assert.equal(written.length, 1, `one entry for the refusal: ${JSON.stringify(written)}`);
    const [e] = written;
    assert.deepEqual([e.action, e.outcome, e.actor, e.object, e.details?.code], ["request.denied", "denied", expect.actor, expect.object, expect.code]);
    assert.match(String(e.details?.reason), expect.reason);
  }

  it("an API token trying to create a token", async () => {
    const made = await t.request("POST", "/api/v1/me/tokens", { token: t.adminToken, body: { name: "ci", role: "full-administrator" } });
    assert.equal(made.status, 201, made.text);
    await refusedOnce(() => t.request("POST", "/api/v1/me/tokens", { token: made.body.token, body: { name: "ci-2", role: "full-administrator" } }),
      { status: 403, code: "SLIPWAY_FORBIDDEN", actor: "admin:admin", object: "POST /api/v1/me/tokens", reason: /tokens cannot create API tokens/ });
  });

  it("a scoped administrator adding a device outside its scope", async () => {
    const a = await t.request("POST", "/api/v1/collections", { token: t.adminToken, body: { name: "Lab A", description: "" } });
    assert.equal(a.status, 201, a.text);
    const outside = await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "pc-outside" } });
    assert.equal(outside.status, 201, outside.text);
    const scoped = await adminWithRoles(t, "scoped.deployer", ["deployment-administrator"], [a.body.id]);
    await refusedOnce(() => t.request("POST", `/api/v1/collections/${a.body.id}/members`, { token: scoped, body: { device: outside.body.id } }),
      { status: 403, code: "SLIPWAY_OUT_OF_SCOPE", actor: "admin:scoped.deployer", object: `POST /api/v1/collections/${a.body.id}/members`, reason: /not a device in your security scopes/ });
  });

  it("a Security Administrator granting Full Administrator", async () => {
    const sec = await adminWithRoles(t, "sec.admin", ["security-administrator"]);
    const from = await lastSeq();
    const r = await t.request("POST", "/api/v1/admins", { token: sec, body: { username: "escalated", roles: ["full-administrator"], password: "a-long-enough-password-1" } });
    assert.equal(r.status, 403);
    const written = await since(from);
    assert.equal(written.length, 1, JSON.stringify(written));
    assert.deepEqual([written[0].action, written[0].outcome, written[0].actor, written[0].object], ["request.denied", "denied", "admin:sec.admin", "POST /api/v1/admins"]);
  });

  it("a refusal its handler audited itself is not audited again", async () => {
    const from = await lastSeq();
    const r = await t.request("POST", "/api/v1/me/password", { token: t.adminToken, body: { currentPassword: "wrong-password-entirely", newPassword: "another-long-passphrase-9" } });
    assert.equal(r.status, 401);
    const written = await since(from);
    assert.deepEqual(written.map((e) => [e.action, e.outcome]), [["admin.password.change", "failure"]]);
  });

  it("anonymous refusals are audited at most 60 a minute per address", async () => {
    const from = await lastSeq();
    for (let i = 0; i < 75; i++) assert.equal((await t.request("GET", "/api/v1/devices", { token: null })).status, 401);
    const anon = (await since(from)).filter((e) => e.actor === "anonymous");
    assert.ok(anon.length <= 60 && anon.length >= 1, `${anon.length} anonymous entries`);
    assert.ok(anon.every((e) => e.action === "request.denied" && e.details?.code === "SLIPWAY_UNAUTHENTICATED"));
  });
});
