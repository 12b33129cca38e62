/**
 * Companion to bench/dhcp.ts (not a test): where Slipway's PXE responder spends its CPU per
 * ProxyDHCP offer, measured in one process with no network — the real `startPxeResponder`
 * fed perfdhcp-shaped relayed DISCOVERs through a stand-in socket, then its parts one by one,
 * each next to a cheaper way of doing the same thing, so a change can be weighed before it is
 * made. Needs nothing but Node 24 (no root, no namespaces):
 *
 *   export PATH="$PWD/.tools/node/bin:$PATH"   # from the repository's root
 *   node --disable-warning=ExperimentalWarning bench/dhcp-parts.ts [--clients 4000] [--ms 1500]
 *
 * What the stand-in socket leaves out is the kernel and libuv side (recvmsg, sendmsg through
 * the veth and bridge): bench/dhcp.ts's "server CPU per offer" minus the "whole responder"
 * figure here is roughly that.
 */
import { EventEmitter } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { DatabaseSync } from "node:sqlite";
import type dgram from "node:dgram";
import { initSite } from "../src/site/site.ts";
import { stores } from "../src/storage/stores.ts";
import { createLogger } from "../src/log.ts";
import { startPxeResponder, type PxeLink } from "../src/roles/distribution/pxe-responder.ts";
import {
  buildReply, clientArch, clientUuid, decodeDhcp, encodeDhcp, encodePxeVendorOptions, isIpxe, messageType, vendorClass,
  DhcpMessageType, DhcpOption, PxeDiscoveryControl, PxeVendorOption, type DhcpMessage,
} from "../src/protocol/dhcp.ts";
import { ReplyTemplate, replyShape } from "../src/protocol/dhcp-reply-template.ts";
import { BootIdentityCache } from "../src/roles/distribution/boot-identity-cache.ts";
import { firmwareOf } from "../src/domain/pxe.ts";

const { values: argv } = parseArgs({ options: { clients: { type: "string", default: "4000" }, ms: { type: "string", default: "1500" } } });
const CLIENTS = Number(argv.clients);
const MS = Number(argv.ms);
const LINK: PxeLink = { name: "br0", address: "10.80.0.1", netmask: "255.255.255.0" };

const macBytes = (i: number) => Uint8Array.of(0x02, 0x51, 0, 0, (i >> 8) & 0xff, i & 0xff);
const macText = (i: number) => Array.from(macBytes(i), (b) => b.toString(16).padStart(2, "0")).join(":");

/** A relayed DISCOVER shaped like perfdhcp's with bench/dhcp.ts's PXE options. */
function discover(i: number): Buffer {
  const chaddr = new Uint8Array(16);
  chaddr.set(macBytes(i));
  const msg: DhcpMessage = {
    op: 1, htype: 1, hlen: 6, hops: 0, xid: (i * 2654435761) >>> 0, secs: 0, flags: 0x8000,
    ciaddr: "0.0.0.0", yiaddr: "0.0.0.0", siaddr: "0.0.0.0", giaddr: "10.80.0.2", chaddr, sname: "", file: "",
    options: [
      { code: DhcpOption.MessageType, data: Uint8Array.of(DhcpMessageType.Discover) },
      { code: DhcpOption.VendorClass, data: new TextEncoder().encode("PXEClient:Arch:00000:UNDI:002001") },
      { code: DhcpOption.ClientArch, data: Uint8Array.of(0, 0) },
      { code: 94, data: Uint8Array.of(1, 2, 1) },
      { code: DhcpOption.ClientUuid, data: Uint8Array.of(0, ...Array.from({ length: 16 }, (_, k) => k * 17)) },
      { code: 55, data: Uint8Array.of(1, 3, 6, 15, 28, 43, 60, 66, 67) },
    ],
  };
  return Buffer.from(encodeDhcp(msg));
}

