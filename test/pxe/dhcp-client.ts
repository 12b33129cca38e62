/**
 * A scripted DHCP client for the network boot tests, run inside a client namespace:
 *   relay SRC_IP SERVER_IP MAC     — sends a DISCOVER as a DHCP relay would (from port 67,
 *                                    giaddr = SRC_IP, hops 1) and prints the answer as JSON
 *   flood IFACE_IP SERVER_IP COUNT — sends COUNT PXE DISCOVERs from random MACs as a relay
 *   race SRC_IP SERVER_IP IP,MAC,MAC… — as a relay, REQUESTs for the same IP from every MAC at
 *                                    once; prints which MACs got an ACK and which a NAK
 *   garbage IFACE_IP SERVER_IP PORT — sends a corpus of malformed datagrams to PORT
 * Built on Slipway's own codec; the server under test never sees this code.
 */
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { decodeDhcp, encodeDhcp, DhcpMessageType, DhcpOption, messageType, type DhcpMessage } from "../../src/protocol/dhcp.ts";

function discover(mac: Uint8Array, giaddr: string): Uint8Array {
  const chaddr = new Uint8Array(16);
  chaddr.set(mac);
  const msg: DhcpMessage = {
    op: 1, htype: 1, hlen: 6, hops: 1, xid: randomBytes(4).readUInt32BE(0), secs: 0, flags: 0,
    ciaddr: "0.0.0.0", yiaddr: "0.0.0.0", siaddr: "0.0.0.0", giaddr, chaddr, sname: "", file: "",
    options: [
      { code: DhcpOption.MessageType, data: Uint8Array.of(DhcpMessageType.Discover) },
      { code: DhcpOption.VendorClass, data: new TextEncoder().encode("PXEClient:Arch:00000:UNDI:002001") },
      { code: DhcpOption.ClientArch, data: Uint8Array.of(0, 0) },
    ],
  };
  return encodeDhcp(msg);
}

function request(mac: Uint8Array, giaddr: string, ip: string, serverId: string): Uint8Array {
  const msg = decodeDhcp(discover(mac, giaddr));
  const ipBytes = (a: string) => Uint8Array.from(a.split(".").map(Number));
  msg.options = [
    { code: DhcpOption.MessageType, data: Uint8Array.of(DhcpMessageType.Request) },
    ...msg.options.slice(1),
    { code: DhcpOption.RequestedIp, data: ipBytes(ip) },
    { code: DhcpOption.ServerId, data: ipBytes(serverId) },
  ];
  return encodeDhcp(msg);
}

const [mode, src, server, arg] = process.argv.slice(2);
const socket = dgram.createSocket("udp4");
await new Promise<void>((resolve) => socket.bind(67, src, resolve));
if (mode === "relay") {
  const mac = Uint8Array.from(arg.split(":").map((h) => parseInt(h, 16)));
  // A client retransmits (RFC 2131 §4.1: with backoff); a server still working through a flood
  // answers a retransmission. Failure detection only: a minute without any answer.
  const resend = setInterval(() => socket.send(discover(mac, src), 67, server), 2000);
  const timer = setTimeout(() => {
    clearInterval(resend);
    process.stdout.write(JSON.stringify({ answered: false }) + "\n");
    process.exit(0);
  }, 60_000);
  socket.on("message", (bytes, rinfo) => {
    const m = decodeDhcp(bytes);
    clearTimeout(timer);
    process.stdout.write(JSON.stringify({ answered: true, from: rinfo.address, type: messageType(m), yiaddr: m.yiaddr, siaddr: m.siaddr, giaddr: m.giaddr, file: m.file }) + "\n");
    process.exit(0);
  });
  socket.send(discover(mac, src), 67, server);
} else if (mode === "race") {
  const [ip, ...macs] = arg.split(",");
  const answers: Record<string, string[]> = { ack: [], nak: [], other: [] };
  socket.on("message", (bytes) => {
    const m = decodeDhcp(bytes);
    const t = messageType(m);
    answers[t === DhcpMessageType.Ack && m.yiaddr === ip ? "ack" : t === DhcpMessageType.Nak ? "nak" : "other"].push(m.mac ?? "?");
  });
  const packets = macs.map((mac) => request(Uint8Array.from(mac.split(":").map((h) => parseInt(h, 16))), src, ip, server));
  // All sent before any answer can come back: the server sees them together.
  for (const p of packets) socket.send(p, 67, server);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  process.stdout.write(JSON.stringify(answers) + "\n");
  socket.close();
} else if (mode === "garbage") {
  const valid = Buffer.from(discover(Uint8Array.of(2, 0, 0, 0, 0, 1), src));
  const corpus: Buffer[] = [
    Buffer.alloc(0), Buffer.of(1), Buffer.of(1, 1, 6), valid.subarray(0, 239), valid.subarray(0, 240),
    // options running past the end, a length byte with nothing after it, no END
    Buffer.concat([valid.subarray(0, 240), Buffer.of(53, 200, 1)]), Buffer.concat([valid.subarray(0, 240), Buffer.of(60)]),
    Buffer.concat([valid.subarray(0, 240), Buffer.of(53, 1, 1)]),
    // a wrong magic cookie, hlen 200, op 7, duplicate options, a 4 KB vendor class
    Buffer.concat([valid.subarray(0, 236), Buffer.of(1, 2, 3, 4), valid.subarray(240)]),
    Buffer.from(valid).fill(200, 2, 3), Buffer.from(valid).fill(7, 0, 1),
    Buffer.concat([valid.subarray(0, 240), Buffer.of(53, 1, 1, 53, 1, 3, 93, 2, 0, 0, 93, 2, 0, 7, 255)]),
    Buffer.concat([valid.subarray(0, 240), ...Array.from({ length: 20 }, () => Buffer.concat([Buffer.of(60, 200), Buffer.alloc(200, 0x41)])), Buffer.of(255)]),
    // TFTP-shaped garbage: RRQ without NULs, traversal, a 4 KB name, unknown opcode, WRQ
    Buffer.from("\x00\x01../../etc/passwd\x00octet\x00"), Buffer.concat([Buffer.of(0, 1), Buffer.alloc(4096, 0x61), Buffer.of(0), Buffer.from("octet\x00")]),
    Buffer.of(0, 1, 0x61), Buffer.of(0, 9, 0, 0), Buffer.from("\x00\x02undionly.kpxe\x00octet\x00"), randomBytes(1400),
  ];
  for (let round = 0; round < 20; round++) {
    for (const c of corpus) await new Promise<void>((resolve) => socket.send(c, Number(arg), server, () => resolve()));
  }
  process.stdout.write(JSON.stringify({ sent: corpus.length * 20 }) + "\n");
  socket.close();
} else {
  const count = Number(arg);
  for (let i = 0; i < count; i++) {
    const mac = randomBytes(6);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    await new Promise<void>((resolve) => socket.send(discover(mac, src), 67, server, () => resolve()));
  }
  process.stdout.write(JSON.stringify({ sent: count }) + "\n");
  socket.close();
}
