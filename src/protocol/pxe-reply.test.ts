import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildReply, decodeDhcp, decodePxeVendorOptions, encodeDhcp, ipxeFeatures, messageType, optionData, vendorClass,
  DhcpMessageType as T, DhcpOption, IpxeOption, PxeDiscoveryControl, PxeVendorOption,
} from "./dhcp.ts";
import { readFixture, readFixtures } from "./fixtures/load.ts";
import { bootReplyFields, labNak, labReply, ProxyReplies, type PxeBoot } from "./pxe-reply.ts";

const LINK = { name: "br0", address: "10.0.0.1" };
const TFTP: PxeBoot = { path: "undionly.kpxe", via: "tftp" };
const SCRIPT: PxeBoot = { path: "http://10.0.0.1:8080/ipxe/start", via: "ipxe-script" };
const HTTP: PxeBoot = { path: "http://10.0.0.1:8080/ipxe/loaders/ipxe.efi", via: "http" };
const ipOf = (b: Uint8Array | undefined) => b && Array.from(b).join(".");

describe("boot information in a reply", () => {
  const bios = decodeDhcp(readFixture("dhcp-ovmf-pxe-discover.hex"));
  const reply = (boot: PxeBoot) => decodeDhcp(encodeDhcp(buildReply(bios, { messageType: T.Offer, serverId: LINK.address, ...bootReplyFields(boot) })));

  it("firmware PXE is told to take the boot file from this offer, with no boot server discovery (PXE 2.1 §2.4)", () => {
    const r = reply(TFTP);
    assert.equal(r.file, "undionly.kpxe");
    const sub = decodePxeVendorOptions(optionData(r, DhcpOption.VendorSpecific)!);
    assert.deepEqual(sub.get(PxeVendorOption.DiscoveryControl), Uint8Array.of(PxeDiscoveryControl.UseBootfile));
    assert.equal(ipxeFeatures(r), undefined);
  });

  it("iPXE gets its script's URL and is told not to wait for ProxyDHCP; HTTP boot gets the URL and nothing else", () => {
    const s = reply(SCRIPT);
    assert.equal(new TextDecoder().decode(optionData(s, DhcpOption.BootfileName)), SCRIPT.path);
    assert.deepEqual(ipxeFeatures(s)?.get(IpxeOption.NoPxeDhcp), Uint8Array.of(1));
    assert.equal(optionData(s, DhcpOption.VendorSpecific), undefined);
    const h = reply(HTTP);
    assert.equal(new TextDecoder().decode(optionData(h, DhcpOption.BootfileName)), HTTP.path);
    assert.equal(ipxeFeatures(h), undefined);
    assert.equal(optionData(h, DhcpOption.VendorSpecific), undefined);
  });
});

describe("ProxyDHCP replies", () => {
  it("answers every fixture exactly as building and encoding the reply would, an OFFER to a DISCOVER and an ACK to a REQUEST", () => {
    for (const [name, raw] of readFixtures("dhcp-")) {
      const req = decodeDhcp(raw);
      for (const type of [T.Discover, T.Request]) {
        for (const boot of [TFTP, SCRIPT, HTTP]) {
          const expected = encodeDhcp(buildReply(req, { messageType: type === T.Discover ? T.Offer : T.Ack, serverId: LINK.address, siaddr: LINK.address, ...bootReplyFields(boot) }));
          assert.deepEqual(new ProxyReplies().answer(req, raw, vendorClass(req), LINK, type, boot), Buffer.from(expected), `${name} ${type} ${boot.via}`);
        }
      }
    }
  });

  it("a second machine of the same shape gets its own xid and MAC from the same template; another boot file or link gets its own", () => {
    const replies = new ProxyReplies();
    const raw = readFixture("dhcp-ipxe-bios-discover.hex");
    fc.assert(fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 6, maxLength: 6 }), (xid, mac) => {
      const mine = raw.slice();
      mine.set(xid, 4);
      mine.set(mac, 28);
      const req = decodeDhcp(mine);
      const out = decodeDhcp(replies.answer(req, mine, vendorClass(req), LINK, T.Discover, SCRIPT));
      assert.equal(out.xid, req.xid);
      assert.equal(out.mac, req.mac);
      assert.equal(messageType(out), T.Offer);
    }));
    assert.equal(replies.size, 1);
    const req = decodeDhcp(raw);
    const other = decodeDhcp(replies.answer(req, raw, vendorClass(req), LINK, T.Discover, { path: "http://10.0.0.1:8080/ipxe/start?x", via: "ipxe-script" }));
    assert.equal(new TextDecoder().decode(optionData(other, DhcpOption.BootfileName)), "http://10.0.0.1:8080/ipxe/start?x");
    const link2 = decodeDhcp(replies.answer(req, raw, vendorClass(req), { name: "br1", address: "10.0.1.1" }, T.Discover, SCRIPT));
    assert.equal(ipOf(optionData(link2, DhcpOption.ServerId)), "10.0.1.1");
    assert.equal(link2.siaddr, "10.0.1.1");
    assert.equal(replies.size, 3);
  });
});

