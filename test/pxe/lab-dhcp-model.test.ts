/**
 * Lab DHCP leases as a property over random sequences (fast-check): honest machines DISCOVER,
 * REQUEST, renew, RELEASE (from their own address) and DECLINE; a spoofer on the same link
 * sends RELEASEs and DECLINEs naming other machines' leases in every wrong way, asks for their
 * addresses, and the clock moves past offers, leases and declined rests. After every step, on
 * the wire and in the database: no address is OFFERed or ACKed to a MAC while another MAC's
 * lease certainly holds it, a live lease's renewal is never NAKed, and the spoofer never ends
 * a lease it does not hold. Real UDP sockets in a namespace (lab-dhcp-wire.ts).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { startTestSite, type TestSite } from "../support/site.ts";
import { createLabLink, T, type LabLink, type Packet, type Reply } from "./lab-dhcp-wire.ts";
import { startPxeResponder, type PxeResponder } from "../../src/roles/distribution/pxe-responder.ts";
import { openBoundUdpSocket } from "../../src/net/bound-udp.ts";
import { parseRange } from "../../src/domain/ip-pool.ts";
import { stores } from "../../src/storage/stores.ts";

if (process.getuid?.() !== 0) throw new Error("the lab DHCP tests need root (network namespaces): run scripts/test.sh as root");

const LEASE_S = 120;
const HONEST = 3;

type Op =
  | { kind: "dora" | "renew" | "release" | "decline"; who: number }
  | { kind: "spoof"; how: number; victim: number }
  | { kind: "clock"; seconds: number };

const ops: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("dora" as const), who: fc.nat(HONEST - 1) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constantFrom("renew" as const, "release" as const, "decline" as const), who: fc.nat(HONEST - 1) }) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("spoof" as const), how: fc.nat(9), victim: fc.nat(HONEST - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("clock" as const), seconds: fc.constantFrom(5, 35, 95, 125) }) },
);

describe("lab DHCP leases under honest clients and a spoofer (model-based)", () => {
  let t: TestSite;
  let link: LabLink;
  let pxe: PxeResponder | undefined;
  let offset = 0;
  let run = 0;
  const now = () => Date.now() + offset;
  const ip = (h: number) => `${link.net}.${h}`;
  const xid = () => randomBytes(4).readUInt32BE(0);
  const bound = new Set<string>(); // addresses the namespace already carries

  before(async () => {
    t = await startTestSite({ now: () => new Date(now()) });
    link = await createLabLink();
  });
  after(async () => {
    await pxe?.close();
    await link?.close();
    await t?.close();
  });

  it("no address is given to two MACs while a lease holds it, and a spoofer ends no lease", { timeout: 300_000 }, async () => {
    await fc.assert(fc.asyncProperty(fc.array(ops, { minLength: 5, maxLength: 22 }), async (sequence) => {
      run++;
      await pxe?.close();
      await t.site.db.run(`DELETE FROM dhcp_leases`);
      await t.site.db.run(`DELETE FROM dhcp_declined`).catch(() => {}); // absent before lab DHCP kept declined addresses
      pxe = await startPxeResponder({
        site: t.site, links: [{ name: link.device, address: link.server, netmask: "255.255.255.0" }], mode: "dhcp", unknown: "deny",
        bootBaseUrl: () => `http://${link.server}:8080`, openSocket: openBoundUdpSocket, ranges: [parseRange(`${ip(100)}-${ip(107)}`)],
        leaseSeconds: LEASE_S, offerSeconds: 30, declineSeconds: 90,
      });
      const d = stores(t.site.db).devices;
      const mk = async (role: string) => {
        const mac = `52:54:00:${randomBytes(3).toString("hex").replace(/(..)(?!$)/g, "$1:")}`;
        await d.create({ name: `model-${run}-${role}-${mac}`, macs: [mac], smbiosUuid: null, serial: null, state: "approved", attributes: {} }, new Date(now()).toISOString());
        return mac;
      };
      const honest: string[] = [];
      for (let i = 0; i < HONEST; i++) honest.push(await mk(`h${i}`));
      const spoofer = await mk("s");
      const barrier = await mk("b");
      /** What the wire said: who holds which address, from when (lower bound) until (lower bound of the server's expiry). */
      const held = new Map<string, { mac: string; until: number }>();
      const live = (ip: string) => {
        const h = held.get(ip);
        return h && now() < h.until ? h : undefined;
      };
      const holding = (mac: string) => [...held].find(([, h]) => h.mac === mac)?.[0];

      /** Sends `p` from the clients' socket and returns its answer, checking every OFFER and ACK against the leases held. */
      async function ask(p: Packet, from = "c"): Promise<Reply | undefined> {
        const x = xid();
        await link.send(from, { ...p, xid: x });
        const wanted: number[] = p.type === T.Discover ? [T.Offer] : [T.Ack, T.Nak];
        const r = await link.next("c", (m) => m.xid === x && wanted.includes(m.type!), 800);
        if (r && (r.type === T.Offer || r.type === T.Ack)) {
          const other = live(r.yiaddr);
          assert.ok(!other || other.mac === p.mac, `${r.yiaddr} was ${r.type === T.Ack ? "ACKed" : "offered"} to ${p.mac} while ${other?.mac}'s lease holds it`);
        }
        return r;
      }
      async function acquire(mac: string): Promise<void> {
        const before = now();
        const offer = await ask({ type: T.Discover, mac });
        if (!offer) return;
        const ack = await ask({ type: T.Request, mac, requested: offer.yiaddr, serverId: link.server });
        if (ack?.type === T.Ack) {
          const old = holding(mac);
          if (old) held.delete(old);
          held.set(ack.yiaddr, { mac, until: before + LEASE_S * 1000 });
        }
      }

      for (const op of sequence) {
        if (op.kind === "clock") offset += op.seconds * 1000;
        else if (op.kind === "dora") await acquire(honest[op.who]);
        else if (op.kind === "spoof" && op.how === 9) await acquire(spoofer);
        else if (op.kind === "spoof") {
          const victim = honest[op.victim];
          const theirs = holding(victim) ?? ip(100 + op.victim);
          const spoofs: Packet[] = [
            { type: T.Release, mac: victim },
            { type: T.Release, mac: victim, ciaddr: theirs },
            { type: T.Release, mac: victim, ciaddr: theirs, serverId: link.server }, // from the wrong address
            { type: T.Release, mac: spoofer, ciaddr: theirs, serverId: link.server },
            { type: T.Decline, mac: spoofer, requested: theirs, serverId: link.server },
            { type: T.Decline, mac: victim, requested: theirs },
            { type: T.Decline, mac: victim, requested: ip(99), serverId: link.server },
            { type: T.Request, mac: spoofer, requested: theirs },
            { type: T.Request, mac: spoofer, ciaddr: theirs },
          ];
          const p = spoofs[op.how];
          if (p.type === T.Request) {
            const r = await ask(p);
            if (r?.type === T.Ack) {
              const old = holding(spoofer);
              if (old) held.delete(old);
              held.set(r.yiaddr, { mac: spoofer, until: now() + LEASE_S * 1000 - 2000 });
            }
          } else {
            await link.send("c", p);
            // Naming its own lease is no spoof: the spoofer may end what it holds.
            if (p.mac === spoofer && holding(spoofer) === theirs) held.delete(theirs);
          }
        } else {
          const mac = honest[op.who];
          const mine = holding(mac);
          if (!mine) continue;
          if (op.kind === "renew") {
            const before = now();
            const h = live(mine);
            const r = await ask({ type: T.Request, mac, requested: mine });
            if (r?.type === T.Ack) held.set(mine, { mac, until: before + LEASE_S * 1000 });
            else {
              assert.ok(!h || now() >= h.until, `${mac}'s renewal of its live lease on ${mine} was ${r ? "NAKed" : "not answered"}`);
              held.delete(mine);
            }
          } else if (op.kind === "release") {
            if (!bound.has(mine)) {
              await link.bindAddress(mine);
              bound.add(mine);
            }
            await link.send(mine, { type: T.Release, mac, ciaddr: mine, serverId: link.server });
            held.delete(mine);
          } else {
            await link.send("c", { type: T.Decline, mac, requested: mine, serverId: link.server });
            held.delete(mine);
          }
        }
        // Everything sent was handled once the barrier's DISCOVER is (one socket, one queue).
        await ask({ type: T.Discover, mac: barrier });
        const leases = stores(t.site.db).leases;
        const margin = 3000; // the wire's bound on when the server stamped a lease
        for (const [addr, h] of held) {
          if (now() + margin >= h.until) continue;
          const row = await leases.byMac(h.mac);
          assert.equal(row?.ip, addr, `${h.mac}'s lease on ${addr} was ended by someone else (${JSON.stringify(op)})`);
          assert.equal(row?.state ?? "bound", "bound", `${h.mac}'s lease on ${addr} is still bound (${JSON.stringify(op)})`);
        }
      }
    }), { numRuns: 60 });
  });
});
