/**
 * The PXE responder of a test site (ProxyDHCP, unknown computers recorded as pending), on
 * loopback UDP sockets standing for named links, and a client that sends a firmware PXE
 * DISCOVER on one of them: how unknown machines become pending devices in real life, without
 * a network namespace. Each link's sockets are bound to 127.0.0.1 on ports of their own.
 */
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import type { TestSite } from "./site.ts";
import { startPxeResponder } from "../../src/roles/distribution/pxe-responder.ts";
import { DhcpMessageType, DhcpOption, decodeDhcp, encodeClientUuid, encodeDhcp, messageType, type DhcpMessage } from "../../src/protocol/dhcp.ts";

export type PxeRecorder = {
  /** A firmware PXE DISCOVER from `mac` (and SMBIOS `uuid`) on `link`; resolves when the responder answers. */
  discover(link: string, mac: string, uuid?: string): Promise<void>;
  close(): Promise<void>;
};

export async function startPxeRecorder(t: TestSite, links: string[]): Promise<PxeRecorder> {
  const ports = new Map<string, number>();
  const responder = await startPxeResponder({
    site: t.site, mode: "proxy", unknown: "approve", recordPerMinute: 10_000,
    links: links.map((name) => ({ name, address: "127.0.0.1", netmask: "255.0.0.0" })),
    bootBaseUrl: () => "http://127.0.0.1:1",
    openSocket: async (o) => {
      const s = dgram.createSocket("udp4");
      await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", resolve));
      ports.set(`${o.interface}:${o.port}`, s.address().port);
      return s;
    },
  });
  return {
    async discover(link, mac, uuid) {
      const port = ports.get(`${link}:4011`);
      if (!port) throw new Error(`no PXE link ${link}`);
      const chaddr = new Uint8Array(16);
      chaddr.set(mac.split(":").map((h) => parseInt(h, 16)));
      const msg: DhcpMessage = {
        op: 1, htype: 1, hlen: 6, hops: 0, xid: randomBytes(4).readUInt32BE(0), secs: 0, flags: 0,
        ciaddr: "0.0.0.0", yiaddr: "0.0.0.0", siaddr: "0.0.0.0", giaddr: "0.0.0.0", chaddr, sname: "", file: "",
        options: [
          { code: DhcpOption.MessageType, data: Uint8Array.of(DhcpMessageType.Discover) },
          { code: DhcpOption.VendorClass, data: new TextEncoder().encode("PXEClient:Arch:00000:UNDI:002001") },
          { code: DhcpOption.ClientArch, data: Uint8Array.of(0, 0) },
          ...(uuid ? [{ code: DhcpOption.ClientUuid, data: encodeClientUuid(uuid) }] : []),
        ],
      };
      const client = dgram.createSocket("udp4");
      try {
        await new Promise<void>((resolve) => client.bind(0, "127.0.0.1", resolve));
        const answered = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`the PXE responder did not answer ${mac} on ${link}`)), 10_000);
          client.on("message", (bytes) => {
            if (messageType(decodeDhcp(bytes)) === DhcpMessageType.Offer) {
              clearTimeout(timer);
              resolve();
            }
          });
        });
        client.send(encodeDhcp(msg), port, "127.0.0.1");
        await answered;
      } finally {
        client.close();
      }
    },
    close: () => responder.close(),
  };
}
