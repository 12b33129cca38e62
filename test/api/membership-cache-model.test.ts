/**
 * The membership cache as a model-based property, against real sites over HTTPS and mutual
 * TLS: random sequences of writes that can change collection membership (devices created with
 * attributes and static memberships, renamed, their attributes, serial and state changed,
 * deleted; a machine enrolling again with new inventory; collections created with rules,
 * their rules changed or removed, deleted; static members added and removed; a write racing
 * reads) interleaved with reads (a scoped administrator's device list, member counts, one
 * device's collections, a machine's policy over mutual TLS). After every step every answer
 * must equal what a fresh, uncached computation over the database gives
 * (membership.ts `freshMembership`).
 *
 * On SQLite, on PostgreSQL, and with two site instances on one PostgreSQL database (the second
 * in a worker thread: its own modules, connection pool and cache, as a second process has),
 * writes and reads going to either: a write through one must be seen by the other.
 *
 * The last tests show the check catches a broken invalidation: a write that goes around the
 * stores (so around the membership generation) is caught, through the fleet cache and through
 * a policy poll.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { startTestSite, adminWithRoles, httpsRequest } from "../support/site.ts";
import { startSecondSite } from "../support/second-site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { newMachine, request as mtlsRequest, type TestMachine } from "../support/device.ts";
import { issueBootToken } from "../../src/site/credentials.ts";
import { freshMembership, type Membership } from "../../src/site/membership.ts";
import { stores } from "../../src/storage/stores.ts";

type Attrs = { rack?: string; ram?: number; os?: string };
type Write =
  | { op: "create-device"; attrs: Attrs; into: number | null; state: "pending" | "approved" }
  | { op: "set-attributes"; d: number; attrs: Attrs }
  | { op: "rename"; d: number }
  | { op: "set-serial"; d: number; serial: string | null }
  | { op: "device-state"; d: number; to: "approve" | "block" | "unapprove" }
  | { op: "delete-device"; d: number }
  | { op: "inventory"; m: number; vendor: string }
  | { op: "create-collection"; rule: string | null }
  | { op: "set-rule"; c: number; rule: string | null }
  | { op: "delete-collection"; c: number }
  | { op: "add-member"; c: number; d: number }
  | { op: "remove-member"; c: number; d: number };
type Op =
  | Write
  | { op: "read"; what: "scoped-list" | "counts" | "device" | "policy"; i: number }
  | { op: "race"; write: Write; reads: number }
  /** Broken invalidation: a membership change written around the stores. */
  | { op: "rogue"; kind: "member" | "rule"; c: number; d: number };

const atom = fc.oneof(
  fc.constantFrom("a", "b", "c").map((r) => `attributes.rack == "${r}"`),
  fc.integer({ min: 1, max: 4 }).map((n) => `attributes.ram >= ${n}`),
  fc.constantFrom("approved", "pending", "blocked").map((s) => `state == "${s}"`),
  fc.constantFrom("Dell", "HP").map((v) => `attributes.vendor == "${v}"`),
  fc.constantFrom(`exists(attributes.os)`, `name like "d-1*"`, `serial == "S1"`, "true"),
);
const ruleArb: fc.Arbitrary<string | null> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 3, arbitrary: atom },
  { weight: 2, arbitrary: fc.tuple(atom, fc.constantFrom("and", "or"), atom).map(([a, op, b]) => `${a} ${op} ${b}`) },
  { weight: 1, arbitrary: atom.map((a) => `not (${a})`) },
);
const attrsArb: fc.Arbitrary<Attrs> = fc.record({ rack: fc.constantFrom("a", "b", "c"), ram: fc.integer({ min: 1, max: 4 }), os: fc.constantFrom("linux", "windows") }, { requiredKeys: [] });
const ix = fc.nat({ max: 30 });
const writeArb: fc.Arbitrary<Write> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant("create-device" as const), attrs: attrsArb, into: fc.option(ix, { nil: null }), state: fc.constantFrom("pending" as const, "approved" as const) }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant("set-attributes" as const), d: ix, attrs: attrsArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("rename" as const), d: ix }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("set-serial" as const), d: ix, serial: fc.constantFrom("S1", "S2", null) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("device-state" as const), d: ix, to: fc.constantFrom("approve" as const, "block" as const, "unapprove" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("delete-device" as const), d: ix }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("inventory" as const), m: ix, vendor: fc.constantFrom("Dell", "HP", "QEMU") }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("create-collection" as const), rule: ruleArb }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("set-rule" as const), c: ix, rule: ruleArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("delete-collection" as const), c: ix }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("add-member" as const), c: ix, d: ix }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("remove-member" as const), c: ix, d: ix }) },
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: writeArb },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("read" as const), what: fc.constantFrom("scoped-list" as const, "counts" as const, "device" as const, "policy" as const), i: ix }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("race" as const), write: writeArb, reads: fc.integer({ min: 1, max: 4 }) }) },
);

