/**
 * The administrator lifecycle invariant, checked from outside over HTTPS: no sequence of API
 * calls lets an administrator give any account (or API token) a permission it does not hold
 * itself — built-in roles other than Full Administrator excepted for whoever holds
 * admin.grant-any — and no one without every permission makes a Full Administrator in all but
 * name. A password change, reset, disable or delete ends every token of the account.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { startTestSite, adminWithRoles, adminPassword, type TestSite } from "../support/site.ts";
import { administrativePermissions, allPermissions, builtinRoles } from "../../src/domain/rbac.ts";

const FULL = "full-administrator";
const RECOVERY = "recovery-agent";
/** A Full Administrator's power: every permission but recovery.read (the Recovery Agent role's alone). */
const everything = (s: ReadonlySet<string>) => administrativePermissions.every((p) => s.has(p));
const allBut = (...except: string[]) => allPermissions.filter((p) => !except.includes(p));

describe("the escalation from issue #10: a Security Administrator builds a Full Administrator", () => {
  let t: TestSite;
  let sec: string;
  before(async () => {
    t = await startTestSite();
    sec = await adminWithRoles(t, "sec.admin", ["security-administrator"]);
  });
  after(() => t.close());

  const as = (token: string, method: string, p: string, body?: unknown) => t.request(method, p, { token, body });

  it("each step of the attack is refused and changes nothing", async () => {
    // 1. A custom role carrying permissions the Security Administrator lacks: refused.
    const almost = await as(sec, "POST", "/api/v1/roles", { id: "almost-full", name: "Almost full", permissions: allBut("recovery.read", "deployment.write") });
    assert.equal(almost.status, 403, almost.text);
    assert.equal(almost.body.code, "SLIPWAY_FORBIDDEN");
    assert.equal((await as(t.adminToken, "GET", "/api/v1/roles/almost-full")).status, 404, "the refused role was created anyway");

    // 2. The same role made by a Full Administrator still cannot be handed out by the Security Administrator.
    assert.equal((await as(t.adminToken, "POST", "/api/v1/roles", { id: "almost-full", name: "Almost full", permissions: allBut("recovery.read", "deployment.write") })).status, 201);
    const harmless = await as(sec, "POST", "/api/v1/roles", { id: "harmless", name: "Harmless", permissions: ["device.read"] });
    assert.equal(harmless.status, 201, harmless.text);
    const eve = await as(sec, "POST", "/api/v1/admins", { username: "eve", roles: ["almost-full", "harmless"], password: "Strong-Passphrase-0123456789" });
    assert.equal(eve.status, 403, eve.text);
    assert.equal((await as(t.adminToken, "GET", "/api/v1/admins/eve")).status, 404);

    // 3. Eve made by a Full Administrator; the Security Administrator widens a role she holds: refused.
    const made = await as(t.adminToken, "POST", "/api/v1/admins", { username: "eve", roles: ["almost-full", "harmless"], password: "Strong-Passphrase-0123456789" });
    assert.equal(made.status, 201, made.text);
    const widen = await as(sec, "PATCH", "/api/v1/roles/harmless", { permissions: ["device.read", "deployment.write"] });
    assert.equal(widen.status, 403, widen.text);
    assert.deepEqual((await as(t.adminToken, "GET", "/api/v1/roles/harmless")).body.permissions, ["device.read"]);

    // 4. An editor who holds deployment.write but not everything cannot complete Eve either:
    //    editing a role re-checks every holder's resulting permissions.
    assert.equal((await as(t.adminToken, "POST", "/api/v1/roles", { id: "nearly", name: "Nearly", permissions: allBut("keys.rotate", "recovery.read") })).status, 201);
    const nearly = await adminWithRoles(t, "nearly.admin", ["nearly"]);
    const complete = await as(nearly, "PATCH", "/api/v1/roles/harmless", { permissions: ["device.read", "deployment.write"] });
    assert.equal(complete.status, 403, complete.text);
    assert.deepEqual((await as(t.adminToken, "GET", "/api/v1/roles/harmless")).body.permissions, ["device.read"]);

    // 5. Nor can the Security Administrator take over Eve's account (she holds more than it).
    const reset = await as(sec, "POST", `/api/v1/admins/${made.body.id}/reset-password`);
    assert.equal(reset.status, 403, reset.text);
  });

  it("every refusal of the attack is in the audit log as denied", async () => {
    const denied = await as(t.adminToken, "GET", "/api/v1/audit?outcome=denied&limit=1000");
    const mine = denied.body.filter((e: { actor: string; object: string | null }) => e.actor === "admin:sec.admin");
    assert.ok(mine.some((e: { object: string }) => String(e.object).includes("/api/v1/roles/harmless")), `the refused role edit is not in the audit: ${JSON.stringify(mine)}`);
    assert.ok(mine.some((e: { object: string }) => String(e.object).includes("/api/v1/roles") && !String(e.object).includes("harmless")), "the refused role creation is not in the audit");
    assert.ok(mine.some((e: { object: string }) => String(e.object).includes("/reset-password")), "the refused password reset is not in the audit");
    const byNearly = denied.body.filter((e: { actor: string; object: string | null }) => e.actor === "admin:nearly.admin" && String(e.object).includes("/api/v1/roles/harmless"));
    assert.equal(byNearly.length, 1, "the refused edit by an administrator lacking only keys.rotate is not in the audit");
  });

  it("roles a Security Administrator may grant alone must not add up to every permission", async () => {
    const builtinButFull = builtinRoles.filter((r) => r.id !== FULL).map((r) => r.id);
    const r = await as(sec, "POST", "/api/v1/admins", { username: "all.builtins", roles: builtinButFull, password: "All-Builtins-0123456789" });
    assert.equal(r.status, 403, r.text);
    const one = await as(sec, "POST", "/api/v1/admins", { username: "deploy.one", roles: ["deployment-administrator"], password: "Deploy-One-0123456789" });
    assert.equal(one.status, 201, "a built-in role other than Full Administrator and Recovery Agent is the Security Administrator's to assign");
  });

  it("recovery.read: a Full Administrator lacks it, only a Full Administrator assigns the Recovery Agent role (audited), no custom role carries it", async () => {
    const me = await as(t.adminToken, "GET", "/api/v1/me");
    assert.ok(!me.body.permissions.includes("recovery.read"), "a Full Administrator holds recovery.read by default");
    const bySec = await as(sec, "POST", "/api/v1/admins", { username: "recovery.sec", roles: [RECOVERY], password: "Recovery-Sec-0123456789" });
    assert.equal(bySec.status, 403, bySec.text);
    assert.match(bySec.body.message, /only a Full Administrator assigns it/);
    const custom = await as(t.adminToken, "POST", "/api/v1/roles", { id: "own-recovery", name: "Own recovery", permissions: ["device.read", "recovery.read"] });
    assert.equal(custom.status, 403, custom.text);
    assert.equal((await as(t.adminToken, "GET", "/api/v1/roles/own-recovery")).status, 404);
    const byFull = await as(t.adminToken, "POST", "/api/v1/admins", { username: "recovery.one", roles: [RECOVERY], password: "Recovery-One-0123456789" });
    assert.equal(byFull.status, 201, byFull.text);
    const audit = await as(t.adminToken, "GET", "/api/v1/audit?action=admin.create");
    assert.ok(JSON.stringify(audit.body).includes("recovery.one"), "the grant of the Recovery Agent role is not in the audit log");
  });

  it("creating, editing and deleting a custom role needs every permission in it; admin.grant-any does not lift that", async () => {
    assert.equal((await as(t.adminToken, "POST", "/api/v1/roles", { id: "with-deploy", name: "With deploy", permissions: ["device.read", "deployment.write"] })).status, 201);
    assert.equal((await as(sec, "PATCH", "/api/v1/roles/with-deploy", { name: "Renamed" })).status, 403);
    assert.equal((await as(sec, "PATCH", "/api/v1/roles/with-deploy", { permissions: ["device.read"] })).status, 403);
    assert.equal((await as(sec, "DELETE", "/api/v1/roles/with-deploy")).status, 403);
    const r = await as(t.adminToken, "GET", "/api/v1/roles/with-deploy");
    assert.equal(r.body.name, "With deploy");
    assert.deepEqual(r.body.permissions, ["device.read", "deployment.write"]);
    assert.equal((await as(sec, "POST", "/api/v1/roles", { id: "site-writer", name: "Site writer", permissions: ["site.write"] })).status, 403);
  });

  it("nobody resets their own password through the administrators' route", async () => {
    const me = (await as(sec, "GET", "/api/v1/me")).body.id;
    const r = await as(sec, "POST", `/api/v1/admins/${me}/reset-password`);
    assert.equal(r.status, 403, r.text);
    assert.equal((await as(sec, "GET", "/api/v1/me")).status, 200, "the refused reset ended the caller's session");
  });
});