/** Runs fn for about MS milliseconds (after a warm-up); returns µs per call. */
async function time(fn: (i: number) => unknown | Promise<unknown>, isAsync = false): Promise<number> {
  const run = async (ms: number) => {
    let n = 0;
    const start = process.hrtime.bigint();
    const end = start + BigInt(ms) * 1_000_000n;
    for (;;) {
      for (let k = 0; k < 200; k++, n++) {
        if (isAsync) await fn(n % CLIENTS);
        else fn(n % CLIENTS);
      }
      const now = process.hrtime.bigint();
      if (now >= end) return Number(now - start) / 1000 / n;
    }
  };
  await run(Math.min(300, MS / 3));
  return run(MS);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-bench-parts-"));
try {
  const { site } = await initSite({ dataDir: path.join(dir, "data"), adminPassword: "Bench-Parts-Passphrase-1", log: createLogger({ level: "error" }) });
  const now = site.now().toISOString();
  await site.db.transaction(async (tx) => {
    for (let i = 0; i < CLIENTS; i++) await stores(tx).devices.create({ name: `bench-${i}`, macs: [macText(i)], smbiosUuid: null, serial: null, state: "approved", attributes: {} }, now);
  });

  // The real responder, its socket replaced by an emitter that records what it sends.
  const socket = new EventEmitter() as EventEmitter & { send: (...a: unknown[]) => void; close: (cb: () => void) => void };
  let wake: (() => void) | undefined;
  let sent = 0;
  socket.send = () => {
    sent++;
    wake?.();
  };
  socket.close = (cb) => cb();
  const responder = await startPxeResponder({
    site, links: [LINK], mode: "proxy", unknown: "deny", bootBaseUrl: () => "http://10.80.0.1:8080", relays: ["10.80.0.2"],
    openSocket: async ({ port }) => (port === 67 ? socket : Object.assign(new EventEmitter(), { close: (cb: () => void) => cb() })) as unknown as dgram.Socket,
  });
  const packets = Array.from({ length: CLIENTS }, (_, i) => discover(i));
  const rinfo = { address: "10.80.0.2", family: "IPv4", port: 67, size: 300 };
  // One request at a time, as the event loop sees them when it keeps up: emit, wait for the send.
  // The audit that follows a first offer runs after the send; the next request queues behind it.
  const offer = (i: number) => new Promise<void>((resolve) => {
    wake = resolve;
    socket.emit("message", packets[i], rinfo);
  });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CLIENTS; i++) await offer(i);
  await new Promise((resolve) => setTimeout(resolve, 200)); // the last audit
  const firstSightUs = Number(process.hrtime.bigint() - t0) / 1000 / CLIENTS;
  const wholeUs = await time(offer, true);
  if (sent < CLIENTS || responder.stats.ignored) throw new Error(`the responder answered ${sent}, ignored ${responder.stats.ignored}`);

  // Its parts, with the same inputs.
  const s = stores(site.db);
  const req = decodeDhcp(packets[7]);
  const decoded = packets.map((p) => decodeDhcp(p));
  const vendor = encodePxeVendorOptions([[PxeVendorOption.DiscoveryControl, Uint8Array.of(PxeDiscoveryControl.UseBootfile)]]);
  // What handle() reads per request.
  const accessors = (m: DhcpMessage) => {
    messageType(m);
    const v = vendorClass(m);
    const http = v?.startsWith("HTTPClient") ?? false;
    const pxe = http || (v?.startsWith("PXEClient") ?? false);
    clientUuid(m);
    firmwareOf(clientArch(m), http);
    isIpxe(m);
    return replyShape(m, v) && pxe;
  };
  const reply = (m: DhcpMessage) => encodeDhcp(buildReply(m, {
    messageType: DhcpMessageType.Offer, serverId: LINK.address, siaddr: LINK.address, bootfile: "undionly.kpxe",
    options: [{ code: DhcpOption.VendorSpecific, data: vendor }],
  }));
  // Cheaper ways to the same answers.
  const sqlite = new DatabaseSync(path.join(dir, "data", "slipway.db"), { readOnly: true });
  const oneQuery = sqlite.prepare(`SELECT d.id, d.state FROM devices d JOIN device_macs m ON m.device_id = d.id WHERE m.mac = ?`);
  const macHex = (b: Uint8Array) => {
    let t = "";
    for (let k = 0; k < 6; k++) t += (k ? ":" : "") + (b[k] < 16 ? "0" : "") + b[k].toString(16);
    return t;
  };
  const VC = Buffer.from("PXEClient");
  /** Option 60 prefix test on the raw bytes, no string made. */
  const pxeRaw = (p: Buffer) => {
    for (let o = 240; o < p.length && p[o] !== 255;) {
      if (p[o] === 0) { o++; continue; }
      if (p[o] === 60) return p.compare(VC, 0, VC.length, o + 2, o + 2 + VC.length) === 0;
      o += 2 + p[o + 1];
    }
    return false;
  };

  const cache = new BootIdentityCache({ byMac: (m) => s.devices.bootIdentityByMac(m), byUuid: (u) => s.devices.bootIdentityByUuid(u), ttlMs: 3_600_000 });
  for (let i = 0; i < CLIENTS; i++) await cache.get(macText(i), undefined);
  const filler = new ReplyTemplate(req, vendorClass(req), {
    messageType: DhcpMessageType.Offer, serverId: LINK.address, siaddr: LINK.address, bootfile: "undionly.kpxe",
    options: [{ code: DhcpOption.VendorSpecific, data: vendor }],
  });

  const rows: [string, number][] = [
    ["whole responder, first sight (offer + audit entry, fsync)", firstSightUs],
    ["whole responder, known machine, audit suppressed", wholeUs],
    ["  decodeDhcp", await time((i) => decodeDhcp(packets[i]))],
    ["  option accessors (vendor class once, UUID, arch, iPXE)", await time((i) => accessors(decoded[i]))],
    ["  BootIdentityCache.peek (what a known machine costs)", await time((i) => cache.peek(decoded[i].mac!, undefined))],
    ["  ReplyTemplate.fill (copy, patch the request's fields)", await time((i) => filler.fill(decoded[i], packets[i]))],
    ["what the cache and template save, per miss:", NaN],
    ["  devices.bootIdentityByMac (SQL behind the async mutex)", await time((i) => s.devices.bootIdentityByMac(macText(i)), true)],
    ["  buildReply + encodeDhcp", await time((i) => reply(decoded[i]))],
    ["alternatives not taken:", NaN],
    ["  one prepared SELECT id, state (node:sqlite, no mutex)", await time((i) => oneQuery.get(macText(i)))],
    ["  MAC + option-60 test on the raw bytes, no decode", await time((i) => pxeRaw(packets[i]) && macHex(packets[i].subarray(28, 34)))],
  ];
  await responder.close();
  await site.close();
  sqlite.close();
  console.log(`Slipway PXE responder, CPU per ProxyDHCP offer in-process (no sockets), ${CLIENTS} approved devices, Node ${process.version}`);
  for (const [what, us] of rows) console.log(`${what.padEnd(62)} ${Number.isFinite(us) ? `${us.toFixed(2).padStart(8)} µs` : ""}`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
