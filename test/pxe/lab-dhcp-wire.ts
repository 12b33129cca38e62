/**
 * A lab DHCP link for the attack tests: a network namespace this file makes, joined to the test
 * process by a veth pair. The responder under test runs in this process on the host end (real
 * UDP sockets bound to that device, the site's fake clock); clients — honest machines, a relay
 * and an attacker — send hand-made DHCP packets from the namespace through an agent
 * (test/net/fixtures/net-agent.ts), from real sockets, and read what comes back.
 *
 *   host end  sdh<id>  NET.1/24   the responder (server identifier NET.1)
 *   namespace c0       NET.2/24   the clients' port 68 socket and a relay's port 67 socket
 */
import { randomBytes } from "node:crypto";
import { run } from "../lab/netns.ts";
import { Agent } from "../net/netns.ts";
import {
  decodeDhcp, encodeClientUuid, encodeDhcp, messageType, DhcpMessageType, DhcpOption, type DhcpMessage, type DhcpOptionEntry,
} from "../../src/protocol/dhcp.ts";

export type Packet = {
  type: number; mac: string; xid?: number; ciaddr?: string; giaddr?: string; requested?: string; serverId?: string; uuid?: string; pxe?: boolean;
};

const ipBytes = (a: string) => Uint8Array.from(a.split(".").map(Number));

/** A client's DHCP message, as bytes. */
export function packet(p: Packet): Uint8Array {
  const chaddr = new Uint8Array(16);
  chaddr.set(p.mac.split(":").map((h) => parseInt(h, 16)));
  const options: DhcpOptionEntry[] = [{ code: DhcpOption.MessageType, data: Uint8Array.of(p.type) }];
  if (p.pxe ?? true) {
    options.push({ code: DhcpOption.VendorClass, data: new TextEncoder().encode("PXEClient:Arch:00000:UNDI:002001") });
    options.push({ code: DhcpOption.ClientArch, data: Uint8Array.of(0, 0) });
  }
  if (p.uuid) options.push({ code: DhcpOption.ClientUuid, data: encodeClientUuid(p.uuid) });
  if (p.requested) options.push({ code: DhcpOption.RequestedIp, data: ipBytes(p.requested) });
  if (p.serverId) options.push({ code: DhcpOption.ServerId, data: ipBytes(p.serverId) });
  return encodeDhcp({
    op: 1, htype: 1, hlen: 6, hops: p.giaddr ? 1 : 0, xid: p.xid ?? randomBytes(4).readUInt32BE(0), secs: 0, flags: 0,
    ciaddr: p.ciaddr ?? "0.0.0.0", yiaddr: "0.0.0.0", siaddr: "0.0.0.0", giaddr: p.giaddr ?? "0.0.0.0", chaddr, sname: "", file: "", options,
  });
}

export type Reply = DhcpMessage & { type: number | undefined; from: string };

export type LabLink = {
  /** The host end's device name, and the server's and the client namespace's addresses. */
  device: string; server: string; client: string; net: string;
  ns: string;
  agent: Agent;
  /** Sends from the clients' port 68 socket ("c"), a relay's port 67 socket ("relay"), or a socket bound to an address of its own. */
  send(from: string, p: Packet | Uint8Array, to?: string): Promise<void>;
  /** The next reply on a socket that `match` accepts, or undefined after `timeoutMs`; replies that do not match are passed over. */
  next(on: string, match: (m: Reply) => boolean, timeoutMs?: number): Promise<Reply | undefined>;
  /** Adds `ip` to the namespace's device and opens a socket bound to it, named after it (a client sending from its own address). */
  bindAddress(ip: string): Promise<void>;
  close(): Promise<void>;
};

export async function createLabLink(): Promise<LabLink> {
  const id = randomBytes(3).toString("hex");
  const ns = `slw-dh-${id}`;
  const device = `sdh${id}`;
  const net = `10.206.${randomBytes(1)[0] % 250}`;
  const server = `${net}.1`;
  const client = `${net}.2`;
  await run("ip", ["netns", "add", ns]);
  let agent: Agent | undefined;
  try {
    await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
    await run("ip", ["link", "add", device, "type", "veth", "peer", "name", "c0", "netns", ns]);
    await run("ip", ["addr", "add", `${server}/24`, "dev", device]);
    await run("ip", ["link", "set", device, "up"]);
    await run("ip", ["-n", ns, "addr", "add", `${client}/24`, "dev", "c0"]);
    await run("ip", ["-n", ns, "link", "set", "c0", "up"]);
    agent = await Agent.start(ns);
    await agent.call("open", { name: "c", interface: "c0", port: 68, broadcast: true });
    await agent.call("open", { name: "relay", interface: "c0", port: 67 });
  } catch (err) {
    await agent?.close();
    await run("ip", ["netns", "del", ns]).catch(() => {});
    await run("ip", ["link", "del", device]).catch(() => {});
    throw err;
  }
  const a = agent;
  const seen = new Map<string, number>();
  return {
    device, server, client, net, ns, agent: a,
    async send(from, p, to = server) {
      const bytes = p instanceof Uint8Array ? p : packet(p);
      await a.call("send", { name: from, host: to, port: 67, text: Buffer.from(bytes).toString("latin1") });
    },
    async next(on, match, timeoutMs = 2000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const count = (seen.get(on) ?? 0) + 1;
        const left = deadline - Date.now();
        const { messages } = (await a.call("wait", { name: on, count, timeoutMs: Math.max(0, left) })) as { messages: { text: string; from: string }[] };
        let i = seen.get(on) ?? 0;
        for (; i < messages.length; i++) {
          seen.set(on, i + 1);
          const m = decodeDhcp(Buffer.from(messages[i].text, "latin1"));
          const reply: Reply = { ...m, type: messageType(m), from: messages[i].from };
          if (match(reply)) return reply;
        }
        if (Date.now() >= deadline) return undefined;
      }
    },
    async bindAddress(ip) {
      await run("ip", ["-n", ns, "addr", "add", `${ip}/32`, "dev", "c0"]);
      await a.call("open", { name: ip, interface: "c0", port: 0, address: ip });
    },
    async close() {
      await a.close();
      await run("ip", ["netns", "del", ns]).catch(() => {});
      await run("ip", ["link", "del", device]).catch(() => {});
    },
  };
}

export const T = DhcpMessageType;
