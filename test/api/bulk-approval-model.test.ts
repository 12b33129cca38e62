/**
 * Model-based test of bulk approval (DESIGN.md, Lifecycles: devices and scopes): over random
 * sequences of machines recorded on random PXE links, devices made by hand, collection changes,
 * time passing, devices put back to pending, and bulk approvals and blocks by administrators of
 * different roles and scopes, a bulk decision never changes a device outside its filter (link,
 * window) or outside the caller's scopes, changes every pending one inside them, answers exactly
 * the devices it changed, and changes nothing for a caller without device.approve or in a dry
 * run. Checked after every step against a real site over HTTPS, with machines recorded by the
 * real PXE responder; the site's clock starts now and only moves forward.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ADMIN_PASSWORD, adminPassword, adminWithRoles, startTestSite, type TestSite } from "../support/site.ts";
import { startPxeRecorder, type PxeRecorder } from "../support/pxe-recorder.ts";
import { databasesUnderTest } from "../support/postgres.ts";

type Device = { id: string; name: string; state: string; attributes: Record<string, unknown>; createdAt: string };
type Actor = { name: string; token: string; scopes: string[] | null; mayApprove: boolean };

const LINKS = ["lab0", "lab1", "lab2"] as const;
const WINDOWS = { "5m": 5 * 60_000, "15m": 15 * 60_000 } as const;
/** Devices first recorded this close to a window's start may fall either side (the request and the model read the clock apart). */
const SLACK_MS = 2000;

