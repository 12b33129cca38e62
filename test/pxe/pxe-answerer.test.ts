/**
 * The PXE responder's answer to one datagram (pxe-answerer.ts), end to end without a socket:
 * real requests as bytes in, the reply's bytes and destination out, against a real site on
 * SQLite and PostgreSQL (devices, leases, audit log). No root. The same responder on real
 * sockets in a namespace is network-boot.test.ts and the lab-dhcp tests.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { stores } from "../../src/storage/stores.ts";
import { parseRange } from "../../src/domain/ip-pool.ts";
import { decodeDhcp, encodeDhcp, messageType, optionData, DhcpMessageType as T, DhcpOption, type DhcpOptionEntry } from "../../src/protocol/dhcp.ts";
import { createPxeAnswerer, type PxeAnswererOptions, type PxeLink } from "../../src/roles/distribution/pxe-answerer.ts";

const LINK: PxeLink = { name: "br0", address: "10.0.0.1", netmask: "255.255.255.0" };
const CLIENT = { address: "0.0.0.0", port: 68 };
const ip4 = (ip: string) => Uint8Array.from(ip.split("."), Number);

type Req = { type: number; mac: string; pxe?: boolean; ipxe?: boolean; giaddr?: string; ciaddr?: string; serverId?: string; requested?: string; uuid?: string };
function request(r: Req): Uint8Array {
  const chaddr = new Uint8Array(16);
  chaddr.set(r.mac.split(":").map((h) => parseInt(h, 16)));
  const options: DhcpOptionEntry[] = [
    { code: DhcpOption.MessageType, data: Uint8Array.of(r.type) },
    ...(r.pxe === false ? [] : [
      { code: DhcpOption.VendorClass, data: new TextEncoder().encode("PXEClient:Arch:00000:UNDI:002001") },
      { code: DhcpOption.ClientArch, data: Uint8Array.of(0, 0) },
    ]),
    ...(r.ipxe ? [{ code: DhcpOption.UserClass, data: new TextEncoder().encode("iPXE") }] : []),
    ...(r.serverId ? [{ code: DhcpOption.ServerId, data: ip4(r.serverId) }] : []),
    ...(r.requested ? [{ code: DhcpOption.RequestedIp, data: ip4(r.requested) }] : []),
    // Option 97 (type 0 + 16 bytes). The UUIDs used here read the same in SMBIOS and network order.
    ...(r.uuid ? [{ code: DhcpOption.ClientUuid, data: Uint8Array.from([0, ...Buffer.from(r.uuid.replace(/-/g, ""), "hex")]) }] : []),
  ];
  return encodeDhcp({ op: 1, htype: 1, hlen: 6, hops: r.giaddr ? 1 : 0, xid: 0x1234, secs: 0, flags: 0, ciaddr: r.ciaddr ?? "0.0.0.0", yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0", giaddr: r.giaddr ?? "0.0.0.0", chaddr, sname: "", file: "", options });
}

for (const database of databasesUnderTest()) {
  describe(`the PXE responder's answers on ${database}`, () => {
    let core: SiteCore;
    let n = 0;
    before(async () => {
      core = await openSiteCore(database);
    });
    after(() => core?.close());

    const mac = () => `52:54:00:3e:${(++n >> 8).toString(16).padStart(2, "0")}:${(n & 255).toString(16).padStart(2, "0")}`;
    async function machine(state: "approved" | "pending" | "blocked" = "approved"): Promise<{ mac: string; id: string }> {
      const m = mac();
      const d = await stores(core.site.db).devices.create({ name: `answer-${n}`, macs: [m], smbiosUuid: null, serial: null, state, attributes: {} }, core.site.now().toISOString());
      return { mac: m, id: d.id };
    }
    const answerer = (o: Partial<PxeAnswererOptions> = {}) =>
      createPxeAnswerer({ site: core.site, links: [LINK], mode: "proxy", unknown: "deny", bootBaseUrl: () => "http://10.0.0.1:8080", ...o });
    async function audit(action: string, object: string) {
      await core.site.audit.flush();
      return (await core.site.audit.list({ action, limit: 10_000 })).filter((e) => e.object === object);
    }

    it("ProxyDHCP: an approved machine's DISCOVER gets an OFFER naming its loader, broadcast; its REQUEST on 4011 an ACK back to it; one audit entry", async () => {
      const pxe = answerer();
      const { mac: m, id } = await machine();
      const out = await pxe.answer(LINK, request({ type: T.Discover, mac: m }), CLIENT, false);
      assert.deepEqual(out?.to, { address: "255.255.255.255", port: 68 });
      const offer = decodeDhcp(out!.bytes);
      assert.equal(messageType(offer), T.Offer);
      assert.equal(offer.mac, m);
      assert.equal(offer.xid, 0x1234);
      assert.equal(offer.file, "undionly.kpxe");
      assert.equal(offer.yiaddr, "0.0.0.0", "ProxyDHCP hands out no address");
      const from = { address: "10.0.0.77", port: 4011 };
      const ack = await pxe.answer(LINK, request({ type: T.Request, mac: m }), from, true);
      assert.deepEqual(ack?.to, from);
      assert.equal(messageType(decodeDhcp(ack!.bytes)), T.Ack);
      await pxe.answer(LINK, request({ type: T.Discover, mac: m }), CLIENT, false);
      const offers = await audit("pxe.offer", `device:${id}`);
      assert.equal(offers.length, 1, "the second DISCOVER is not audited again");
      assert.deepEqual(offers[0].details, { mac: m, smbiosUuid: null, link: "br0", firmware: "bios", bootfile: "undionly.kpxe", relayed: false });
      assert.equal(pxe.stats.suppressedAudits, 1);
      assert.deepEqual({ ...pxe.stats }, { received: 3, malformed: 0, answered: 3, ignored: 0, suppressedAudits: 1 });
    });

    it("ProxyDHCP: iPXE gets its boot script's URL; a plain DHCP client, a REQUEST on 67 and a RELEASE get nothing", async () => {
      const pxe = answerer();
      const { mac: m } = await machine();
      const out = await pxe.answer(LINK, request({ type: T.Discover, mac: m, ipxe: true }), CLIENT, false);
      assert.equal(new TextDecoder().decode(optionData(decodeDhcp(out!.bytes), DhcpOption.BootfileName)), "http://10.0.0.1:8080/ipxe/start");
      assert.equal(await pxe.answer(LINK, request({ type: T.Discover, mac: m, pxe: false }), CLIENT, false), undefined);
      assert.equal(await pxe.answer(LINK, request({ type: T.Request, mac: m }), CLIENT, false), undefined);
      assert.equal(await pxe.answer(LINK, request({ type: T.Release, mac: m }), CLIENT, true), undefined);
      assert.equal(pxe.stats.ignored, 3);
    });

    it("an unknown machine under deny, and a blocked one, get no answer and a refusal in the audit log", async () => {
      const pxe = answerer();
      const unknown = mac();
      assert.equal(await pxe.answer(LINK, request({ type: T.Discover, mac: unknown }), CLIENT, false), undefined);
      assert.equal((await audit("pxe.refused", `mac:${unknown}`))[0]?.details?.reason, "unknown computer (policy deny)");
      const blocked = await machine("blocked");
      assert.equal(await pxe.answer(LINK, request({ type: T.Discover, mac: blocked.mac }), CLIENT, false), undefined);
      assert.equal((await audit("pxe.refused", `device:${blocked.id}`))[0]?.details?.reason, "blocked");
      assert.equal(await stores(core.site.db).devices.byMac(unknown), undefined, "nothing recorded");
    });

    it("SMBIOS UUIDs that name nobody: all-zero and all-one are absent when recording; a UUID shared with a device that has its own MAC names nobody", async () => {
      const pxe = answerer({ unknown: "approve" });
      for (const junk of ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]) {
        const m = mac();
        assert.ok(await pxe.answer(LINK, request({ type: T.Discover, mac: m, uuid: junk }), CLIENT, false));
        const d = await stores(core.site.db).devices.byMac(m);
        assert.equal(d?.state, "pending");
        assert.equal(d?.smbiosUuid, null, `${junk} is not recorded as the machine's UUID`);
      }
      // Device A is on record with its MAC and UUID U; an unknown machine B reports U too.
      const shared = "11111111-2222-3333-4444-5555555555" + (10 + n).toString(16).padStart(2, "0");
      const a = mac();
      const aId = (await stores(core.site.db).devices.create({ name: `answer-shared-${n}`, macs: [a], smbiosUuid: shared, serial: null, state: "approved", attributes: {} }, core.site.now().toISOString())).id;
      const deny = answerer();
      const b = mac();
      assert.equal(await deny.answer(LINK, request({ type: T.Discover, mac: b, uuid: shared }), CLIENT, false), undefined, "under deny, B is an unknown machine, not A");
      assert.deepEqual(await audit("pxe.offer", `device:${aId}`), [], "nothing answered in A's name");
      assert.ok(await pxe.answer(LINK, request({ type: T.Discover, mac: b, uuid: shared }), CLIENT, false));
      const recorded = await stores(core.site.db).devices.byMac(b);
      assert.ok(recorded && recorded.id !== aId, "under approve, B is recorded as a machine of its own");
      assert.equal(recorded!.state, "pending");
      assert.ok(await deny.answer(LINK, request({ type: T.Discover, mac: a, uuid: shared }), CLIENT, false), "A is still answered");
    });

    it("an unknown machine under approve is recorded pending and answered, so it can wait for an administrator", async () => {
      const pxe = answerer({ unknown: "approve" });
      const m = mac();
      const out = await pxe.answer(LINK, request({ type: T.Discover, mac: m }), CLIENT, false);
      assert.equal(messageType(decodeDhcp(out!.bytes)), T.Offer);
      const d = await stores(core.site.db).devices.byMac(m);
      assert.equal(d?.state, "pending");
      assert.equal((await audit("device.recorded", `device:${d!.id}`)).length, 1);
      // Named by the MAC it asked with: the decision was taken before the machine was on record.
      assert.equal((await audit("pxe.waiting", `mac:${m}`)).length, 1);
    });

    it("a relayed request is answered through its relay only when the relay is configured; otherwise ignored and audited", async () => {
      const { mac: m } = await machine();
      const relay = { address: "10.20.30.1", port: 67 };
      const open = answerer();
      assert.equal(await open.answer(LINK, request({ type: T.Discover, mac: m, giaddr: "10.20.30.1" }), relay, false), undefined);
      const [refused] = await audit("pxe.refused", `mac:${m}`);
      assert.equal(refused?.details?.reason, "relayed by an address not configured as a relay (--dhcp-relay)");
      const configured = answerer({ relays: ["10.20.30.1"] });
      const out = await configured.answer(LINK, request({ type: T.Discover, mac: m, giaddr: "10.20.30.1" }), relay, false);
      assert.deepEqual(out?.to, { address: "10.20.30.1", port: 67 });
      assert.equal(await configured.answer(LINK, request({ type: T.Discover, mac: m, giaddr: "10.20.30.1" }), { address: "10.0.0.66", port: 67 }, false), undefined,
        "a configured giaddr from someone else");
    });

    it("malformed datagrams are counted, never answered, never thrown", async () => {
      const pxe = answerer();
      const { mac: m } = await machine();
      const good = request({ type: T.Discover, mac: m });
      assert.equal(await pxe.answer(LINK, good.subarray(0, 100), CLIENT, false), undefined);
      const badArch = good.slice();
      // Option 93 ClientArch shortened to one byte: a malformed option the accessors refuse lazily.
      const at = badArch.findIndex((b, i) => i >= 240 && b === DhcpOption.ClientArch && badArch[i + 1] === 2);
      badArch[at + 1] = 1;
      badArch[at + 3] = DhcpOption.Pad;
      assert.equal(await pxe.answer(LINK, badArch, CLIENT, false), undefined);
      assert.equal(pxe.stats.malformed, 2);
    });

    it("lab DHCP: refuses to start on a link with no pool in its subnet", () => {
      assert.throws(() => answerer({ mode: "dhcp", ranges: [parseRange("10.9.0.100-10.9.0.110")] }), /Cannot serve DHCP on br0: no --dhcp-range lies in its subnet 10\.0\.0\.1\/255\.255\.255\.0/);
    });

    it("lab DHCP: DISCOVER, REQUEST and a lease; a RELEASE from another address ends nothing and is audited", async () => {
      const pxe = answerer({ mode: "dhcp", ranges: [parseRange("10.0.0.100-10.0.0.110")], leaseSeconds: 600, dns: ["10.0.0.53"] });
      const { mac: m } = await machine();
      const offer = await pxe.answer(LINK, request({ type: T.Discover, mac: m }), CLIENT, false);
      const yiaddr = decodeDhcp(offer!.bytes).yiaddr;
      assert.equal(yiaddr, "10.0.0.100");
      assert.equal(decodeDhcp(offer!.bytes).file, "undionly.kpxe");
      const ack = await pxe.answer(LINK, request({ type: T.Request, mac: m, serverId: LINK.address, requested: yiaddr }), CLIENT, false);
      assert.equal(messageType(decodeDhcp(ack!.bytes)), T.Ack);
      assert.equal((await stores(core.site.db).leases.byMac(m))?.state, "bound");
      const spoofed = await pxe.answer(LINK, request({ type: T.Release, mac: m, serverId: LINK.address, ciaddr: yiaddr }), { address: "10.0.0.66", port: 68 }, false);
      assert.equal(spoofed, undefined);
      assert.equal((await stores(core.site.db).leases.byMac(m))?.state, "bound", "still bound");
      assert.equal((await audit("dhcp.release-refused", `mac:${m}`)).length, 1);
      await pxe.answer(LINK, request({ type: T.Release, mac: m, serverId: LINK.address, ciaddr: yiaddr }), { address: yiaddr, port: 68 }, false);
      assert.equal((await stores(core.site.db).leases.byMac(m))?.state, "released", "from its own address it counts");
      const nak = await pxe.answer(LINK, request({ type: T.Request, mac: m, requested: "10.0.0.109", ciaddr: "10.0.0.109" }), CLIENT, false);
      assert.equal(messageType(decodeDhcp(nak!.bytes)), T.Nak, "its remembered address, not the one it claims");
      assert.deepEqual(nak!.to, { address: "255.255.255.255", port: 68 }, "a NAK is broadcast");
    });
  });
}
