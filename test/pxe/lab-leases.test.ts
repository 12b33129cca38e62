/**
 * Lab DHCP leases (lab-leases.ts) against the real lease store, SQLite and PostgreSQL: no
 * root, no sockets. What a machine is offered and bound, what a RELEASE or DECLINE may end,
 * and the limits that keep one device, or a crowd of pending ones, from taking the pool.
 * The same rules over the wire, in a namespace, are lab-dhcp-attacks.test.ts and lab-dhcp-model.test.ts.
 */
import { describe, it, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { stores } from "../../src/storage/stores.ts";
import { parseRange } from "../../src/domain/ip-pool.ts";
import { LabLeases, MAX_DECLINED_PER_DEVICE, type LeaseQuery } from "../../src/roles/distribution/lab-leases.ts";
import type { BootIdentity } from "../../src/roles/distribution/boot-identity-cache.ts";

const SERVER = "10.0.0.1";
const POOL = parseRange("10.0.0.100-10.0.0.103");

for (const database of databasesUnderTest()) {
  describe(`lab DHCP leases on ${database}`, () => {
    let core: SiteCore;
    let leases: LabLeases;
    let n = 0;
    before(async () => {
      core = await openSiteCore(database);
    });
    after(() => core?.close());
    beforeEach(async () => {
      await core.site.db.run(`DELETE FROM dhcp_leases`);
      await core.site.db.run(`DELETE FROM dhcp_declined`);
      leases = new LabLeases({ db: core.site.db, now: core.site.now, offerSeconds: 60, declineSeconds: 600 });
    });

    const mac = () => `52:54:00:1e:${(++n >> 8).toString(16).padStart(2, "0")}:${(n & 255).toString(16).padStart(2, "0")}`;
    /** A device on record with its MACs (approved unless said otherwise). */
    async function device(macs: string[], state: "approved" | "pending" = "approved", uuid: string | null = null): Promise<BootIdentity> {
      const d = await stores(core.site.db).devices.create({ name: `lease-${++n}`, macs, smbiosUuid: uuid, serial: null, state, attributes: {} }, core.site.now().toISOString());
      return { id: d.id, name: d.name, state: d.state };
    }
    const ask = (m: string, d: BootIdentity, o: Partial<LeaseQuery> = {}) =>
      leases.lease({ range: POOL, serverAddresses: [SERVER], mac: m, device: d, request: false, leaseSeconds: 600, ...o });
    /** DISCOVER then REQUEST of what was offered: the bound address. */
    async function bind(m: string, d: BootIdentity, o: Partial<LeaseQuery> = {}): Promise<string> {
      const { ip } = await ask(m, d, o);
      assert.ok(ip, "an offer");
      const ack = await ask(m, d, { ...o, request: true, requested: ip });
      assert.deepEqual(ack, { ip });
      return ip!;
    }
    const held = async (m: string) => stores(core.site.db).leases.byMac(m);

    it("an offer reserves the address for the offer time only; a REQUEST binds it for the lease time", async () => {
      const [a, b] = [mac(), mac()];
      const da = await device([a]);
      const db = await device([b]);
      assert.deepEqual(await ask(a, da), { ip: "10.0.0.100" });
      assert.equal((await held(a))?.state, "offered");
      assert.deepEqual(await ask(b, db), { ip: "10.0.0.101" }, "the offered address is not offered again");
      assert.deepEqual(await ask(b, db, { requested: "10.0.0.100" }), { ip: "10.0.0.101" }, "not even asked for by name; b keeps its own offer");
      core.advance(61_000);
      const c = mac();
      assert.deepEqual(await ask(c, await device([c]), { requested: "10.0.0.100" }), { ip: "10.0.0.100" }, "a's offer expired: free again");
      assert.equal(await bind(a, da), "10.0.0.101", "b's offer expired too");
      const bound = await held(a);
      assert.equal(bound?.state, "bound");
      assert.equal(Date.parse(bound!.expiresAt) - core.site.now().getTime() > 500_000, true, "bound for the lease time");
    });

    it("a REQUEST for another address than the one the client may have is NAKed; the server's addresses are never offered", async () => {
      const a = mac();
      const da = await device([a]);
      const { ip } = await ask(a, da, { serverAddresses: [SERVER, "10.0.0.100"] });
      assert.equal(ip, "10.0.0.101");
      assert.deepEqual(await ask(a, da, { request: true, requested: "10.0.0.103", serverAddresses: [SERVER, "10.0.0.100"] }), { ip: "10.0.0.101", nak: true }, "not what it was offered: NAK");
      assert.equal((await held(a))?.state, "offered", "a NAK binds nothing");
      const b = mac();
      const db = await device([b]);
      assert.deepEqual(await ask(b, db, { request: true, requested: "10.0.0.101" }), { ip: "10.0.0.100", nak: true }, "someone else's offer: NAK");
      assert.equal(await held(b), undefined);
      assert.deepEqual(await ask(b, db, { request: true, requested: "10.0.0.103" }), { ip: "10.0.0.103" }, "a free address asked for by name (INIT-REBOOT)");
    });

    it("machines asking at once never get one address, and an exhausted pool offers nothing", async () => {
      const macs = Array.from({ length: 6 }, mac);
      const devices = await Promise.all(macs.map((m) => device([m])));
      const settled = await Promise.allSettled(macs.map((m, i) => ask(m, devices[i], { requested: "10.0.0.100" })));
      const ips = settled.flatMap((r) => (r.status === "fulfilled" && r.value.ip ? [r.value.ip] : []));
      assert.equal(new Set(ips).size, ips.length, `one address twice: ${ips}`);
      // On PostgreSQL two transactions may pick one free address at once: UNIQUE(ip) refuses the
      // second, which gets no answer (its client asks again), never the address.
      for (const r of settled) if (r.status === "rejected") assert.match(String(r.reason?.message), /unique|UNIQUE/);
      const rows = await stores(core.site.db).leases.all();
      assert.equal(new Set(rows.map((l) => l.ip)).size, rows.length);
      const again = [];
      for (const [i, m] of macs.entries()) again.push((await ask(m, devices[i])).ip);
      assert.equal(again.filter(Boolean).length, 4);
      assert.equal(new Set(again.filter(Boolean)).size, 4);
      assert.equal(again.filter((ip) => ip === undefined).length, 2, "the pool is exhausted: nothing for the last two");
    });

    it("a RELEASE ends only the sender's own binding, which then waits for it while other addresses are free", async () => {
      const [a, b] = [mac(), mac()];
      const [da, db] = [await device([a]), await device([b])];
      const ipA = await bind(a, da);
      assert.equal(await leases.release(b, ipA), false, "b holds no such lease");
      assert.equal((await held(a))?.state, "bound");
      assert.equal(await leases.release(a, "10.0.0.103"), false, "not a's address");
      assert.equal(await leases.release(a, ipA), true);
      assert.equal((await held(a))?.state, "released");
      assert.notEqual((await ask(b, db)).ip, ipA, "kept for a");
      assert.deepEqual(await ask(a, da), { ip: ipA }, "a gets it back");
    });

    it("a DECLINE counts only for the sender's binding; the address rests; a device declining too many is refused", async () => {
      const [a, b] = [mac(), mac()];
      const [da, db] = [await device([a]), await device([b])];
      const ipA = await bind(a, da);
      assert.equal(await leases.decline(b, ipA), "refused");
      assert.equal(await leases.decline(a, "10.0.0.103"), "refused");
      assert.equal(await leases.decline(a, ipA), "declined");
      assert.equal(await held(a), undefined);
      assert.notEqual((await ask(b, db, { requested: ipA })).ip, ipA, "resting");
      const wide = { range: parseRange("10.0.0.100-10.0.0.109") };
      for (let i = 1; i < MAX_DECLINED_PER_DEVICE; i++) assert.equal(await leases.decline(a, await bind(a, da, wide)), "declined");
      const last = await bind(a, da, wide);
      assert.equal(await leases.decline(a, last), "too-many");
      assert.equal((await held(a))?.ip, last, "a refused DECLINE ends nothing");
      core.advance(601_000);
      assert.deepEqual(await ask(b, db, { requested: ipA }), { ip: ipA }, "rested long enough");
    });

    it("a choice of another server's offer drops ours, never a binding", async () => {
      const [a, b] = [mac(), mac()];
      const [da, db] = [await device([a]), await device([b])];
      await ask(a, da);
      await leases.dropOffer(a);
      assert.equal(await held(a), undefined);
      await bind(b, db);
      await leases.dropOffer(b);
      assert.equal((await held(b))?.state, "bound");
    });

    it("a device known only by its SMBIOS UUID gets one address for all its unrecorded MACs", async () => {
      const onRecord = mac();
      const d = await device([onRecord], "approved", `6f1f4a52-1c9b-4f7e-9d7e-${String(n).padStart(12, "0")}`);
      const [x, y] = [mac(), mac()];
      assert.ok((await ask(x, d)).ip, "the first unrecorded MAC");
      assert.deepEqual(await ask(y, d), { refused: "the device already holds an address for a MAC not on its record" });
      assert.ok((await ask(onRecord, d)).ip, "its own MAC still gets one");
    });

    it("devices awaiting approval hold at most half the pool; approved ones still find an address", async () => {
      const pending = await Promise.all([mac(), mac(), mac()].map(async (m) => ({ m, d: await device([m], "pending") })));
      assert.ok((await ask(pending[0].m, pending[0].d)).ip);
      assert.ok((await ask(pending[1].m, pending[1].d)).ip);
      assert.deepEqual(await ask(pending[2].m, pending[2].d), { refused: "devices awaiting approval already hold half of the pool" });
      const a = mac();
      assert.ok((await ask(a, await device([a]))).ip);
      assert.ok((await ask(pending[0].m, pending[0].d)).ip, "a pending device keeps the address it holds");
    });

    it("a released address is a new address: taking it back counts against the limits again", async () => {
      const [p0, p1, p2] = await Promise.all([mac(), mac(), mac()].map(async (m) => ({ m, d: await device([m], "pending") })));
      const ip0 = await bind(p0.m, p0.d);
      assert.equal(await leases.release(p0.m, ip0), true);
      await bind(p1.m, p1.d);
      await bind(p2.m, p2.d);
      assert.deepEqual(await ask(p0.m, p0.d), { refused: "devices awaiting approval already hold half of the pool" });
    });

    it("under any sequence of DISCOVERs, REQUESTs, RELEASEs, DECLINEs and time, no address is given to two MACs and none of the server's", async () => {
      const macs = [mac(), mac(), mac(), mac(), mac()];
      const devices = await Promise.all(macs.map((m) => device([m])));
      const op = fc.record({
        who: fc.nat(macs.length - 1),
        kind: fc.constantFrom("discover", "request", "release", "decline", "clock"),
        requested: fc.option(fc.integer({ min: 99, max: 104 }), { nil: undefined }),
        seconds: fc.constantFrom(5, 61, 601),
      });
      await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 15 }), async (ops) => {
        await core.site.db.run(`DELETE FROM dhcp_leases`);
        await core.site.db.run(`DELETE FROM dhcp_declined`);
        for (const o of ops) {
          const m = macs[o.who];
          const requested = o.requested === undefined ? undefined : `10.0.0.${o.requested}`;
          if (o.kind === "clock") core.advance(o.seconds * 1000);
          else if (o.kind === "release") await leases.release(m, requested ?? "10.0.0.100");
          else if (o.kind === "decline") await leases.decline(m, requested ?? "10.0.0.100");
          else {
            const got = await ask(m, devices[o.who], { request: o.kind === "request", requested, serverAddresses: [SERVER, "10.0.0.102"] });
            if (got.ip && !got.nak) {
              assert.notEqual(got.ip, "10.0.0.102", "the server's own address");
              const now = core.site.now().toISOString();
              const others = (await stores(core.site.db).leases.all()).filter((l) => l.mac !== m && l.state !== "released" && l.expiresAt > now);
              assert.ok(!others.some((l) => l.ip === got.ip), `${got.ip} given to ${m} while ${others.find((l) => l.ip === got.ip)?.mac} holds it`);
            }
          }
        }
      }), { numRuns: 25 });
    });
  });
}
