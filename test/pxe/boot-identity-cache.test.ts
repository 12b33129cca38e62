/**
 * The PXE responder's in-memory boot identities against a real SQLite site: a change made
 * through the site is seen at once; one made behind its back (another process) once the
 * entry expires.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { DatabaseSync } from "node:sqlite";
import { initSite, type Site } from "../../src/site/site.ts";
import { stores } from "../../src/storage/stores.ts";
import { createLogger } from "../../src/log.ts";
import { BootIdentityCache } from "../../src/roles/distribution/boot-identity-cache.ts";
import { tempDir, TEST_PASSWORD_COST } from "../support/site.ts";

describe("boot identity cache", () => {
  let dir = "";
  let site: Site;
  const MAC = "52:54:00:aa:00:01";
  const UUID = "6f1f4a52-1c9b-4f7e-9d7e-0000000000aa";
  const cacheFor = (ttlMs: number) => {
    const s = stores(site.db);
    return new BootIdentityCache({ byMac: (m) => s.devices.bootIdentityByMac(m), byUuid: (u) => s.devices.bootIdentityByUuid(u), ttlMs });
  };

  before(async () => {
    dir = tempDir();
    ({ site } = await initSite({ dataDir: path.join(dir, "data"), adminPassword: "Cache-Test-Passphrase-1", log: createLogger({ level: "error" }), passwordCost: TEST_PASSWORD_COST }));
  });
  after(async () => {
    await site?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("remembers a device and its absence, and sees an approval, a block and a deletion made through the site at once", async () => {
    const cache = cacheFor(60_000);
    assert.equal(await cache.get(MAC, UUID), undefined);
    assert.equal(cache.peek(MAC, UUID), null, "no such device, remembered");
    const now = site.now().toISOString();
    const d = await stores(site.db).devices.create({ name: "cached-1", macs: [MAC], smbiosUuid: UUID, serial: null, state: "pending", attributes: {} }, now);
    assert.equal(cache.peek(MAC, UUID), undefined, "a new device makes the remembered absence stale");
    assert.equal((await cache.get(MAC, UUID))?.state, "pending");
    assert.equal(cache.peek(MAC, UUID)?.state, "pending", "answered from memory now");
    await stores(site.db).devices.update(d.id, { state: "approved" }, now);
    assert.equal((await cache.get(MAC, UUID))?.state, "approved");
    await site.db.transaction((tx) => stores(tx).devices.update(d.id, { state: "blocked" }, now));
    assert.equal(cache.peek(MAC, UUID), undefined);
    assert.equal((await cache.get(MAC, UUID))?.state, "blocked");
    // Seen last-seen updates (every agent request) do not throw the memory away.
    await stores(site.db).devices.update(d.id, { lastSeenAt: now }, now);
    assert.equal(cache.peek(MAC, UUID)?.state, "blocked");
    await stores(site.db).devices.delete(d.id);
    assert.equal(await cache.get(MAC, UUID), undefined);
  });

  it("finds a machine by SMBIOS UUID when its device records no MAC; a UUID held by a device with its own MAC names nobody", async () => {
    const cache = cacheFor(60_000);
    await stores(site.db).devices.create({ name: "cached-2", macs: [], smbiosUuid: UUID, serial: null, state: "approved", attributes: {} }, site.now().toISOString());
    assert.equal((await cache.get("52:54:00:aa:00:99", UUID))?.name, "cached-2");
    assert.equal(cache.peek("52:54:00:aa:00:99", UUID)?.name, "cached-2");
    assert.equal(await cache.get("52:54:00:aa:00:99", undefined), undefined, "no UUID, no match");
    // Two machines sharing one UUID (a firmware plague): the one on record by its MAC is not the other.
    const shared = "0a0a0a0a-1111-4222-8333-444444444444";
    await stores(site.db).devices.create({ name: "cached-2b", macs: ["52:54:00:aa:00:2b"], smbiosUuid: shared, serial: null, state: "approved", attributes: {} }, site.now().toISOString());
    assert.equal(await cacheFor(60_000).get("52:54:00:aa:00:98", shared), undefined);
    assert.equal((await cacheFor(60_000).get("52:54:00:aa:00:2b", shared))?.name, "cached-2b", "by its own MAC it is itself");
  });

  it("a change written by another process is seen once the entry expires", async () => {
    const mac = "52:54:00:aa:00:03";
    const d = await stores(site.db).devices.create({ name: "cached-3", macs: [mac], smbiosUuid: null, serial: null, state: "approved", attributes: {} }, site.now().toISOString());
    const slow = cacheFor(60_000);
    const quick = cacheFor(20);
    assert.equal((await slow.get(mac, undefined))?.state, "approved");
    assert.equal((await quick.get(mac, undefined))?.state, "approved");
    // Another connection, as another process would write it: this process's stores never see it.
    const other = new DatabaseSync(path.join(dir, "data", "slipway.db"));
    other.prepare(`UPDATE devices SET state = 'blocked' WHERE id = ?`).run(d.id);
    other.close();
    assert.equal(slow.peek(mac, undefined)?.state, "approved", "until it expires, memory answers");
    await sleep(40);
    assert.equal(quick.peek(mac, undefined), undefined, "expired");
    assert.equal((await quick.get(mac, undefined))?.state, "blocked");
  });
});
