/**
 * Slipway's TFTP server as a process of its own, for bench/tftp.ts: serves every file in DIR
 * (read from disk with fileFromPath, as the distribution point does) on ADDRESS:PORT, prints
 * "ready" once listening and stops on SIGTERM.
 *
 *   node bench/tftp-slipway.ts DIR PORT [ADDRESS]
 */

import { readdirSync } from "node:fs";
import path from "node:path";
import { createTftpServer, fileFromPath, type TftpFile } from "../src/roles/distribution/tftp-server.ts";

const [dir, port, address = "127.0.0.1"] = process.argv.slice(2);
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