type Op =
  | { kind: "record"; link: (typeof LINKS)[number]; count: number }
  | { kind: "byHand"; inC2: boolean }
  | { kind: "addToC2"; pick: number }
  | { kind: "advance"; minutes: number }
  | { kind: "unapprove"; pick: number }
  | { kind: "bulk"; actor: number; action: "approve" | "block"; link: (typeof LINKS)[number] | null; since: keyof typeof WINDOWS | null; dryRun: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("record" as const), link: fc.constantFrom(...LINKS), count: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("byHand" as const), inC2: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("addToC2" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("advance" as const), minutes: fc.integer({ min: 1, max: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("unapprove" as const), pick: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({
    kind: fc.constant("bulk" as const), actor: fc.nat(), action: fc.constantFrom("approve" as const, "block" as const),
    link: fc.option(fc.constantFrom(...LINKS), { nil: null }), since: fc.option(fc.constantFrom("5m" as const, "15m" as const), { nil: null }), dryRun: fc.boolean(),
  }) },
);

for (const database of databasesUnderTest()) {
  describe(`bulk approval never reaches outside its filter or the caller's scopes (model-based) on ${database}`, () => {
    let t: TestSite;
    let pxe: PxeRecorder;
    let offset = 0;
    let serial = 0;
    const actors: Actor[] = [];
    /** What the runs exercised: bulk decisions that changed devices, by scoped callers, refusals, dry runs. */
    const seen = { decided: 0, scopedDecided: 0, scopedLeftOut: 0, refused: 0, dryRuns: 0 };
    const ids: Record<string, string> = {};

    let fullToken = "";
    const admin = (method: string, p: string, body?: unknown, token = fullToken) => t.request(method, p, { token, body });
    /** Signs everyone in again: sessions expire as the site's clock moves on. */
    async function signInAgain(): Promise<void> {
      for (const a of actors) {
        const password = a.name === "full" ? ADMIN_PASSWORD + "-changed" : adminPassword(a.name, true);
        const r = await t.request("POST", "/api/v1/sessions", { body: { username: a.name === "full" ? "admin" : a.name, password } });
        assert.equal(r.status, 201, r.text);
        a.token = r.body.token;
      }
      fullToken = actors[0].token;
    }
    const snapshot = async () => new Map(((await admin("GET", "/api/v1/devices")).body as Device[]).map((d) => [d.id, d]));
    const members = async (c: string) => new Set(((await admin("GET", `/api/v1/collections/${c}/members`)).body as { id: string }[]).map((d) => d.id));

    before(async () => {
      t = await startTestSite({ database, now: () => new Date(Date.now() + offset) });
      fullToken = t.adminToken;
      pxe = await startPxeRecorder(t, [...LINKS]);
      for (const [name, rule] of [["C1", "attributes.firstSeenLink == 'lab1'"], ["C2", null]] as const) {
        const r = await admin("POST", "/api/v1/collections", { name, rule });
        assert.equal(r.status, 201, r.text);
        ids[name] = r.body.id;
      }
      actors.push({ name: "full", token: t.adminToken, scopes: null, mayApprove: true });
      actors.push({ name: "security", token: await adminWithRoles(t, "security", ["security-administrator"]), scopes: null, mayApprove: true });
      actors.push({ name: "scoped-c1", token: await adminWithRoles(t, "scoped-c1", ["security-administrator"], [ids.C1]), scopes: [ids.C1], mayApprove: true });
      actors.push({ name: "scoped-c2", token: await adminWithRoles(t, "scoped-c2", ["security-administrator"], [ids.C2]), scopes: [ids.C2], mayApprove: true });
      actors.push({ name: "deployer", token: await adminWithRoles(t, "deployer", ["deployment-administrator"]), scopes: null, mayApprove: false });
    });
    after(async () => {
      await pxe?.close();
      await t?.close();
    });

    async function bulk(op: Extract<Op, { kind: "bulk" }>): Promise<void> {
      const actor = actors[op.actor % actors.length];
      const before = await snapshot();
      const inScope = new Set<string>();
      if (actor.scopes) for (const c of actor.scopes) for (const id of await members(c === ids.C1 ? "C1" : "C2")) inScope.add(id);
      const body = { ...(op.link ? { link: op.link } : {}), ...(op.since ? { since: op.since } : {}), ...(!op.link && !op.since ? { all: true } : {}), dryRun: op.dryRun };
      const now = Date.now() + offset;
      const r = await admin("POST", `/api/v1/devices/${op.action}`, body, actor.token);
      const after = await snapshot();
      const changed = [...after.values()].filter((d) => before.get(d.id)?.state !== d.state).map((d) => d.id).sort();
      const what = `${actor.name} ${op.action} ${JSON.stringify(body)}`;
      if (!actor.mayApprove) {
        assert.equal(r.status, 403, `${what}: ${r.text}`);
        assert.deepEqual(changed, [], `${what}: a refused caller changed something`);
        seen.refused++;
        return;
      }
      assert.equal(r.status, 200, `${what}: ${r.text}`);
      // Within the filter and the scopes: `loose` may be decided, `strict` must be.
      const matches = (d: Device, slack: number) => d.state === "pending"
        && (!op.link || d.attributes.firstSeenLink === op.link)
        && (!op.since || Date.parse(d.createdAt) >= now - WINDOWS[op.since] + slack)
        && (actor.scopes === null || inScope.has(d.id));
      const loose = new Set([...before.values()].filter((d) => matches(d, -SLACK_MS)).map((d) => d.id));
      const strict = [...before.values()].filter((d) => matches(d, SLACK_MS)).map((d) => d.id);
      const answered = (r.body.devices as { id: string }[]).map((d) => d.id).sort();
      for (const id of changed) assert.ok(loose.has(id), `${what}: changed device ${id} outside the filter or the caller's scopes`);
      for (const id of answered) assert.ok(loose.has(id), `${what}: answered device ${id} outside the filter or the caller's scopes`);
      if (op.dryRun) {
        assert.deepEqual(changed, [], `${what}: a dry run changed something`);
      } else {
        assert.deepEqual(answered, changed, `${what}: the answer lists exactly the devices changed`);
        const to = op.action === "approve" ? "approved" : "blocked";
        for (const id of changed) assert.equal(after.get(id)!.state, to);
      }
      for (const id of strict) assert.ok(answered.includes(id), `${what}: pending device ${id} in the filter and scopes was left out`);
      if (op.dryRun) seen.dryRuns++;
      else if (changed.length) seen.decided++;
      if (actor.scopes && changed.length) seen.scopedDecided++;
      // Pending devices the filter names that the scoped caller could not reach, and did not.
      if (actor.scopes && !op.dryRun && [...before.values()].some((d) => d.state === "pending" && !inScope.has(d.id) && after.get(d.id)?.state === "pending")) seen.scopedLeftOut++;
    }

    async function step(op: Op): Promise<void> {
      switch (op.kind) {
        case "record":
          for (let i = 0; i < op.count; i++) {
            const n = ++serial;
            await pxe.discover(op.link, `52:54:01:${(n >> 16).toString(16).padStart(2, "0")}:${((n >> 8) & 255).toString(16).padStart(2, "0")}:${(n & 255).toString(16).padStart(2, "0")}`);
          }
          return;
        case "byHand": {
          const r = await admin("POST", "/api/v1/devices", { name: `hand-${++serial}`, ...(op.inC2 ? { collections: ["C2"] } : {}) });
          assert.equal(r.status, 201, r.text);
          return;
        }
        case "addToC2": {
          const all = [...(await snapshot()).values()];
          if (all.length) assert.equal((await admin("POST", "/api/v1/collections/C2/members", { device: all[op.pick % all.length].id })).status, 201);
          return;
        }
        case "advance":
          offset += op.minutes * 60_000;
          await signInAgain();
          return;
        case "unapprove": {
          const decided = [...(await snapshot()).values()].filter((d) => d.state !== "pending");
          if (decided.length) assert.equal((await admin("POST", `/api/v1/devices/${decided[op.pick % decided.length].id}/unapprove`)).status, 200);
          return;
        }
        case "bulk":
          return bulk(op);
      }
    }

    it("holds over random sequences of recordings, changes and bulk decisions by random administrators", { timeout: 600_000 }, async (tc) => {
      // One fixed sequence first, in which every kind of decision happens, so coverage does not hang on the draw.
      const fixed: Op[] = [
        { kind: "record", link: "lab1", count: 3 }, { kind: "record", link: "lab0", count: 2 }, { kind: "byHand", inC2: true },
        { kind: "bulk", actor: 4, action: "approve", link: null, since: null, dryRun: false },
        { kind: "bulk", actor: 2, action: "approve", link: null, since: "5m", dryRun: true },
        { kind: "bulk", actor: 2, action: "approve", link: null, since: "5m", dryRun: false },
        { kind: "advance", minutes: 10 }, { kind: "record", link: "lab0", count: 2 },
        { kind: "bulk", actor: 3, action: "block", link: null, since: null, dryRun: false },
        { kind: "bulk", actor: 0, action: "approve", link: "lab0", since: "5m", dryRun: false },
      ];
      await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 3, maxLength: 12 }), async (ops) => {
        for (const op of ops) await step(op);
      }), { numRuns: 40, examples: [[fixed]] });
      tc.diagnostic(JSON.stringify(seen));
      assert.ok(seen.decided > 0 && seen.scopedDecided > 0 && seen.scopedLeftOut > 0 && seen.refused > 0 && seen.dryRuns > 0, JSON.stringify(seen));
    });
  });
}