// ---- the model-based property ----------------------------------------------------------

type RoleRef = { slot: number } | { builtin: string };
type Target = number | "self";
type Op =
  | { kind: "createRole"; actor: string; slot: number; perms: string[] }
  | { kind: "editRole"; actor: string; slot: number; perms: string[] | null; add?: string; remove?: string }
  | { kind: "deleteRole"; actor: string; slot: number }
  | { kind: "createAdmin"; actor: string; target: number; roles: RoleRef[] }
  | { kind: "patchRoles"; actor: string; target: Target; roles: RoleRef[]; add?: boolean }
  | { kind: "setDisabled"; actor: string; target: Target; disabled: boolean }
  | { kind: "resetPassword"; actor: string; target: Target }
  | { kind: "deleteAdmin"; actor: string; target: Target }
  | { kind: "makeToken"; owner: number; pick: number }
  | { kind: "ownPassword"; owner: number };

const ACTORS = ["full", "sec", "lead", "nearly", "secrec", "secrec.token"] as const;
const SLOTS = 3;
const BUILTINS = builtinRoles.map((r) => r.id);

const LEAD_PERMS = ["admin.read", "admin.write", "role.read", "role.write", "device.read", "device.write", "deployment.write"];
const NEARLY_PERMS = allBut("keys.rotate", "recovery.read");
const SEC_PERMS = builtinRoles.find((r) => r.id === "security-administrator")!.permissions as string[];
// Permission sets: random ones, and ones an actor holds (whole, or but one), so that role
// changes succeed often enough to matter and role sets often add up to nearly everything.
const BASES: string[][] = [[...allPermissions], SEC_PERMS, LEAD_PERMS, NEARLY_PERMS];
const permsArb: fc.Arbitrary<string[]> = fc.oneof(
  fc.subarray(allPermissions, { minLength: 1, maxLength: 4 }),
  fc.subarray(allPermissions, { minLength: 1 }),
  fc.constantFrom(...BASES).chain((base) => fc.oneof(
    fc.constant([...base]),
    fc.constantFrom(...base).map((p) => base.filter((x) => x !== p)),
    fc.subarray(base, { minLength: 1, maxLength: 4 }),
  ).map((x) => [...x])),
);
const permArb = fc.constantFrom(...allPermissions);
const roleRefArb: fc.Arbitrary<RoleRef> = fc.oneof(
  fc.nat(SLOTS - 1).map((slot) => ({ slot })),
  fc.constantFrom(...BUILTINS).map((builtin) => ({ builtin })),
);
const rolesArb = fc.uniqueArray(roleRefArb, { minLength: 1, maxLength: 4, selector: (r) => JSON.stringify(r) });
const actorArb = fc.constantFrom(...ACTORS);
const targetArb: fc.Arbitrary<Target> = fc.oneof({ weight: 6, arbitrary: fc.nat(SLOTS - 1) }, { weight: 1, arbitrary: fc.constant("self" as const) });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("createRole" as const), actor: actorArb, slot: fc.nat(SLOTS - 1), perms: permsArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("editRole" as const), actor: actorArb, slot: fc.nat(SLOTS - 1), perms: fc.option(permsArb, { freq: 5 }) }) },
  // Small edits relative to the role as it is: one permission added or taken away.
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("editRole" as const), actor: actorArb, slot: fc.nat(SLOTS - 1), perms: fc.constant(null), add: permArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("editRole" as const), actor: actorArb, slot: fc.nat(SLOTS - 1), perms: fc.constant(null), remove: permArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("deleteRole" as const), actor: actorArb, slot: fc.nat(SLOTS - 1) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("createAdmin" as const), actor: actorArb, target: fc.nat(SLOTS - 1), roles: rolesArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("patchRoles" as const), actor: actorArb, target: targetArb, roles: rolesArb }) },
  // A role added to those the administrator holds.
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("patchRoles" as const), actor: actorArb, target: targetArb, roles: roleRefArb.map((r) => [r]), add: fc.constant(true) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("setDisabled" as const), actor: actorArb, target: targetArb, disabled: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("resetPassword" as const), actor: actorArb, target: targetArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("deleteAdmin" as const), actor: actorArb, target: targetArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("makeToken" as const), owner: fc.nat(SLOTS - 1), pick: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("ownPassword" as const), owner: fc.nat(SLOTS - 1) }) },
);

