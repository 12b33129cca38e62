/**
 * Security scopes: a scoped administrator cannot pull anything into its scope. The devices it
 * can see or change are, after any sequence of its own operations, among those an
 * administrator without scopes put in its collections (plus the ones it created itself).
 * Everything here goes through the real API over HTTPS.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { startTestSite, adminWithRoles, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";

type Res = { status: number; body: any; text: string };

for (const database of databasesUnderTest()) {
  describe(`security scopes (${database})`, () => {
    let t: TestSite;
    const as = (token: string) => (m: string, p: string, body?: unknown): Promise<Res> => t.request(m, p, { token, body });
    let admin: ReturnType<typeof as>;
    let tsId: string;
    before(async () => {
      t = await startTestSite({ database });
      admin = as(t.adminToken);
      const ts = await admin("POST", "/api/v1/task-sequences", { document: { name: "Base", steps: [{ name: "Reboot", type: "reboot" }] } });
      assert.equal(ts.status, 201, ts.text);
      tsId = ts.body.id;
    });
    after(() => t.close());

    /** A lab: collection A (rule lab == A) scoped to a new Deployment Administrator, and devices in and out. */
    async function lab(tag: string) {
      const a = await admin("POST", "/api/v1/collections", { name: `${tag} A`, rule: `attributes.lab == '${tag}-a'` });
      const o = await admin("POST", "/api/v1/collections", { name: `${tag} Other`, rule: `attributes.lab == '${tag}-b'` });
      assert.equal(a.status, 201, a.text);
      const inside = (await admin("POST", "/api/v1/devices", { name: `${tag}-in`, attributes: { lab: `${tag}-a` } })).body;
      const outside = (await admin("POST", "/api/v1/devices", { name: `${tag}-out`, attributes: { lab: `${tag}-b` } })).body;
      const loose = (await admin("POST", "/api/v1/devices", { name: `${tag}-loose`, attributes: { lab: `${tag}-c` } })).body;
      await admin("POST", "/api/v1/variables", { scope: "device", target: outside.id, name: "Secret1", value: "out-of-scope-secret", secret: true });
      const token = await adminWithRoles(t, `${tag}.tech`, ["deployment-administrator"], [a.body.id]);
      return { a: a.body, o: o.body, inside, outside, loose, scoped: as(token), username: `${tag}.tech` };
    }

    /** What an administrator without scopes sees of a collection and the site's deployments and variables. */
    async function snapshot(collectionId: string) {
      return {
        collection: (await admin("GET", `/api/v1/collections/${collectionId}`)).body,
        members: (await admin("GET", `/api/v1/collections/${collectionId}/members`)).body,
        deployments: (await admin("GET", "/api/v1/deployments")).body,
        variables: (await admin("GET", "/api/v1/variables")).body,
      };
    }

    async function deniedAudited(username: string, method: string, path: string) {
      const r = await admin("GET", `/api/v1/audit?action=request.denied&actor=${encodeURIComponent(`admin:${username}`)}&limit=1000`);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.body.some((e: { object: string; details: { code: string } }) => e.object === `${method} ${path}` && e.details.code === "SLIPWAY_OUT_OF_SCOPE"),
        `no request.denied entry for ${method} ${path}: ${JSON.stringify(r.body)}`);
    }

    it("a scoped administrator cannot add a device outside its scope as a static member, and the answer does not tell whether it exists", async () => {
      const l = await lab("s1");
      const before = await snapshot(l.a.id);
      for (const device of [l.outside.id, l.outside.name, l.loose.name]) {
        const r = await l.scoped("POST", `/api/v1/collections/${l.a.id}/members`, { device });
        assert.equal(r.status, 403, r.text);
        assert.equal(r.body.code, "SLIPWAY_OUT_OF_SCOPE");
      }
      const missing = await l.scoped("POST", `/api/v1/collections/${l.a.id}/members`, { device: "no-such-device" });
      assert.equal(missing.status, 403, "a missing device is answered like an out-of-scope one");
      assert.equal(missing.body.message.replace("no-such-device", "X"), (await l.scoped("POST", `/api/v1/collections/${l.a.id}/members`, { device: l.loose.name })).body.message.replace(l.loose.name, "X"));
      assert.deepEqual(await snapshot(l.a.id), before, "nothing changed");
      assert.equal((await l.scoped("GET", `/api/v1/devices/${l.outside.id}`)).status, 404);
      assert.equal((await l.scoped("PATCH", `/api/v1/devices/${l.outside.id}`, { attributes: { lab: "s1-a" } })).status, 404);
      assert.equal((await l.scoped("GET", `/api/v1/variables?scope=device&target=${l.outside.id}`)).status, 404);
      assert.deepEqual((await l.scoped("GET", "/api/v1/devices")).body.map((d: { name: string }) => d.name), ["s1-in"]);
      // A device already in scope may be added (here: made static too).
      assert.equal((await l.scoped("POST", `/api/v1/collections/${l.a.id}/members`, { device: l.inside.name })).status, 201);
      await deniedAudited(l.username, "POST", `/api/v1/collections/${l.a.id}/members`);
    });

    it("a scoped administrator cannot set or change a collection rule, not even to one that matches nothing today; it may remove one", async () => {
      const l = await lab("s2");
      const before = await snapshot(l.a.id);
      for (const rule of ["true", "attributes.lab == 's2-b'", "attributes.lab != 's2-z'", "attributes.lab == 's2-tomorrow'", "attributes.lab == 's2-a' or name == 's2-out'"]) {
        const r = await l.scoped("PATCH", `/api/v1/collections/${l.a.id}`, { rule });
        assert.equal(r.status, 403, `${rule}: ${r.text}`);
        assert.equal(r.body.code, "SLIPWAY_OUT_OF_SCOPE");
      }
      assert.deepEqual(await snapshot(l.a.id), before, "nothing changed");
      assert.deepEqual((await l.scoped("GET", "/api/v1/devices")).body.map((d: { name: string }) => d.name), ["s2-in"]);
      await deniedAudited(l.username, "PATCH", `/api/v1/collections/${l.a.id}`);
      // The rule sent back unchanged (a console saving the whole form), a rename: allowed.
      const same = await l.scoped("PATCH", `/api/v1/collections/${l.a.id}`, { name: "s2 A renamed", rule: "attributes.lab=='s2-a'" });
      assert.equal(same.status, 200, same.text);
      // Removing the rule only shrinks the collection.
      const removed = await l.scoped("PATCH", `/api/v1/collections/${l.a.id}`, { rule: null });
      assert.equal(removed.status, 200, removed.text);
      assert.deepEqual((await l.scoped("GET", "/api/v1/devices")).body, []);
      // And it cannot be put back by the scoped administrator.
      assert.equal((await l.scoped("PATCH", `/api/v1/collections/${l.a.id}`, { rule: "attributes.lab == 's2-a'" })).status, 403);
    });

    it("a device created tomorrow that a scoped administrator's rule would match stays out of its scope", async () => {
      const l = await lab("s3");
      assert.equal((await l.scoped("PATCH", `/api/v1/collections/${l.a.id}`, { rule: "attributes.lab == 's3-tomorrow'" })).status, 403);
      await admin("POST", "/api/v1/devices", { name: "s3-tomorrow", attributes: { lab: "s3-tomorrow" } });
      assert.equal((await l.scoped("GET", "/api/v1/devices/s3-tomorrow")).status, 404);
    });

    it("a scoped administrator cannot create a collection, nor aim deployments or variables outside its scope", async () => {
      const l = await lab("s4");
      const before = await snapshot(l.o.id);
      const created = await l.scoped("POST", "/api/v1/collections", { name: "s4 mine", rule: "true" });
      assert.equal(created.status, 403);
      assert.equal(created.body.code, "SLIPWAY_OUT_OF_SCOPE");
      assert.equal((await admin("GET", "/api/v1/collections/s4%20mine")).status, 404);
      assert.equal((await l.scoped("POST", "/api/v1/deployments", { name: "s4 out", taskSequence: tsId, collection: l.o.id })).status, 400);
      const dep = await l.scoped("POST", "/api/v1/deployments", { name: "s4 in", taskSequence: tsId, collection: l.a.id });
      assert.equal(dep.status, 201, dep.text);
      assert.equal((await l.scoped("PATCH", `/api/v1/deployments/${dep.body.id}`, { collection: l.o.id })).status, 400);
      assert.equal((await admin("GET", `/api/v1/deployments/${dep.body.id}`)).body.collectionId, l.a.id);
      assert.equal((await l.scoped("POST", "/api/v1/variables", { scope: "device", target: l.outside.id, name: "X", value: "1" })).status, 404);
      assert.equal((await l.scoped("POST", "/api/v1/variables", { scope: "collection", target: l.o.id, name: "X", value: "1" })).status, 404);
      const after = await snapshot(l.o.id);
      assert.deepEqual(after.members, before.members);
      assert.deepEqual(after.variables, before.variables);
      assert.ok(!after.deployments.some((d: { collectionId: string }) => d.collectionId === l.o.id));
      await deniedAudited(l.username, "POST", "/api/v1/collections");
    });

    it("property: after any sequence of a scoped administrator's operations, it sees only devices in its scope as defined without scopes", async () => {
      let run = 0;
      const Coll = fc.constantFrom("S1", "S2", "O");
      const Lab = fc.constantFrom("a", "b", "c");
      const Rule = fc.constantFrom("true", "false", "lab:a", "lab:b", "lab:c", "not-a", "null", "same");
      const Op = fc.oneof(
        fc.record({ op: fc.constant("addMember" as const), coll: Coll, dev: fc.nat() }),
        fc.record({ op: fc.constant("removeMember" as const), coll: Coll, dev: fc.nat() }),
        fc.record({ op: fc.constant("setRule" as const), coll: Coll, rule: Rule }),
        fc.record({ op: fc.constant("createCollection" as const), rule: Rule }),
        fc.record({ op: fc.constant("setVariable" as const), dev: fc.nat(), secret: fc.boolean() }),
        fc.record({ op: fc.constant("collectionVariable" as const), coll: Coll }),
        fc.record({ op: fc.constant("deploy" as const), coll: Coll }),
        fc.record({ op: fc.constant("retarget" as const), coll: Coll }),
        fc.record({ op: fc.constant("scopedCreateDevice" as const), lab: Lab }),
        fc.record({ op: fc.constant("patchDevice" as const), dev: fc.nat(), lab: Lab }),
        fc.record({ op: fc.constant("deleteDevice" as const), dev: fc.nat() }),
        fc.record({ op: fc.constant("adminCreateDevice" as const), lab: Lab, into: fc.constantFrom("none", "S2", "O") }),
      );
      await fc.assert(fc.asyncProperty(fc.array(Op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const tag = `m${run++}x${Math.random().toString(36).slice(2, 6)}`;
        const labRule = (x: string) => `attributes.lab == '${tag}-${x}'`;
        const ruleText = (r: string): string | null => (r === "null" ? null : r.startsWith("lab:") ? labRule(r.slice(4)) : r === "not-a" ? `attributes.lab != '${tag}-a'` : r);
        const coll = async (name: string, rule: string | null) => (await admin("POST", "/api/v1/collections", { name: `${tag} ${name}`, rule })).body.id as string;
        // S1 is a rule collection and S2 a static one, both in scope; O is outside.
        const ids: Record<string, string> = { S1: await coll("S1", labRule("a")), S2: await coll("S2", null), O: await coll("O", labRule("b")) };
        const username = `${tag}.tech`;
        const scoped = as(await adminWithRoles(t, username, ["deployment-administrator"], [ids.S1, ids.S2]));
        // The model: each device's lab attribute and how it came to be.
        const labOf = new Map<string, string>();
        const names = new Map<string, string>();
        const adminStatics = new Set<string>(); // put in S2 by the administrator without scopes
        const createdByScoped = new Set<string>();
        let rules: Record<string, string | null> = { S1: labRule("a"), S2: null };
        let deployment: string | null = null;
        let n = 0;
        const adminDevice = async (labX: string, into: string) => {
          const name = `${tag}-d${n++}`;
          const r = await admin("POST", "/api/v1/devices", { name, attributes: { lab: `${tag}-${labX}` }, collections: into === "none" ? [] : [ids[into]] });
          assert.equal(r.status, 201, r.text);
          labOf.set(r.body.id, labX);
          names.set(r.body.id, name);
          if (into === "S2") adminStatics.add(r.body.id);
        };
        for (const x of ["a", "b", "c"]) await adminDevice(x, "none");
        await adminDevice("c", "S2");
        await adminDevice("c", "O");
        /** The devices the scope may hold: matches of S1's rule as the administrator set it, its S2 members, and the scoped administrator's own. */
        const allowed = () => new Set([...labOf.keys()].filter((d) => labOf.get(d) === "a" || adminStatics.has(d) || createdByScoped.has(d)));
        const pick = (k: number) => { const all = [...labOf.keys()]; return k % (all.length + 1) === all.length ? "no-such-device" : all[k % (all.length + 1)]; };
        let visible = new Set<string>();

        const check = async (after: string) => {
          const ok = allowed();
          const list = await scoped("GET", "/api/v1/devices");
          assert.equal(list.status, 200);
          const mine = (list.body as { id: string; name: string }[]).filter((d) => d.name.startsWith(`${tag}-`));
          for (const d of mine) assert.ok(ok.has(d.id), `after ${after}: scoped administrator sees ${d.name}`);
          visible = new Set(mine.map((d) => d.id));
          for (const d of list.body as { id: string; name: string }[]) assert.ok(d.name.startsWith(`${tag}-`), `after ${after}: sees a device of another run: ${d.name}`);
          for (const id of labOf.keys()) {
            if (ok.has(id)) continue;
            assert.equal((await scoped("GET", `/api/v1/devices/${id}`)).status, 404, `after ${after}: GET ${names.get(id)}`);
          }
          for (const c of ["S1", "S2"]) {
            const m = await admin("GET", `/api/v1/collections/${ids[c]}/members`);
            for (const d of m.body as { id: string; name: string }[]) assert.ok(ok.has(d.id), `after ${after}: ${c} holds ${d.name}`);
          }
          const colls = (await scoped("GET", "/api/v1/collections")).body as { id: string }[];
          assert.deepEqual(colls.map((c) => c.id).sort(), [ids.S1, ids.S2].sort(), `after ${after}: collections`);
          for (const v of (await scoped("GET", "/api/v1/variables")).body as { scope: string; target: string }[]) {
            if (v.scope === "device") assert.ok(ok.has(v.target), `after ${after}: sees a variable of ${v.target}`);
            if (v.scope === "collection") assert.ok([ids.S1, ids.S2].includes(v.target), `after ${after}: sees a collection variable of ${v.target}`);
          }
          for (const d of (await scoped("GET", "/api/v1/deployments")).body as { collectionId: string }[]) {
            assert.ok([ids.S1, ids.S2].includes(d.collectionId), `after ${after}: deployment to ${d.collectionId}`);
          }
        };
        const refused = (r: Res, what: string, statuses = [403]) => {
          assert.ok(statuses.includes(r.status), `${what}: expected ${statuses.join(" or ")}, got ${r.status} ${r.text}`);
          if (r.status === 403) assert.equal(r.body.code, "SLIPWAY_OUT_OF_SCOPE", what);
        };

        await check("setup");
        for (const o of ops) {
          const what = JSON.stringify(o);
          switch (o.op) {
            case "addMember": {
              const dev = pick(o.dev);
              const r = await scoped("POST", `/api/v1/collections/${ids[o.coll]}/members`, { device: dev });
              if (o.coll === "O") refused(r, what, [404]);
              else if (visible.has(dev)) assert.equal(r.status, 201, `${what}: ${r.text}`);
              else refused(r, what);
              break;
            }
            case "removeMember": {
              const r = await scoped("DELETE", `/api/v1/collections/${ids[o.coll]}/members/${pick(o.dev)}`);
              if (o.coll === "O" || !visible.has(pick(o.dev))) refused(r, what, [404]);
              break;
            }
            case "setRule": {
              const rule = o.rule === "same" && o.coll !== "O" ? rules[o.coll] : ruleText(o.rule);
              const r = await scoped("PATCH", `/api/v1/collections/${ids[o.coll]}`, { rule });
              if (o.coll === "O") refused(r, what, [404]);
              else if (rule === null || rule === rules[o.coll]) {
                assert.equal(r.status, 200, `${what}: ${r.text}`);
                rules = { ...rules, [o.coll]: rule };
              } else refused(r, what);
              break;
            }
            case "createCollection":
              refused(await scoped("POST", "/api/v1/collections", { name: `${tag} new`, rule: ruleText(o.rule) }), what);
              break;
            case "setVariable": {
              const dev = pick(o.dev);
              const r = await scoped("POST", "/api/v1/variables", { scope: "device", target: dev, name: "V", value: "value-1234", secret: o.secret });
              if (visible.has(dev)) assert.ok([200, 201, 409].includes(r.status), `${what}: ${r.text}`);
              else refused(r, what, [404]);
              break;
            }
            case "collectionVariable": {
              const r = await scoped("POST", "/api/v1/variables", { scope: "collection", target: ids[o.coll], name: "C", value: "1" });
              if (o.coll === "O") refused(r, what, [404]);
              else assert.ok([200, 201].includes(r.status), `${what}: ${r.text}`);
              break;
            }
            case "deploy": {
              const r = await scoped("POST", "/api/v1/deployments", { name: `${tag} dep ${n++}`, taskSequence: tsId, collection: ids[o.coll] });
              if (o.coll === "O") refused(r, what, [400]);
              else {
                assert.equal(r.status, 201, `${what}: ${r.text}`);
                deployment = r.body.id;
              }
              break;
            }
            case "retarget": {
              if (!deployment) break;
              const r = await scoped("PATCH", `/api/v1/deployments/${deployment}`, { collection: ids[o.coll] });
              if (o.coll === "O") refused(r, what, [400]);
              else assert.equal(r.status, 200, `${what}: ${r.text}`);
              break;
            }
            case "scopedCreateDevice": {
              const name = `${tag}-s${n++}`;
              const r = await scoped("POST", "/api/v1/devices", { name, attributes: { lab: `${tag}-${o.lab}` }, collections: [ids.S2] });
              assert.equal(r.status, 201, `${what}: ${r.text}`);
              labOf.set(r.body.id, o.lab);
              names.set(r.body.id, name);
              createdByScoped.add(r.body.id);
              break;
            }
            case "patchDevice": {
              const dev = pick(o.dev);
              const r = await scoped("PATCH", `/api/v1/devices/${dev}`, { attributes: { lab: `${tag}-${o.lab}` } });
              if (visible.has(dev)) {
                assert.equal(r.status, 200, `${what}: ${r.text}`);
                labOf.set(dev, o.lab);
              } else refused(r, what, [404]);
              break;
            }
            case "deleteDevice": {
              const dev = pick(o.dev);
              const r = await scoped("DELETE", `/api/v1/devices/${dev}`);
              if (visible.has(dev)) {
                assert.equal(r.status, 204, `${what}: ${r.text}`);
                labOf.delete(dev);
              } else refused(r, what, [404]);
              break;
            }
            case "adminCreateDevice":
              await adminDevice(o.lab, o.into);
              break;
          }
          await check(what);
        }
      }), { numRuns: database === "sqlite" ? 12 : 6, endOnFailure: true });
    });
  });
}
