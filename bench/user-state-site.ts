/**
 * Helper of bench/user-state.ts (not run on its own): a real site (test/support/site.ts
 * `startTestSite`: SQLite, the site server and management point on loopback, the built-in
 * state store under its data folder) in a process of its own, so the bench can sample the
 * state migration point's memory from /proc/PID/status. Prints one JSON line with what a
 * client needs, then runs until its standard input closes (or SIGTERM), and removes its data
 * folder on the way out.
 */
import { startTestSite } from "../test/support/site.ts";

const t = await startTestSite({ database: "sqlite" });
let closing = false;
const stop = async () => {
  if (closing) return;
  closing = true;
  await t.close().catch(() => {});
  process.exit(0);
};
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdout.write(`${JSON.stringify({ url: t.url, mpUrl: t.mp.url, ca: t.ca, adminToken: t.adminToken, dataDir: t.dataDir })}\n`);