/** Issue #10's attack and two variants, always tried first: each must trip the invariant on the old code. */
const EVE: Op[][] = [
  [
    { kind: "createRole", actor: "sec", slot: 0, perms: allBut("recovery.read", "deployment.write") },
    { kind: "createRole", actor: "sec", slot: 1, perms: ["device.read"] },
    { kind: "createAdmin", actor: "sec", target: 0, roles: [{ slot: 0 }, { slot: 1 }] },
    { kind: "editRole", actor: "sec", slot: 1, perms: ["device.read", "deployment.write"] },
  ],
  [
    { kind: "createRole", actor: "full", slot: 0, perms: allBut("recovery.read", "deployment.write") },
    { kind: "createRole", actor: "full", slot: 1, perms: ["device.read"] },
    { kind: "createAdmin", actor: "full", target: 0, roles: [{ slot: 0 }, { slot: 1 }] },
    { kind: "editRole", actor: "sec", slot: 1, perms: ["device.read", "deployment.write"] },
    { kind: "editRole", actor: "nearly", slot: 1, perms: ["device.read", "deployment.write"] },
  ],
  [
    { kind: "createAdmin", actor: "full", target: 0, roles: [{ builtin: "read-only-analyst" }] },
    { kind: "makeToken", owner: 0, pick: 0 },
    { kind: "setDisabled", actor: "sec", target: 0, disabled: true },
    { kind: "setDisabled", actor: "sec", target: 0, disabled: false },
    { kind: "makeToken", owner: 0, pick: 0 },
    { kind: "ownPassword", owner: 0 },
    { kind: "makeToken", owner: 0, pick: 0 },
    { kind: "resetPassword", actor: "sec", target: 0 },
  ],
];

