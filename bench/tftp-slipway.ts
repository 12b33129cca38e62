/**
 * Slipway's TFTP server as a process of its own, for bench/tftp.ts: serves every file in DIR
 * (read from disk with fileFromPath, as the distribution point does) on ADDRESS:PORT, prints
 * "ready" once listening and stops on SIGTERM.
 *
 *   node bench/tftp-slipway.ts DIR PORT [ADDRESS]
 *   node bench/tftp-slipway.ts --floor DIR PORT [ADDRESS]
 *
 * --floor runs the yardstick instead: the least a TFTP sender on Node's dgram can do per
 * packet — one thread, every DATA packet built before, no limits, no timeouts, no logs. It is
 * not a server to deploy; it shows how much of Slipway's time is Node's own per datagram.
 */

import dgram from "node:dgram";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { TftpOpcode, decodeTftp, encodeTftp, negotiateOptions, type TftpOption } from "../src/protocol/tftp.ts";
import { blockCount, dataPackets } from "../src/roles/distribution/tftp-files.ts";
import { createTftpServer, fileFromPath, type TftpFile } from "../src/roles/distribution/tftp-server.ts";

const floor = process.argv[2] === "--floor";
const [dir, port, address = "127.0.0.1"] = process.argv.slice(floor ? 3 : 2);

if (floor) {
  serveFloor();
} else {
  const files = new Map<string, TftpFile>(readdirSync(dir).map((name) => [name, fileFromPath(path.join(dir, name))]));
  const server = await createTftpServer({
    files: (name) => files.get(name),
    interfaces: null,
    address,
    port: Number(port),
    // Every bench client comes from 127.0.0.1; the per-client limit (default 8) is for real
    // networks, where each machine has its own address.
    maxSessions: 1024,
    maxSessionsPerClient: 1024,
  });
  process.stdout.write("ready\n");
  process.on("SIGTERM", () => {
    void server.close().then(() => process.exit(0));
  });
}

function serveFloor(): void {
  const files = new Map(readdirSync(dir).map((name) => [name, readFileSync(path.join(dir, name))]));
  const built = new Map<string, Uint8Array>(); // packets by name and blksize
  const literal = ((host: string, _o: unknown, cb: (e: null, a: string, f: number) => void) => cb(null, host, 4)) as never;
  const listener = dgram.createSocket({ type: "udp4", lookup: literal });
  listener.on("message", (msg, client) => {
    const rrq = decodeTftp(msg);
    if (rrq.op !== "RRQ") return;
    const bytes = files.get(rrq.filename.replace(/^\//, ""));
    if (!bytes) return;
    const n = negotiateOptions(rrq.options, { maxBlksize: 65464, maxWindowsize: 64, fileSize: bytes.length });
    const key = `${rrq.filename}/${n.blksize}`;
    const blocks = blockCount(bytes.length, n.blksize);
    let packets = built.get(key);
    if (!packets) built.set(key, (packets = dataPackets(bytes, n.blksize, 1, blocks)));
    const all = packets;
    const stride = 4 + n.blksize;
    const socket = dgram.createSocket({ type: "udp4", lookup: literal });
    socket.bind(0, address, () => {
      let acked = 0;
      const sendFrom = (from: number): void => {
        for (let b = from; b <= Math.min(from + n.windowsize - 1, blocks); b++) {
          const at = (b - 1) * stride;
          socket.send(all.subarray(at, Math.min(at + stride, all.length)), client.port, client.address);
        }
      };
      socket.on("message", (m) => {
        if (m.length !== 4 || m[1] !== TftpOpcode.ACK) return socket.close();
        acked += (((m[2] << 8) | m[3]) - acked) & 0xffff; // a duplicate ACK resends: no timer here
        if (acked >= blocks) return socket.close();
        sendFrom(acked + 1);
      });
      if (n.accepted.length > 0) socket.send(encodeTftp({ op: "OACK", options: n.accepted as TftpOption[] }), client.port, client.address);
      else sendFrom(1);
    });
  });
  listener.bind(Number(port), address, () => process.stdout.write("ready\n"));
  process.on("SIGTERM", () => process.exit(0));
}
