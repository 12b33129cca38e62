import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { DhcpMessageType as T, DhcpOption, decodeDhcp, encodeDhcp, type DhcpMessage, type DhcpOptionEntry } from "./dhcp.ts";
import { readFixture } from "./fixtures/load.ts";
import { choseOtherServer, declineClaim, relayAccepted, releaseClaim, replyDestination, requestedAddress, servedRequest } from "./dhcp-server.ts";

const SERVER = "10.0.0.1";
const ip4 = (ip: string) => Uint8Array.from(ip.split("."), Number);

/** A client's message as it arrives (encoded, then decoded). */
function msg(o: { type?: number; op?: number; vendor?: string; ciaddr?: string; giaddr?: string; serverId?: string; requested?: string; htype?: number } = {}): DhcpMessage {
  const chaddr = new Uint8Array(16);
  chaddr.set([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
  const options: DhcpOptionEntry[] = [
    ...(o.type === undefined ? [] : [{ code: DhcpOption.MessageType, data: Uint8Array.of(o.type) }]),
    ...(o.vendor ? [{ code: DhcpOption.VendorClass, data: new TextEncoder().encode(o.vendor) }] : []),
    ...(o.serverId ? [{ code: DhcpOption.ServerId, data: ip4(o.serverId) }] : []),
    ...(o.requested ? [{ code: DhcpOption.RequestedIp, data: ip4(o.requested) }] : []),
  ];
  return decodeDhcp(encodeDhcp({
    op: o.op ?? 1, htype: o.htype ?? 1, hlen: 6, hops: 0, xid: 7, secs: 0, flags: 0, ciaddr: o.ciaddr ?? "0.0.0.0", yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0", giaddr: o.giaddr ?? "0.0.0.0", chaddr, sname: "", file: "", options,
  }));
}
const PXE = "PXEClient:Arch:00000:UNDI:002001";

describe("which requests a DHCP or ProxyDHCP server acts on", () => {
  it("ProxyDHCP answers PXE and HTTP boot clients only, a REQUEST only on port 4011, and never takes a RELEASE or DECLINE", () => {
    assert.deepEqual(servedRequest(msg({ type: T.Discover, vendor: PXE }), "proxy", false),
      { type: T.Discover, mac: "52:54:00:12:34:56", vendor: PXE, httpClient: false, pxe: true });
    assert.equal(servedRequest(msg({ type: T.Discover, vendor: "HTTPClient:Arch:00016:UNDI:003000" }), "proxy", false)?.httpClient, true);
    assert.equal(servedRequest(msg({ type: T.Discover }), "proxy", false), undefined, "not a PXE client");
    assert.equal(servedRequest(msg({ type: T.Discover, vendor: "udhcp 1.36" }), "proxy", false), undefined);
    assert.equal(servedRequest(msg({ type: T.Request, vendor: PXE }), "proxy", false), undefined, "a REQUEST on 67 is the DHCP server's");
    assert.equal(servedRequest(msg({ type: T.Request, vendor: PXE }), "proxy", true)?.type, T.Request);
    for (const type of [T.Release, T.Decline]) assert.equal(servedRequest(msg({ type, vendor: PXE }), "proxy", false), undefined);
  });

  it("lab DHCP serves any client's DISCOVER, REQUEST, RELEASE and DECLINE", () => {
    for (const type of [T.Discover, T.Request, T.Release, T.Decline]) assert.equal(servedRequest(msg({ type }), "dhcp", false)?.pxe, false);
    assert.equal(servedRequest(decodeDhcp(readFixture("dhcp-udhcpc-plain-discover.hex")), "dhcp", false)?.type, T.Discover);
  });

  it("ignores server replies, other message types, plain BOOTP and non-Ethernet addresses", () => {
    for (const mode of ["proxy", "dhcp"] as const) {
      assert.equal(servedRequest(msg({ type: T.Discover, vendor: PXE, op: 2 }), mode, true), undefined);
      assert.equal(servedRequest(msg({ type: T.Inform, vendor: PXE }), mode, true), undefined);
      assert.equal(servedRequest(msg({ type: T.Offer, vendor: PXE }), mode, true), undefined);
      assert.equal(servedRequest(msg({ vendor: PXE }), mode, true), undefined, "no option 53");
      assert.equal(servedRequest(msg({ type: T.Discover, vendor: PXE, htype: 6 }), mode, true), undefined);
    }
  });
});

describe("relays", () => {
  const relays = new Set(["10.20.30.1"]);
  it("a relayed request counts only when giaddr and the sender are both configured relays; an unrelayed one always", () => {
    assert.equal(relayAccepted(msg({ type: T.Discover }), "10.0.0.50", relays), true);
    assert.equal(relayAccepted(msg({ type: T.Discover, giaddr: "10.20.30.1" }), "10.20.30.1", relays), true);
    assert.equal(relayAccepted(msg({ type: T.Discover, giaddr: "10.20.30.1" }), "10.0.0.66", relays), false, "a configured giaddr sent by someone else");
    assert.equal(relayAccepted(msg({ type: T.Discover, giaddr: "192.0.2.9" }), "192.0.2.9", relays), false, "a relay nobody configured");
    assert.equal(relayAccepted(msg({ type: T.Discover, giaddr: "10.20.30.1" }), "10.20.30.1", new Set()), false);
    assert.equal(relayAccepted(decodeDhcp(readFixture("dhcp-relayed-discover.hex")), "10.20.30.1", relays), true);
  });

  it("no reply goes to an address a sender names in giaddr unless it is a configured relay (any giaddr, sender and port)", () => {
    const addr = fc.constantFrom("0.0.0.0", "10.20.30.1", "192.0.2.9", "10.0.0.50");
    fc.assert(fc.property(addr, addr, fc.boolean(), fc.boolean(), (giaddr, from, proxyPort, nak) => {
      const req = msg({ type: T.Discover, giaddr });
      if (!relayAccepted(req, from, relays)) return;
      const to = replyDestination(req, { address: from, port: 68 }, proxyPort, nak);
      if (giaddr !== "0.0.0.0") assert.deepEqual(to, { address: giaddr, port: 67 });
      assert.ok(to.address === "255.255.255.255" || to.address === from || relays.has(to.address), JSON.stringify(to));
    }));
  });
});

describe("where a reply goes (RFC 2131 §4.1)", () => {
  const from = { address: "10.0.0.50", port: 4011 };
  it("to the relay, to the ProxyDHCP sender, to ciaddr, else broadcast; a NAK never to ciaddr", () => {
    assert.deepEqual(replyDestination(msg({ giaddr: "10.20.30.1", ciaddr: "10.0.0.7" }), from, true, false), { address: "10.20.30.1", port: 67 });
    assert.deepEqual(replyDestination(msg({ ciaddr: "10.0.0.7" }), from, true, false), from);
    assert.deepEqual(replyDestination(msg({ ciaddr: "10.0.0.7" }), from, false, false), { address: "10.0.0.7", port: 68 });
    assert.deepEqual(replyDestination(msg({ ciaddr: "10.0.0.7" }), from, false, true), { address: "255.255.255.255", port: 68 });
    assert.deepEqual(replyDestination(msg(), from, false, false), { address: "255.255.255.255", port: 68 });
  });
});

describe("what a REQUEST, RELEASE and DECLINE name", () => {
  it("the requested address is option 50, else ciaddr", () => {
    assert.equal(requestedAddress(msg({ requested: "10.0.0.9", ciaddr: "10.0.0.8" })), "10.0.0.9");
    assert.equal(requestedAddress(msg({ ciaddr: "10.0.0.8" })), "10.0.0.8");
    assert.equal(requestedAddress(msg()), undefined);
  });

  it("a REQUEST naming another server took its offer; one naming us, or no server, did not", () => {
    assert.equal(choseOtherServer(msg({ type: T.Request, serverId: "10.0.0.2" }), SERVER), true);
    assert.equal(choseOtherServer(msg({ type: T.Request, serverId: SERVER }), SERVER), false);
    assert.equal(choseOtherServer(msg({ type: T.Request }), SERVER), false, "INIT-REBOOT carries no server identifier");
    assert.equal(choseOtherServer(msg({ type: T.Discover, serverId: "10.0.0.2" }), SERVER), false);
  });

  it("a RELEASE counts only naming this server, with ciaddr, sent from that address or through a relay", () => {
    assert.equal(releaseClaim(msg({ type: T.Release, serverId: SERVER, ciaddr: "10.0.0.9" }), "10.0.0.9", SERVER), "10.0.0.9");
    assert.equal(releaseClaim(msg({ type: T.Release, serverId: SERVER, ciaddr: "10.0.0.9" }), "10.0.0.66", SERVER), undefined, "sent by someone else");
    assert.equal(releaseClaim(msg({ type: T.Release, serverId: SERVER, ciaddr: "10.0.0.9", giaddr: "10.20.30.1" }), "10.20.30.1", SERVER), "10.0.0.9");
    assert.equal(releaseClaim(msg({ type: T.Release, serverId: "10.0.0.2", ciaddr: "10.0.0.9" }), "10.0.0.9", SERVER), undefined, "another server's");
    assert.equal(releaseClaim(msg({ type: T.Release, ciaddr: "10.0.0.9" }), "10.0.0.9", SERVER), undefined, "no server identifier");
    assert.equal(releaseClaim(msg({ type: T.Release, serverId: SERVER }), "0.0.0.0", SERVER), undefined, "no ciaddr");
  });

  it("a DECLINE counts only naming this server and the address in option 50, with ciaddr zero", () => {
    assert.equal(declineClaim(msg({ type: T.Decline, serverId: SERVER, requested: "10.0.0.9" }), SERVER), "10.0.0.9");
    assert.equal(declineClaim(msg({ type: T.Decline, requested: "10.0.0.9" }), SERVER), undefined);
    assert.equal(declineClaim(msg({ type: T.Decline, serverId: "10.0.0.2", requested: "10.0.0.9" }), SERVER), undefined);
    assert.equal(declineClaim(msg({ type: T.Decline, serverId: SERVER }), SERVER), undefined);
    assert.equal(declineClaim(msg({ type: T.Decline, serverId: SERVER, requested: "10.0.0.9", ciaddr: "10.0.0.9" }), SERVER), undefined);
  });
});