/**
 * One sequence in which every kind of step succeeds, always tried too, so the coverage check
 * below does not depend on what the random runs happened to draw.
 */
const EVERY_KIND_SUCCEEDS: Op[] = [
  { kind: "createRole", actor: "full", slot: 2, perms: ["device.read"] },
  { kind: "editRole", actor: "full", slot: 2, perms: ["device.read", "collection.read"] },
  { kind: "createAdmin", actor: "full", target: 2, roles: [{ slot: 2 }] },
  { kind: "patchRoles", actor: "full", target: 2, roles: [{ builtin: "read-only-analyst" }], add: true },
  { kind: "makeToken", owner: 2, pick: 0 },
  { kind: "ownPassword", owner: 2 },
  { kind: "setDisabled", actor: "full", target: 2, disabled: true },
  { kind: "resetPassword", actor: "full", target: 2 },
  { kind: "deleteAdmin", actor: "full", target: 2 },
  { kind: "deleteRole", actor: "full", slot: 2 },
];

type AdminState = { id: string; username: string; roles: string[]; perms: Set<string>; disabled: boolean };
type Snapshot = { admins: Map<string, AdminState>; tokens: Map<string, Set<string>>; roles: Map<string, string[]> };

describe("administrators, roles and tokens: a model-based property over HTTPS", () => {
  let t: TestSite;
  const actors = new Map<string, { token: string; username: string }>();
  let run = 0;
  let observer = "";

  before(async () => {
    t = await startTestSite();
    // Reads the site between steps; not an actor, so no step can end its session.
    observer = await adminWithRoles(t, "observer", ["full-administrator"]);
    const mk = async (id: string, permissions: string[]) => {
      const r = await t.request("POST", "/api/v1/roles", { token: t.adminToken, body: { id, name: id, permissions } });
      assert.equal(r.status, 201, r.text);
    };
    // A team lead with admin.write and role.write but not admin.grant-any, and deployment.write
    // that the Security Administrator lacks, who is also a Recovery Agent; a "nearly everything"
    // administrator lacking only keys.rotate (and recovery.read, like every Full Administrator).
    await mk("actor-lead", LEAD_PERMS);
    await mk("actor-nearly", NEARLY_PERMS);
    actors.set("full", { token: t.adminToken, username: "admin" });
    actors.set("sec", { token: await adminWithRoles(t, "actor.sec", ["security-administrator"]), username: "actor.sec" });
    actors.set("lead", { token: await adminWithRoles(t, "actor.lead", ["actor-lead", RECOVERY]), username: "actor.lead" });
    actors.set("nearly", { token: await adminWithRoles(t, "actor.nearly", ["actor-nearly"]), username: "actor.nearly" });
    const secrec = await adminWithRoles(t, "actor.secrec", ["security-administrator", "recovery-agent"]);
    actors.set("secrec", { token: secrec, username: "actor.secrec" });
    // An API token narrower than its owner: it must grant only what the token holds.
    const tok = await t.request("POST", "/api/v1/me/tokens", { token: secrec, body: { name: "automation", role: "security-administrator" } });
    assert.equal(tok.status, 201, tok.text);
    actors.set("secrec.token", { token: tok.body.token, username: "actor.secrec" });
  });
  after(() => t.close());

  it("no step gives any account or token a permission its actor does not hold, nor every permission; recovery ends tokens", async () => {
    const full = () => observer;
    const outcomes = new Map<string, number>();
    // Each run starts with the Full Administrator creating its three custom roles, and tries to
    // create three administrators, so that later steps find them.
    const prelude = fc.tuple(
      ...[0, 1, 2].map((slot) => fc.record({ kind: fc.constant("createRole" as const), actor: fc.constant("full"), slot: fc.constant(slot), perms: permsArb })),
      ...[0, 1, 2].map((target) => fc.record({ kind: fc.constant("createAdmin" as const), actor: actorArb, target: fc.constant(target), roles: rolesArb })),
    );
    const runArb = fc.tuple(prelude, fc.array(opArb, { minLength: 4, maxLength: 30 })).map(([first, rest]): Op[] => [...first, ...rest]);
    await fc.assert(fc.asyncProperty(runArb, async (ops) => {
      const prefix = `q${++run}`;
      const roleId = (slot: number) => `${prefix}-r${slot}`;
      const username = (slot: number) => `${prefix}.u${slot}`;
      const ref = (r: RoleRef) => ("slot" in r ? roleId(r.slot) : r.builtin);
      const targets = new Map<number, { id: string; password: string; session: string | null }>();
      const tokens: { token: string; ownerSlot: number; ownerId: string }[] = [];
      const dead: { credential: string; why: string }[] = [];
      const runUsers = () => new Set([...ACTORS.map((a) => actors.get(a)!.username), ...[0, 1, 2].map(username)]);

      const snapshot = async (): Promise<Snapshot> => {
        const roles = await t.request("GET", "/api/v1/roles", { token: full() });
        const admins = await t.request("GET", "/api/v1/admins", { token: full() });
        assert.equal(roles.status, 200);
        assert.equal(admins.status, 200);
        const permsOf = new Map<string, string[]>(roles.body.map((r: { id: string; permissions: string[] }) => [r.id, r.permissions]));
        const users = runUsers();
        const out: Snapshot = { admins: new Map(), tokens: new Map(), roles: permsOf };
        for (const a of admins.body as { id: string; username: string; roles: string[]; disabled: boolean }[]) {
          if (!users.has(a.username)) continue;
          out.admins.set(a.id, { id: a.id, username: a.username, roles: a.roles, disabled: a.disabled, perms: new Set(a.roles.flatMap((r) => permsOf.get(r) ?? [])) });
        }
        for (const k of [...tokens.map((x) => x.token), actors.get("secrec.token")!.token]) {
          const me = await t.request("GET", "/api/v1/me", { token: k });
          out.tokens.set(k, me.status === 200 ? new Set(me.body.permissions) : new Set());
        }
        return out;
      };

      const idOf = (s: Snapshot, target: Target, actor: string): string | undefined => {
        const name = target === "self" ? actors.get(actor)!.username : username(target);
        return [...s.admins.values()].find((a) => a.username === name)?.id;
      };

      const endAll = (ownerId: string, why: string) => {
        for (const k of tokens.filter((x) => x.ownerId === ownerId)) dead.push({ credential: k.token, why });
        for (const [slot, tg] of targets) if (tg.id === ownerId && tg.session) {
          dead.push({ credential: tg.session, why });
          targets.set(slot, { ...tg, session: null });
        }
      };

      const signInAs = async (slot: number): Promise<string | null> => {
        const tg = targets.get(slot);
        if (!tg) return null;
        if (tg.session) return tg.session;
        const s = await t.request("POST", "/api/v1/sessions", { body: { username: username(slot), password: tg.password } });
        if (s.status !== 201) return null;
        let session = s.body.token as string;
        if (s.body.mustChangePassword) {
          const next = `${tg.password}-next`;
          const c = await t.request("POST", "/api/v1/me/password", { token: session, body: { currentPassword: tg.password, newPassword: next } });
          assert.equal(c.status, 204, c.text);
          tg.password = next;
        }
        targets.set(slot, { ...tg, session });
        return session;
      };

      let before = await snapshot();
      const log: string[] = [];
      for (const op of ops) {
        log.push(JSON.stringify(op));
        // Who acts, and what it holds right now (a token holds only what the token grants).
        let actorPerms: ReadonlySet<string>;
        if (op.kind === "makeToken" || op.kind === "ownPassword") {
          const id = targets.get(op.owner)?.id;
          actorPerms = (id && before.admins.get(id)?.perms) || new Set();
        } else if (op.actor === "secrec.token") {
          actorPerms = before.tokens.get(actors.get("secrec.token")!.token)!;
        } else {
          actorPerms = before.admins.get(idOf(before, "self", op.actor)!)!.perms;
        }
        let status = 0;
        const as = async (method: string, p: string, body?: unknown) => {
          const r = await t.request(method, p, { token: actors.get((op as { actor: string }).actor)!.token, body });
          status = r.status;
          return r;
        };

        switch (op.kind) {
          case "createRole":
            await as("POST", "/api/v1/roles", { id: roleId(op.slot), name: `${prefix} role ${op.slot}`, permissions: op.perms });
            break;
          case "editRole": {
            const current = before.roles.get(roleId(op.slot)) ?? ["device.read"];
            const perms = op.perms ?? (op.add ? [...new Set([...current, op.add])] : op.remove ? current.filter((p) => p !== op.remove) : null);
            await as("PATCH", `/api/v1/roles/${roleId(op.slot)}`, perms?.length ? { permissions: perms } : { name: `${prefix} renamed ${op.slot} ${log.length}` });
            break;
          }
          case "deleteRole":
            await as("DELETE", `/api/v1/roles/${roleId(op.slot)}`);
            break;
          case "createAdmin": {
            const password = adminPassword(username(op.target));
            const r = await as("POST", "/api/v1/admins", { username: username(op.target), roles: op.roles.map(ref), password });
            if (r.status === 201) targets.set(op.target, { id: r.body.id, password, session: null });
            break;
          }
          case "patchRoles": {
            const id = idOf(before, op.target, op.actor);
            const roles = op.add ? [...new Set([...(before.admins.get(id!)?.roles ?? []), ...op.roles.map(ref)])] : op.roles.map(ref);
            if (id) await as("PATCH", `/api/v1/admins/${id}`, { roles });
            break;
          }
          case "setDisabled": {
            const id = idOf(before, op.target, op.actor);
            if (!id) break;
            const r = await as("PATCH", `/api/v1/admins/${id}`, { disabled: op.disabled });
            if (r.status === 200 && op.disabled) endAll(id, "disabled");
            break;
          }
          case "resetPassword": {
            const id = idOf(before, op.target, op.actor);
            if (!id) break;
            const r = await as("POST", `/api/v1/admins/${id}/reset-password`);
            if (r.status === 200) {
              endAll(id, "password reset");
              for (const [slot, tg] of targets) if (tg.id === id) targets.set(slot, { ...tg, password: r.body.oneTimePassword });
            }
            break;
          }
          case "deleteAdmin": {
            const id = idOf(before, op.target, op.actor);
            if (!id) break;
            const r = await as("DELETE", `/api/v1/admins/${id}`);
            if (r.status === 204) {
              endAll(id, "deleted");
              for (const [slot, tg] of targets) if (tg.id === id) targets.delete(slot);
            }
            break;
          }
          case "makeToken": {
            const tg = targets.get(op.owner);
            if (!tg || before.admins.get(tg.id)?.disabled !== false) break;
            const session = await signInAs(op.owner);
            if (!session) break;
            const roles = before.admins.get(tg.id)!.roles;
            const r = await t.request("POST", "/api/v1/me/tokens", { token: session, body: { name: `t${log.length}`, role: roles[op.pick % roles.length] } });
            status = r.status;
            if (r.status === 201) tokens.push({ token: r.body.token, ownerSlot: op.owner, ownerId: tg.id });
            break;
          }
          case "ownPassword": {
            const tg = targets.get(op.owner);
            if (!tg?.session) break;
            const next = `${tg.password}-own${log.length}`;
            const r = await t.request("POST", "/api/v1/me/password", { token: tg.session, body: { currentPassword: tg.password, newPassword: next } });
            status = r.status;
            if (r.status === 204) {
              // Every token ends; the session that made the change stays.
              for (const k of tokens.filter((x) => x.ownerId === tg.id)) dead.push({ credential: k.token, why: "own password change" });
              targets.set(op.owner, { ...tg, password: next });
            }
            break;
          }
        }

        const key = `${op.kind} ${status === 0 ? "skipped" : status < 300 ? "done" : status}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
        const after = await snapshot();
        const grantAny = actorPerms.has("admin.grant-any");
        const mayGive = (roles: string[]) => {
          const out = new Set(actorPerms);
          if (grantAny) for (const r of builtinRoles) if (r.id !== FULL && r.id !== RECOVERY && roles.includes(r.id)) for (const p of r.permissions) out.add(p);
          // A Full Administrator assigns the Recovery Agent role (recovery.read), which it does not hold itself.
          if (everything(actorPerms) && roles.includes(RECOVERY)) out.add("recovery.read");
          return out;
        };
        // An account (or token) whose permissions this step changed must have held, and must
        // now hold, only what the actor could have granted it: gaining anything else is an
        // escalation, and changing an account that holds more is a takeover.
        const check = (what: string, was: ReadonlySet<string>, wasRoles: string[], now: ReadonlySet<string>, roles: string[]) => {
          if (now.size === was.size && [...now].every((p) => was.has(p))) return;
          const beyond = [...now].filter((p) => !mayGive(roles).has(p));
          const gained = beyond.filter((p) => !was.has(p));
          assert.deepEqual(gained, [], `${what} gained ${gained.join(", ")}, which the actor does not hold, after:\n${log.join("\n")}`);
          assert.deepEqual(beyond, [], `${what} now holds ${beyond.join(", ")}, which the actor does not hold, after:\n${log.join("\n")}`);
          takeover(what, was, wasRoles);
          if (everything(now)) assert.ok(everything(actorPerms), `${what} holds every permission, set by an actor who does not, after:\n${log.join("\n")}`);
        };
        const takeover = (what: string, was: ReadonlySet<string>, wasRoles: string[]) => {
          const more = [...was].filter((p) => !mayGive(wasRoles).has(p));
          assert.deepEqual(more, [], `${what} held ${more.join(", ")}, which the actor does not, and was changed anyway, after:\n${log.join("\n")}`);
          if (everything(was)) assert.ok(everything(actorPerms), `${what} held every permission and was changed by an actor who does not, after:\n${log.join("\n")}`);
        };
        for (const a of after.admins.values()) {
          const b = before.admins.get(a.id);
          check(`administrator ${a.username}`, b?.perms ?? new Set(), b?.roles ?? [], a.perms, a.roles);
        }
        for (const b of before.admins.values()) {
          if (!after.admins.has(b.id)) check(`deleted administrator ${b.username}`, b.perms, b.roles, new Set(), []);
        }
        // Disabling, enabling and resetting a password change no permissions, but are takeovers all the same.
        if ((op.kind === "setDisabled" || op.kind === "resetPassword") && status === 200) {
          const b = before.admins.get(idOf(before, op.target, op.actor)!)!;
          takeover(`administrator ${b.username}`, b.perms, b.roles);
        }
        for (const k of tokens) {
          const ownerBefore = before.admins.get(k.ownerId);
          const owner = after.admins.get(k.ownerId);
          check(`a token of ${username(k.ownerSlot)}`, before.tokens.get(k.token) ?? new Set(), ownerBefore?.roles ?? [], after.tokens.get(k.token)!, owner?.roles ?? []);
        }
        for (const d of dead) {
          const r = await t.request("GET", "/api/v1/me", { token: d.credential });
          assert.equal(r.status, 401, `a credential still works after "${d.why}", after:\n${log.join("\n")}`);
        }
        before = after;
      }
    }), { numRuns: Number(process.env.SLIPWAY_MODEL_RUNS ?? 20), examples: [...EVE, EVERY_KIND_SUCCEEDS].map((ops) => [ops]) });
    // The property means something only if the random steps also succeed, not just get refused.
    for (const kind of ["createRole", "editRole", "deleteRole", "createAdmin", "patchRoles", "setDisabled", "resetPassword", "deleteAdmin", "makeToken", "ownPassword"]) {
      assert.ok((outcomes.get(`${kind} done`) ?? 0) > 0, `no ${kind} step ever succeeded: ${JSON.stringify([...outcomes].sort())}`);
    }
    if (process.env.SLIPWAY_MODEL_STATS) console.log(JSON.stringify([...outcomes].sort()));
    assert.ok((outcomes.get("editRole 403") ?? 0) > 0 && (outcomes.get("createAdmin 403") ?? 0) > 0);
  });
});