const TASK_SEQUENCE = "name: Membership probe\nsteps:\n  - name: Say hello\n    type: run-command\n    with: { command: \"echo hello\" }\n";

/** One site server and management point over the shared database. */
type Instance = { name: string; url: string; mpUrl: string; ca: string; close(): Promise<void> };

type Dev = { id: string; name: string; machine?: { m: TestMachine; mac: string; uuid: string } };
type Coll = { id: string; name: string; deployment: string };

const hex = (n: number, w: number) => n.toString(16).padStart(w, "0");
let serial = 0;

/**
 * Runs `ops` on a fresh site (and a second instance when `two`), checking after every step;
 * throws (an AssertionError naming the step) at the first answer that differs from a fresh
 * computation.
 */
async function runModel(database: "sqlite" | "postgres", two: boolean, ops: Op[]): Promise<void> {
  const t = await startTestSite({ database });
  const instances: Instance[] = [{ name: "first", url: t.url, mpUrl: t.mp.url, ca: t.ca, close: async () => {} }];
  const machines: TestMachine[] = [];
  const log: string[] = [];
  try {
    if (two) instances.push({ name: "second", ca: t.ca, ...await startSecondSite(t) });
    const on = (i: number) => instances[i % instances.length];
    const call = (i: number, method: string, p: string, body?: unknown, token = t.adminToken) =>
      httpsRequest(on(i).url, on(i).ca, method, p, { token, body });
    const ok = async (r: Promise<{ status: number; text: string; body: any }>, ...want: number[]) => {
      const x = await r;
      assert.ok((want.length ? want : [200, 201, 204]).includes(x.status), `${x.status} ${x.text} (after ${log.join(" → ")})`);
      return x;
    };

    const run = ++serial;
    const devices: Dev[] = [];
    const collections: Coll[] = [];
    let nextName = 0;
    await ok(call(0, "POST", "/api/v1/task-sequences", { document: TASK_SEQUENCE, format: "yaml" }));
    const addCollection = async (i: number, rule: string | null) => {
      const name = `c-${collections.length}-${nextName++}`;
      const c = await ok(call(i, "POST", "/api/v1/collections", { name, rule }));
      const d = await ok(call(i, "POST", "/api/v1/deployments", { name: `dep-${name}`, taskSequence: "Membership probe", collection: c.body.id, purpose: "available", bootPaths: ["pxe", "media"] }));
      collections.push({ id: c.body.id, name, deployment: d.body.id });
    };
    await addCollection(0, `attributes.rack == "a"`);
    await addCollection(0, null);
    await addCollection(0, `attributes.ram >= 3 or attributes.vendor == "Dell"`);
    // Two enrolled machines whose policies are read over mutual TLS; pre-approved, so they
    // enroll without a boot.
    for (let k = 0; k < 2; k++) {
      const mac = `52:54:00:4d:${hex(run & 0xff, 2)}:${hex(k, 2)}`;
      const uuid = `00000000-0000-4000-8000-${hex(run * 16 + k, 12)}`;
      const name = `m-${k}`;
      const r = await ok(call(0, "POST", "/api/v1/devices", { name, macs: [mac], smbiosUuid: uuid, state: "approved", attributes: { rack: k ? "a" : "b" },
        collections: [collections[1].name] }));
      const m = await newMachine(t, { macs: [mac], smbiosUuid: uuid });
      machines.push(m);
      await ok(m.enroll({ kind: "pre-approved" }), 201);
      devices.push({ id: r.body.id, name, machine: { m, mac, uuid } });
    }
    const scopes = [collections[0].id, collections[1].id];
    const scoped = await adminWithRoles(t, `scoped-${run}`, ["deployment-administrator"], scopes);

    const dev = (i: number) => devices[i % devices.length];
    const coll = (i: number) => (collections.length ? collections[i % collections.length] : undefined);
    const plain = (i: number) => {
      const others = devices.filter((d) => !d.machine);
      return others.length ? others[i % others.length] : undefined;
    };
    const policyOf = async (i: number, d: Dev) => {
      const x = await mtlsRequest(on(i).mpUrl, { method: "GET", path: "/mp/v1/policy?bootPath=pxe", ca: on(i).ca, key: d.machine!.m.keyPem, cert: d.machine!.m.certPem! });
      assert.equal(x.status, 200, `policy of ${d.name}: ${x.status} ${x.text}`);
      return (x.body.policy.deployments as { id: string }[]).map((p) => p.id).sort();
    };

    const write = async (w: Write, i: number): Promise<void> => {
      switch (w.op) {
        case "create-device": {
          const c = w.into === null ? undefined : coll(w.into);
          const name = `d-${nextName++}`;
          const r = await ok(call(i, "POST", "/api/v1/devices", { name, attributes: w.attrs, state: w.state, collections: c ? [c.name] : [] }));
          devices.push({ id: r.body.id, name });
          return;
        }
        case "set-attributes":
        case "rename":
        case "set-serial": {
          const d = dev(w.d);
          const body = w.op === "set-attributes" ? { attributes: w.attrs } : w.op === "set-serial" ? { serial: w.serial } : { name: (d.name = `d-${nextName++}`) };
          await ok(call(i, "PATCH", `/api/v1/devices/${d.id}`, body));
          return;
        }
        case "device-state": {
          const d = plain(w.d);
          if (d) await ok(call(i, "POST", `/api/v1/devices/${d.id}/${w.to}`));
          return;
        }
        case "delete-device": {
          const d = plain(w.d);
          if (!d) return;
          await ok(call(i, "DELETE", `/api/v1/devices/${d.id}`));
          devices.splice(devices.indexOf(d), 1);
          return;
        }
        case "inventory": {
          // The machine enrolls again (a boot token, as after a PXE boot), reporting new
          // inventory: its attributes change through the management point.
          const d = devices.filter((x) => x.machine)[w.m % 2];
          const token = (await issueBootToken(t.site, { deviceId: d.id, mac: d.machine!.mac, smbiosUuid: d.machine!.uuid })).token;
          const m = await newMachine(t, { macs: [d.machine!.mac], smbiosUuid: d.machine!.uuid });
          machines.push(m);
          await ok(m.enroll({ kind: "boot-token", token }, { vendor: w.vendor }), 201);
          d.machine!.m = m;
          return;
        }
        case "create-collection":
          await addCollection(i, w.rule);
          return;
        case "set-rule": {
          const c = coll(w.c);
          if (c) await ok(call(i, "PATCH", `/api/v1/collections/${c.id}`, { rule: w.rule }));
          return;
        }
        case "delete-collection": {
          const c = coll(w.c);
          // The scoped administrator's collections stay.
          if (!c || scopes.includes(c.id)) return;
          await ok(call(i, "DELETE", `/api/v1/deployments/${c.deployment}`));
          await ok(call(i, "DELETE", `/api/v1/collections/${c.id}`));
          collections.splice(collections.indexOf(c), 1);
          return;
        }
        case "add-member": {
          const c = coll(w.c);
          if (c) await ok(call(i, "POST", `/api/v1/collections/${c.id}/members`, { device: dev(w.d).id }));
          return;
        }
        case "remove-member": {
          const c = coll(w.c);
          if (c) await ok(call(i, "DELETE", `/api/v1/collections/${c.id}/members/${dev(w.d).id}`), 204, 404);
          return;
        }
      }
    };

    // Reads, each compared with a fresh computation made while nothing writes.
    const expectedIn = (fresh: Membership, d: Dev) => fresh.byDevice.get(d.id) ?? [];
    const reads = {
      async "scoped-list"(i: number, fresh: Membership) {
        const r = await ok(call(i, "GET", "/api/v1/devices", undefined, scoped));
        const want = devices.filter((d) => expectedIn(fresh, d).some((c) => scopes.includes(c))).map((d) => d.id).sort();
        assert.deepEqual((r.body as { id: string }[]).map((d) => d.id).sort(), want, `${on(i).name}: the scoped administrator's devices`);
      },
      async counts(i: number, fresh: Membership) {
        const r = await ok(call(i, "GET", "/api/v1/collections"));
        const got = Object.fromEntries((r.body as { id: string; memberCount: number }[]).map((c) => [c.id, c.memberCount]));
        assert.deepEqual(got, Object.fromEntries(fresh.collections.map((c) => [c.id, fresh.members.get(c.id)!.size])), `${on(i).name}: member counts`);
      },
      async device(i: number, fresh: Membership, k: number) {
        const d = dev(k);
        const r = await ok(call(i, "GET", `/api/v1/devices/${d.id}`, undefined, k % 2 ? scoped : t.adminToken), 200, 404);
        const want = expectedIn(fresh, d);
        if (k % 2 === 0) assert.deepEqual([...r.body.collections].sort(), [...want].sort(), `${on(i).name}: collections of ${d.name}`);
        else assert.equal(r.status, want.some((c) => scopes.includes(c)) ? 200 : 404, `${on(i).name}: ${d.name} seen by the scoped administrator`);
      },
      async policy(i: number, fresh: Membership, k: number) {
        const d = devices.filter((x) => x.machine)[k % 2];
        const byCollection = new Map(collections.map((c) => [c.id, c.deployment]));
        assert.deepEqual(await policyOf(i, d), expectedIn(fresh, d).map((c) => byCollection.get(c)!).sort(), `${on(i).name}: the policy of ${d.name}`);
      },
    };
    const fresh = () => freshMembership(stores(t.site.db));
    const checkAll = async (step: number) => {
      const f = await fresh();
      const order = (["scoped-list", "counts", "device", "policy"] as const).map((w, k) => ({ w, k: (k + step) % 4 })).sort((a, b) => a.k - b.k);
      // Every instance, in an order that changes with the step: a policy poll sometimes finds
      // the fleet's membership kept, sometimes not.
      for (const i of instances.keys()) {
        for (const { w } of order) await reads[w](i, f, step + i);
        await reads.device(i, f, step + i + 1);
        await reads.policy(i, f, step + 1);
      }
    };

    await checkAll(0);
    for (const [step, o] of ops.entries()) {
      log.push(JSON.stringify(o));
      const i = step % instances.length;
      if (o.op === "read") await reads[o.what](i, await fresh(), o.i);
      else if (o.op === "race") {
        // A write while reads are under way on every instance: whatever they answer, what is
        // kept afterwards must be right.
        // (A machine enrolling again meanwhile makes its old certificate fail: not checked here.)
        const m = devices.filter((x) => x.machine)[0].machine!.m;
        await Promise.all([write(o.write, i), ...Array.from({ length: o.reads }, (_, k) => k % 2
          ? call(k, "GET", "/api/v1/devices", undefined, scoped)
          : mtlsRequest(on(k).mpUrl, { method: "GET", path: "/mp/v1/policy?bootPath=pxe", ca: on(k).ca, key: m.keyPem, cert: m.certPem! }))]);
      } else if (o.op === "rogue") {
        const c = coll(o.c)!;
        if (o.kind === "member") {
          const now = await fresh();
          const d = devices.find((x) => !(now.byDevice.get(x.id) ?? []).includes(c.id));
          assert.ok(d, "a device outside the collection");
          await t.site.db.run(`INSERT INTO collection_members (collection_id, device_id) VALUES (?, ?)`, [c.id, d.id]);
        } else {
          await t.site.db.run(`UPDATE collections SET rule = ? WHERE id = ?`, [`name == "${dev(o.d).name}"`, c.id]);
        }
      } else await write(o, i);
      try {
        await checkAll(step + 1);
      } catch (err) {
        (err as Error).message += `\n  steps: ${log.join("\n         ")}`;
        throw err;
      }
    }
  } finally {
    for (const m of machines) m.close();
    for (const x of instances.slice(1)) await x.close();
    await t.close();
  }
}

