/**
 * Lab DHCP (`up --pxe-mode dhcp`) against an attacker on the link, replayed with hand-made
 * packets from real sockets in a namespace (see lab-dhcp-wire.ts): the outside attack of
 * 2026-12-03 (issue 11, item 7, "Lab DHCP") and RFC 2131 §4.3.2–4.3.5. Each case asserts what
 * the victim and the attacker observe on the wire, what the site recorded, and the audit entry.
 */
import { describe, it, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestSite, type TestSite } from "../support/site.ts";
import { createLabLink, T, type LabLink, type Reply } from "./lab-dhcp-wire.ts";
import { startPxeResponder, type PxeResponder, type PxeResponderOptions } from "../../src/roles/distribution/pxe-responder.ts";
import { openBoundUdpSocket } from "../../src/net/bound-udp.ts";
import { parseRange } from "../../src/domain/ip-pool.ts";
import { stores } from "../../src/storage/stores.ts";

if (process.getuid?.() !== 0) throw new Error("the lab DHCP tests need root (network namespaces): run scripts/test.sh as root");

describe("lab DHCP against an attacker on the link", () => {
  let t: TestSite;
  let link: LabLink;
  let pxe: PxeResponder | undefined;
  let offset = 0; // the site's clock: real time, moved only forward
  let n = 0;
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  const audit = async (action: string) => {
    await t.site.audit.flush();
    return (await admin("GET", `/api/v1/audit?action=${action}&limit=1000`)).body as { object: string; outcome: string; details: Record<string, any> }[];
  };
  const leaseOf = (mac: string) => stores(t.site.db).leases.byMac(mac);
  const pool = (first: number, last: number) => `${link.net}.${first}-${link.net}.${last}`;
  const ip = (host: number) => `${link.net}.${host}`;
  const xid = () => randomBytes(4).readUInt32BE(0);
  const answer = (x: number, ...types: number[]) => (m: Reply) => m.xid === x && types.includes(m.type!);

  async function start(o: Partial<PxeResponderOptions> = {}, range = pool(100, 103)): Promise<void> {
    await pxe?.close();
    await t.site.db.run(`DELETE FROM dhcp_leases`);
    await t.site.db.run(`DELETE FROM dhcp_declined`).catch(() => {}); // absent before the fix
    pxe = await startPxeResponder({
      site: t.site, links: [{ name: link.device, address: link.server, netmask: "255.255.255.0" }], mode: "dhcp", unknown: "deny",
      bootBaseUrl: () => `http://${link.server}:8080`, openSocket: openBoundUdpSocket, ranges: [parseRange(range)], leaseSeconds: 600, ...o,
    });
  }
  async function machine(opts: { uuid?: string; state?: string } = {}): Promise<{ mac: string; id: string }> {
    const mac = `52:54:00:6d:${(++n >> 8).toString(16).padStart(2, "0")}:${(n & 255).toString(16).padStart(2, "0")}`;
    const r = await admin("POST", "/api/v1/devices", { name: `lab-dhcp-${n}`, macs: [mac], state: opts.state ?? "approved", ...(opts.uuid ? { smbiosUuid: opts.uuid } : {}) });
    assert.equal(r.status, 201, r.text);
    return { mac, id: r.body.id };
  }
  /** DISCOVER → OFFER → REQUEST → ACK; the address ACKed, or undefined. */
  async function dora(mac: string, uuid?: string): Promise<string | undefined> {
    const x = xid();
    await link.send("c", { type: T.Discover, mac, xid: x, uuid });
    const offer = await link.next("c", answer(x, T.Offer));
    if (!offer) return undefined;
    await link.send("c", { type: T.Request, mac, xid: x, uuid, requested: offer.yiaddr, serverId: link.server });
    const ack = await link.next("c", answer(x, T.Ack, T.Nak));
    return ack?.type === T.Ack ? ack.yiaddr : undefined;
  }
  /** An INIT-REBOOT REQUEST for `address` (no server identifier, as after a reboot): ACK, NAK or nothing. */
  async function claim(mac: string, address: string): Promise<number | undefined> {
    const x = xid();
    await link.send("c", { type: T.Request, mac, xid: x, requested: address });
    return (await link.next("c", answer(x, T.Ack, T.Nak), 1500))?.type;
  }
  async function offerTo(mac: string, uuid?: string, timeoutMs = 2000): Promise<string | undefined> {
    const x = xid();
    await link.send("c", { type: T.Discover, mac, xid: x, uuid });
    return (await link.next("c", answer(x, T.Offer), timeoutMs))?.yiaddr;
  }
  /** Lets the responder handle what was sent: a DISCOVER from a machine that holds its lease goes through the same queue. */
  let barrier: string | undefined;
  async function settle(): Promise<void> {
    barrier ??= (await machine()).mac;
    assert.ok(await offerTo(barrier), "the responder still answers");
  }

  before(async () => {
    t = await startTestSite({ now: () => new Date(Date.now() + offset) });
    link = await createLabLink();
  });
  afterEach(async () => {
    barrier = undefined;
  });
  after(async () => {
    await pxe?.close();
    await link?.close();
    await t?.close();
  });

  it("a spoofed RELEASE (no ciaddr, no server id, another client's address, or not from the address) ends no lease, and the address is not ACKed to another MAC", async () => {
    await start({}, pool(100, 109));
    const victim = await machine();
    const attacker = await machine();
    const held = await dora(victim.mac);
    assert.ok(held, "the victim has its lease");
    const spoofs = [
      { what: "no ciaddr, no server id", p: { type: T.Release, mac: victim.mac } },
      { what: "the victim's ciaddr, no server id", p: { type: T.Release, mac: victim.mac, ciaddr: held } },
      { what: "everything the victim's, but sent from another address", p: { type: T.Release, mac: victim.mac, ciaddr: held, serverId: link.server } },
      { what: "the attacker's own MAC with the victim's address", p: { type: T.Release, mac: attacker.mac, ciaddr: held, serverId: link.server } },
      { what: "another server's identifier", p: { type: T.Release, mac: victim.mac, ciaddr: held, serverId: ip(254) } },
    ];
    for (const s of spoofs) {
      await link.send("c", s.p);
      await settle();
      const l = await leaseOf(victim.mac);
      assert.equal(l?.ip, held, `${s.what}: the victim's lease is still there`);
      assert.equal(l?.state ?? "bound", "bound", s.what);
      assert.equal(await claim(attacker.mac, held), T.Nak, `${s.what}: the victim's address is not ACKed to the attacker`);
    }
    const refused = await audit("dhcp.release-refused");
    assert.ok(refused.some((e) => e.outcome === "denied" && e.details.mac === victim.mac), "the spoof is audited");
    assert.ok(refused.length <= 2, `audited at most once per few minutes per link, not per packet (${refused.length})`);

    // The holder's own RELEASE, from its address, ends it; the address is kept for it first.
    await link.bindAddress(held);
    await link.send(held, { type: T.Release, mac: victim.mac, ciaddr: held, serverId: link.server });
    await settle();
    assert.equal((await leaseOf(victim.mac))?.state, "released");
    assert.notEqual(await offerTo(attacker.mac), held, "another client is offered a different address while others are free");
    assert.equal(await dora(victim.mac), held, "the client that released it gets it back");
  });

  it("DECLINE counts only from the holder, for its address and this server; the address then rests and the client gets another", async () => {
    await start({ declineSeconds: 600 });
    const victim = await machine();
    const other = await machine();
    const held = await dora(victim.mac);
    assert.ok(held);
    for (const p of [
      { type: T.Decline, mac: other.mac, requested: held, serverId: link.server },
      { type: T.Decline, mac: victim.mac, requested: held },
      { type: T.Decline, mac: victim.mac, requested: ip(103) === held ? ip(102) : ip(103), serverId: link.server },
    ]) {
      await link.send("c", p);
      await settle();
      assert.equal((await leaseOf(victim.mac))?.ip, held, `a DECLINE naming no lease of its sender changes nothing: ${JSON.stringify(p)}`);
    }
    assert.ok((await audit("dhcp.decline-refused")).some((e) => e.outcome === "denied"), "refused DECLINEs are audited");

    await link.send("c", { type: T.Decline, mac: victim.mac, requested: held, serverId: link.server });
    await settle();
    const again = await dora(victim.mac);
    assert.ok(again, "the client gets an address");
    assert.notEqual(again, held, "another address than the one it declined");
    assert.notEqual(await offerTo(other.mac), held, "nobody is offered the declined address");
    assert.equal(await claim(other.mac, held), T.Nak, "nor ACKed it when asking for it by name");
    const declined = await audit("dhcp.declined");
    assert.ok(declined.some((e) => e.details.ip === held && e.details.mac === victim.mac), "the administrator is told (RFC 2131 §4.3.3)");

    offset += 601_000; // the address has rested
    assert.equal(await claim(other.mac, held), T.Ack, "after the rest the address is available again");
  });

  it("a NAK is broadcast when giaddr is 0, and through a relay it asks the relay to broadcast", async () => {
    await start({ relays: [link.client] }, pool(110, 113)); // addresses no client holds: a unicast NAK would be lost
    const holder = await machine();
    const asker = await machine();
    const held = await dora(holder.mac);
    assert.ok(held);
    // A client that believes it holds `held` (ciaddr) and asks to keep it: the NAK must reach it
    // although that address is not its own (RFC 2131 §4.1: NAKs are broadcast).
    const x = xid();
    await link.send("c", { type: T.Request, mac: asker.mac, xid: x, ciaddr: held });
    const nak = await link.next("c", answer(x, T.Nak, T.Ack));
    assert.equal(nak?.type, T.Nak, "the NAK arrived by broadcast");
    const y = xid();
    await link.send("relay", { type: T.Request, mac: asker.mac, xid: y, giaddr: link.client, requested: held });
    const relayed = await link.next("relay", answer(y, T.Nak, T.Ack));
    assert.equal(relayed?.type, T.Nak);
    assert.equal(relayed!.flags & 0x8000, 0x8000, "the broadcast bit is set for the relay (§4.3.2)");
  });

  it("an OFFER reserves its address only briefly, and never an address another client holds or was offered", async () => {
    await start({ offerSeconds: 60 }, pool(100, 101));
    const [a, b, c] = [await machine(), await machine(), await machine()];
    const first = await offerTo(a.mac);
    const second = await offerTo(b.mac);
    assert.ok(first && second);
    assert.notEqual(first, second, "two clients are never offered the same address at once");
    assert.equal(await offerTo(c.mac, undefined, 1500), undefined, "both addresses are reserved: nothing to offer");
    offset += 61_000; // nobody REQUESTed: the offers lapse
    assert.ok(await offerTo(c.mac), "an offer nobody took does not hold its address for long");
  });

  it("random MACs sending a device's SMBIOS UUID are unknown machines, not that device: no addresses from it; its own MAC still gets one", async () => {
    await start({}, pool(100, 103));
    const uuid = "6d6d6d6d-0000-4000-8000-000000000001";
    const victim = await machine({ uuid });
    let acked = 0;
    for (let i = 0; i < 4; i++) {
      const mac = `02:66:${randomBytes(4).toString("hex").replace(/(..)(?!$)/g, "$1:")}`;
      const x = xid();
      await link.send("c", { type: T.Request, mac, xid: x, uuid, requested: ip(100 + i) });
      if ((await link.next("c", answer(x, T.Ack, T.Nak), 1000))?.type === T.Ack) acked++;
    }
    assert.ok(acked <= 1, `random MACs sending the victim's UUID got ${acked} addresses`);
    assert.ok(await dora(victim.mac, uuid), "the machine itself still gets an address");
    assert.ok((await audit("pxe.refused")).some((e) => String(e.object).startsWith("mac:02:66:")), "refused as unknown machines, audited");
    assert.ok(!(await audit("dhcp.refused")).some((e) => e.object === `device:${victim.id}`), "nothing was done in the device's name");
  });

  it("machines awaiting approval hold at most half the pool; approved machines still get addresses", async () => {
    await start({ unknown: "approve" }, pool(100, 103));
    let acked = 0;
    for (let i = 0; i < 4; i++) if (await dora(await machine({ state: "pending" }).then((d) => d.mac))) acked++;
    assert.equal(acked, 2, "two of four pending machines got an address");
    assert.ok(await dora((await machine()).mac), "an approved machine still does");
  });

  it("--unknown allow records at most the cap of machines as approved, refuses beyond it, and audits that once", async () => {
    await start({ unknown: "allow", maxRecordedApproved: 3, recordPerMinute: 1000 }, pool(100, 120));
    const before = (await t.site.db.all(`SELECT id FROM devices`)).length;
    const existing = Number((await t.site.db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM devices WHERE attributes LIKE '%"recorded":"allow"%'`))?.n ?? 0);
    assert.equal(existing, 0);
    const offered: (string | undefined)[] = [];
    for (let i = 0; i < 6; i++) offered.push(await offerTo(`02:77:00:00:00:${i.toString(16).padStart(2, "0")}`, undefined, 1500));
    assert.equal(offered.filter(Boolean).length, 3, "three were answered");
    assert.equal((await t.site.db.all(`SELECT id FROM devices`)).length - before, 3, "three were recorded");
    const refused = (await audit("pxe.refused")).filter((e) => /approved automatically/.test(String(e.details.reason)));
    assert.equal(refused.length, 1, "refused beyond the cap, audited once");
  });

  it("relayed requests are answered only from configured relays, and only to them; others are ignored and audited", async () => {
    const known = await machine();
    await start();
    await link.send("relay", { type: T.Discover, mac: known.mac, giaddr: link.client });
    assert.equal(await link.next("relay", () => true, 1500), undefined, "no --dhcp-relay: a relayed DISCOVER is not answered");
    const refused = (await audit("pxe.refused")).filter((e) => e.details.giaddr === link.client);
    assert.equal(refused.length, 1, "audited");

    await start({ relays: [link.client] });
    const x = xid();
    await link.send("relay", { type: T.Discover, mac: known.mac, xid: x, giaddr: link.client });
    const offer = await link.next("relay", answer(x, T.Offer));
    assert.ok(offer, "a configured relay is answered");
    assert.equal(offer.giaddr, link.client);
    // The configured relay's datagram claiming another giaddr: we would answer to that address.
    const answered = pxe!.stats.answered;
    await link.send("relay", { type: T.Discover, mac: known.mac, giaddr: ip(77) });
    await settle();
    assert.equal(pxe!.stats.answered, answered + 1, "only the barrier was answered, not a giaddr nobody configured");
  });
});