describe("lab DHCP replies", () => {
  const lease = { ip: "10.0.0.100", netmask: "255.255.255.0", router: "10.0.0.254", dns: ["10.0.0.53", "10.0.0.54"], leaseSeconds: 600 };

  it("an OFFER carries the address, mask, router, DNS servers and lease time, and the boot file for a PXE client", () => {
    const req = decodeDhcp(readFixture("dhcp-ovmf-pxe-discover.hex"));
    const r = decodeDhcp(encodeDhcp(labReply(req, T.Discover, LINK.address, lease, TFTP)));
    assert.equal(messageType(r), T.Offer);
    assert.equal(r.yiaddr, "10.0.0.100");
    assert.equal(r.siaddr, LINK.address);
    assert.equal(ipOf(optionData(r, DhcpOption.ServerId)), LINK.address);
    assert.equal(ipOf(optionData(r, DhcpOption.SubnetMask)), "255.255.255.0");
    assert.equal(ipOf(optionData(r, DhcpOption.Router)), "10.0.0.254");
    assert.deepEqual(Array.from(optionData(r, DhcpOption.DnsServers)!), [10, 0, 0, 53, 10, 0, 0, 54]);
    assert.equal(new DataView(optionData(r, DhcpOption.LeaseTime)!.buffer, optionData(r, DhcpOption.LeaseTime)!.byteOffset).getUint32(0), 600);
    assert.equal(r.file, "undionly.kpxe");
    assert.ok(optionData(r, DhcpOption.VendorSpecific));
  });

  it("an ACK to a plain client carries no boot file and no DNS option when there is no DNS server", () => {
    const req = decodeDhcp(readFixture("dhcp-udhcpc-plain-discover.hex"));
    const r = decodeDhcp(encodeDhcp(labReply(req, T.Request, LINK.address, { ...lease, dns: [] })));
    assert.equal(messageType(r), T.Ack);
    assert.equal(r.file, "");
    assert.equal(optionData(r, DhcpOption.BootfileName), undefined);
    assert.equal(optionData(r, DhcpOption.DnsServers), undefined);
  });

  it("a NAK offers nothing, and through a relay asks to be broadcast (RFC 2131 §4.3.2)", () => {
    const direct = labNak(decodeDhcp(readFixture("dhcp-udhcpc-discover.hex")), LINK.address);
    assert.equal(messageType(direct), T.Nak);
    assert.equal(direct.yiaddr, "0.0.0.0");
    assert.equal(direct.siaddr, "0.0.0.0");
    assert.equal(direct.flags & 0x8000, 0);
    const relayed = decodeDhcp(readFixture("dhcp-relayed-discover.hex"));
    relayed.flags = 0;
    assert.equal(labNak(relayed, LINK.address).flags & 0x8000, 0x8000);
  });
});