const configurations = databasesUnderTest().flatMap<{ database: "sqlite" | "postgres"; two: boolean }>((database) =>
  database === "postgres" ? [{ database, two: false }, { database, two: true }] : [{ database, two: false }]);

for (const { database, two } of configurations) {
  const where = two ? "two site instances on one PostgreSQL database" : database;
  describe(`membership cache model on ${where}`, () => {
    it("after every write, every answer (scoped device list, member counts, a device's collections, a policy over mutual TLS) equals a fresh computation", async () => {
      await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 10, maxLength: 22 }), (ops) => runModel(database, two, ops)),
        { numRuns: two || database === "postgres" ? 3 : 4, endOnFailure: true });
    });

    it("catches a broken invalidation: a static member written around the stores is missed by the kept fleet membership", async () => {
      await assert.rejects(runModel(database, two, [{ op: "rogue", kind: "member", c: 0, d: 0 }]),
        (err: Error) => /member counts|scoped administrator|collections of/.test(err.message));
    });

    it("catches a broken invalidation: a rule written around the stores is missed by a policy poll", async () => {
      // Collection 0 holds rack "a" machines; m-0 is rack "b" until its name joins the rule.
      await assert.rejects(runModel(database, two, [{ op: "read", what: "policy", i: 0 }, { op: "rogue", kind: "rule", c: 0, d: 0 }]),
        (err: Error) => /policy of m-0|member counts|collections of|scoped administrator/.test(err.message));
    });
  });
}
