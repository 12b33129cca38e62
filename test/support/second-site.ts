/**
 * A second site instance on a test site's PostgreSQL database, in a worker thread: its own
 * module instances (so nothing a module keeps is shared with the first), connection pool, site
 * server and management point — what a second site process on the same database has.
 * The data folder is a copy of the first's (same keys).
 */
import fs from "node:fs";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { tempDir, type TestSite } from "./site.ts";

export type SecondSite = { url: string; mpUrl: string; close(): Promise<void> };

type Start = { dataDir: string; databaseUrl: string; passwordCost?: { memoryKiB: number; passes: number } };

export async function startSecondSite(t: TestSite): Promise<SecondSite> {
  if (!t.databaseUrl) throw new Error("A second site instance needs the first on PostgreSQL");
  const dataDir = tempDir("slipway-second-");
  fs.cpSync(t.dataDir, dataDir, { recursive: true });
  const worker = new Worker(new URL(import.meta.url), { workerData: { dataDir, databaseUrl: t.databaseUrl, passwordCost: t.site.passwordCost } satisfies Start });
  const urls = await new Promise<{ url: string; mpUrl: string }>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`the second site instance exited (${code}) before it listened`)));
  });
  return {
    ...urls,
    async close() {
      const exited = new Promise((resolve) => worker.once("exit", resolve));
      worker.postMessage("close");
      await exited;
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  const { dataDir, databaseUrl, passwordCost } = workerData as Start;
  const { openSite } = await import("../../src/site/site.ts");
  const { startSiteServer } = await import("../../src/roles/site/server.ts");
  const { startManagementPoint } = await import("../../src/roles/management/server.ts");
  const { ensureServerCertificate } = await import("../../src/security/site-keys.ts");
  const { createLogger } = await import("../../src/log.ts");
  const site = await openSite({ dataDir, databaseUrl, log: createLogger({ level: "error" }), passwordCost });
  const tls = await ensureServerCertificate(site.keys, dataDir, ["localhost", "127.0.0.1"]);
  const server = await startSiteServer({ site, host: "127.0.0.1", port: 0, tls });
  const mp = await startManagementPoint({ site, host: "127.0.0.1", port: 0, tls });
  port.on("message", async () => {
    await mp.close();
    await server.close();
    await site.close();
    port.close();
  });
  port.postMessage({ url: server.url, mpUrl: mp.url });
}
