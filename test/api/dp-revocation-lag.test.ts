/**
 * A distribution point follows its site's trust decisions within the bound (5 s): a blocked,
 * revoked or deleted device is refused there, and a removed distribution point serves nothing
 * and stays so. Real site over HTTPS, a real distribution point (in this process, so its clock
 * can be a fake one: it starts at Date.now() and only moves forward), real devices over mutual
 * TLS.
 *
 * No test asserts how fast anything was in real time. Two mechanisms are checked instead:
 * - the generation: once the distribution point has seen the site's current trust generation,
 *   its very next answer follows the site, with its clock standing still (so no cached answer
 *   can have expired);
 * - the bound: with its clock moved on by 5 s, it answers what the site answers now, whether or
 *   not it has heard of the change (that covers policy changes, which bump no generation).
 * Waits for the distribution point to notice have deadlines of 20 s: generous next to the
 * one-second trust poll, and short of the 30 s between content polls (which refresh the CRL)
 * and of the minute answers used to be kept, so they fail on code that relied on those.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import https from "node:https";
import path from "node:path";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { startTestSite, tempDir, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { fetchBytes, newMachine, type TestMachine } from "../support/device.ts";
import { addImage } from "../../src/site/content-library.ts";
import { startDistributionPoint, type RunningDistributionPoint } from "../../src/roles/distribution/distribution-point.ts";
import { createLogger } from "../../src/log.ts";
import { SiteLink } from "../../src/roles/distribution/dp-site-link.ts";
import { HttpsError } from "../../src/security/pinned-https.ts";
import { SiteTrust } from "../../src/roles/distribution/dp-trust.ts";
import { enrollIdentity, renewIdentity } from "../../src/roles/distribution/dp-identity.ts";

const BOUND_MS = 5_000;
const NOTICE_MS = 20_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function until<T>(what: string, probe: () => Promise<T | undefined | null | false>, ms = NOTICE_MS): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(50);
  }
}

// Devices reach a distribution point by its registered name (never a loopback name), resolved here to loopback.
const dpAgent = new https.Agent({
  lookup: ((_host: string, opts: { all?: boolean }, cb: (...a: unknown[]) => void) =>
    opts.all ? cb(null, [{ address: "127.0.0.1", family: 4 }]) : cb(null, "127.0.0.1", 4)) as never,
});

type Clock = { now(): number; advance(ms: number): void };

/** A clock that starts at Date.now() and moves with real time, plus whatever the test adds. */
function fakeClock(): Clock {
  let ahead = 0;
  return { now: () => Date.now() + ahead, advance: (ms) => void (ahead += ms) };
}

/** A clock that starts at Date.now() and stands still: no answer the distribution point kept can expire by it. */
function stoppedClock(): Clock {
  const at = Date.now();
  let ahead = 0;
  return { now: () => at + ahead, advance: (ms) => void (ahead += ms) };
}

type RunningDp = RunningDistributionPoint;

for (const database of databasesUnderTest()) {
  describe(`distribution points follow the site's trust within 5 s on ${database}`, () => {
    let t: TestSite;
    let dir: string;
    let digest = "";
    let dpSeq = 0;
    let deviceSeq = 0;
    const running: RunningDp[] = [];
    const machines: TestMachine[] = [];
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const siteGeneration = async () => Number((await t.site.db.get<{ generation: unknown }>(`SELECT generation FROM trust_generation`))!.generation);

    /** Registers, enrolls and starts a distribution point with a fake clock; waits until it holds the image. */
    async function newDp(clock = fakeClock()): Promise<{ dp: RunningDp; url: string; id: string; dataDir: string; clock: Clock }> {
      dpSeq++;
      const port = await freePort();
      const host = `dp-lag-${dpSeq}.test`;
      const r = await admin("POST", "/api/v1/distribution-points", { name: `lag-${dpSeq}`, url: `https://${host}:${port}` });
      assert.equal(r.status, 201, r.text);
      const dataDir = path.join(dir, `dp-${dpSeq}`);
      const dp: RunningDp = await startDistributionPoint({
        dataDir, siteUrl: t.mp.url, caPem: t.ca, host: "127.0.0.1", port, publicNames: [], enrollSecret: r.body.secret,
        log: createLogger({ level: "error", write: () => {} }), now: clock.now,
      });
      running.push(dp);
      assert.equal((await admin("POST", `/api/v1/distribution-points/${r.body.id}/content`, { image: "lag-image" })).status, 201);
      await until("the image replicated", async () => {
        await dp.poll();
        return dp.replicator.ready.has(digest);
      });
      return { dp, url: `https://${host}:${port}`, id: r.body.id, dataDir, clock };
    }

    /** An approved, enrolled device, a static member of the collection the deployment targets when `member`. */
    async function newDevice(member = true): Promise<{ m: TestMachine; id: string }> {
      deviceSeq++;
      const hex = deviceSeq.toString(16).padStart(4, "0");
      const ids = { macs: [`52:54:00:e1:${hex.slice(0, 2)}:${hex.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-e1000000${hex}` };
      const r = await admin("POST", "/api/v1/devices", { name: `lag-${deviceSeq}`, ...ids, state: "approved" });
      assert.equal(r.status, 201, r.text);
      const m = await newMachine(t, ids);
      machines.push(m);
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      if (member) assert.equal((await admin("POST", "/api/v1/collections/Lag/members", { device: r.body.id })).status, 201);
      return { m, id: r.body.id };
    }

    const atDp = async (url: string, m: TestMachine) => {
      const r = await fetchBytes(url, t.ca, m, `/mp/v1/content/${digest}/manifest`, { agent: dpAgent });
      let code: string | undefined;
      try {
        code = JSON.parse(r.body.toString()).code;
      } catch {
        code = undefined;
      }
      return { status: r.status, code };
    };
    const atSite = async (m: TestMachine) => (await m.call("GET", `/mp/v1/content/${digest}/manifest`)).status;
    const serial = async (deviceId: string) => ((await admin("GET", `/api/v1/certificates?device=${deviceId}&status=active`)).body as { serial: string }[])[0].serial;

    before(async () => {
      t = await startTestSite({ database });
      dir = tempDir("slipway-dp-lag-");
      const file = path.join(dir, "lag.img");
      fs.writeFileSync(file, randomBytes(70_000));
      digest = (await addImage(t.site, { file, name: "lag-image", actor: "test" })).record.digest;
      assert.equal((await admin("POST", "/api/v1/collections", { name: "Lag" })).status, 201);
      const doc = { name: "Lag image", steps: [{ name: "Apply", type: "apply-image", with: { image: "lag-image" } }] };
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
      assert.equal((await admin("POST", "/api/v1/deployments", { name: "Lag", taskSequence: "Lag image", collection: "Lag", purpose: "available", bootPaths: ["pxe", "media"] })).status, 201);
    });
    after(async () => {
      for (const dp of running) await dp.close().catch(() => {});
      for (const m of machines) m.close();
      await t.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it("a blocked device is refused at the distribution point as soon as it sees the new trust generation, its clock standing still", async () => {
      const clock = stoppedClock();
      const { dp, url } = await newDp(clock);
      const a = await newDevice();
      assert.equal((await atDp(url, a.m)).status, 200, "served while approved (and the answer kept)");
      assert.equal((await admin("POST", `/api/v1/devices/${a.id}/block`)).status, 200);
      const refused = await until("the block seen at the distribution point", async () => {
        const r = await atDp(url, a.m);
        return r.status !== 200 ? r : null;
      });
      const generation = await siteGeneration();
      assert.deepEqual(refused, { status: 403, code: "SLIPWAY_DEVICE_BLOCKED" }, "refused as the management point refuses it");
      assert.ok((dp.trustGeneration ?? -1) >= generation, "refused because the generation changed: the clock did not move");
      const denied = (await admin("GET", "/api/v1/audit?action=content.denied&limit=50")).body as { actor: string; details: { reason: string } }[];
      assert.ok(denied.some((e) => e.actor === `device:${a.id}` && e.details.reason === "the device is blocked"), "the site says why, in its audit log");

      // A refusal is kept no longer than a grant: approving again is seen the same way.
      assert.equal((await admin("POST", `/api/v1/devices/${a.id}/approve`)).status, 200);
      await until("the approval seen at the distribution point", async () => (await atDp(url, a.m)).status === 200);
    });

    it("with its clock moved on by 5 s, the distribution point answers what the site answers now, whether or not it has heard of the change", async () => {
      const { url, clock } = await newDp();
      const a = await newDevice();
      const b = await newDevice(false);
      assert.equal((await atDp(url, a.m)).status, 200);
      assert.equal((await atDp(url, b.m)).status, 403, "b's policy does not name the image (and that refusal is kept)");
      assert.equal((await admin("POST", `/api/v1/devices/${a.id}/block`)).status, 200);
      assert.equal((await admin("POST", "/api/v1/collections/Lag/members", { device: b.id })).status, 201, "b is granted the image");
      clock.advance(BOUND_MS);
      assert.equal((await atDp(url, a.m)).status, 403, "the block, 5 s on");
      assert.equal((await atDp(url, b.m)).status, 200, "the grant, 5 s on: a refusal is not kept longer than a grant");
      assert.equal((await admin("DELETE", `/api/v1/collections/Lag/members/${b.id}`)).status, 204, "and withdrawn again");
      clock.advance(BOUND_MS);
      assert.equal((await atDp(url, b.m)).status, 403, "the withdrawal, 5 s on");
    });

    it("a revoked certificate and a deleted device are refused once the distribution point sees the new generation", async () => {
      const clock = stoppedClock();
      const { dp, url } = await newDp(clock);
      const a = await newDevice();
      const b = await newDevice();
      assert.equal((await atDp(url, a.m)).status, 200);
      assert.equal((await atDp(url, b.m)).status, 200);
      assert.equal((await admin("POST", `/api/v1/certificates/${await serial(a.id)}/revoke`, { reason: "keyCompromise" })).status, 200);
      assert.equal((await admin("DELETE", `/api/v1/devices/${b.id}`)).status, 204);
      const ra = await until("the revocation seen", async () => {
        const r = await atDp(url, a.m);
        return r.status !== 200 ? r : null;
      });
      const rb = await until("the deletion seen", async () => {
        const r = await atDp(url, b.m);
        return r.status !== 200 ? r : null;
      });
      assert.deepEqual(ra, { status: 403, code: "SLIPWAY_DEVICE_BLOCKED" });
      assert.deepEqual(rb, { status: 403, code: "SLIPWAY_DEVICE_BLOCKED" }, "a deleted device's certificates are revoked with it");
      const generation = await siteGeneration();
      assert.ok((dp.trustGeneration ?? -1) >= generation, "refused because the generation changed: the clock did not move");
    });

    it("a removed distribution point stops serving, does not come back by itself, and serves again only after an administrator enrolls it anew", async () => {
      const clock = stoppedClock();
      const { dp, url, id, dataDir } = await newDp(clock);
      const a = await newDevice();
      assert.equal((await atDp(url, a.m)).status, 200);
      assert.equal((await admin("DELETE", `/api/v1/distribution-points/${id}`)).status, 204);
      const refused = await until("the removal seen at the distribution point", async () => {
        const r = await atDp(url, a.m);
        return r.status !== 200 ? r : null;
      });
      assert.deepEqual(refused, { status: 410, code: "SLIPWAY_DP_REMOVED" });
      assert.equal((await fetchBytes(url, t.ca, a.m, `/mp/v1/content/${digest}/data`, { agent: dpAgent, method: "HEAD" })).status, 410, "no bytes either");
      // Nothing it does brings it back: not another poll, not the site being asked again.
      await dp.poll();
      await dp.checkTrust();
      assert.equal((await atDp(url, a.m)).status, 410, "still removed after polling again");
      await dp.close();
      // Nor a restart: its folder says so, and it needs an administrator's new secret.
      const port = Number(new URL(url).port);
      const opts = { dataDir, siteUrl: t.mp.url, caPem: t.ca, host: "127.0.0.1", port, publicNames: [], log: createLogger({ level: "error", write: () => {} }) };
      await assert.rejects(startDistributionPoint(opts), /removed/);
      const again = await admin("POST", "/api/v1/distribution-points", { name: `lag-again-${dpSeq}`, url });
      assert.equal(again.status, 201, again.text);
      const back: RunningDp = await startDistributionPoint({ ...opts, enrollSecret: again.body.secret });
      running.push(back);
      assert.equal((await admin("POST", `/api/v1/distribution-points/${again.body.id}/content`, { image: "lag-image" })).status, 201);
      await until("the image replicated again", async () => {
        await back.poll();
        return back.replicator.ready.has(digest);
      });
      assert.equal((await atDp(url, a.m)).status, 200, "enrolled anew by an administrator, it serves again");
    });

    it("a distribution point whose certificate is blocked stops serving within the bound, and serves again once it is unblocked: a block is not a removal", async () => {
      const { dp, url, id, clock } = await newDp();
      const a = await newDevice();
      assert.equal((await atDp(url, a.m)).status, 200);
      const own = ((await admin("GET", `/api/v1/distribution-points/${id}`)).body.certificates as { serial: string; kind: string; status: string }[])
        .find((c) => c.kind === "dp" && c.status === "active")!.serial;
      assert.equal((await admin("POST", `/api/v1/certificates/${own}/block`, { reason: "unspecified" })).status, 200);
      await dp.checkTrust();
      clock.advance(BOUND_MS);
      assert.deepEqual(await atDp(url, a.m), { status: 503, code: "SLIPWAY_UNAVAILABLE" }, "nothing served without the site's say-so");
      assert.equal(dp.removed, null, "but not removed: a block can be lifted");
      assert.equal((await admin("POST", `/api/v1/certificates/${own}/unblock`, {})).status, 200);
      await dp.checkTrust();
      assert.equal((await atDp(url, a.m)).status, 200, "serving again once unblocked");
    });

    it("a distribution point renews its certificates when due by its clock, and goes on serving", async () => {
      const { dp, url, id, clock } = await newDp();
      const a = await newDevice();
      const before = ((await admin("GET", `/api/v1/distribution-points/${id}`)).body.certificates as { serial: string; kind: string; status: string }[])
        .find((c) => c.kind === "dp" && c.status === "active")!.serial;
      clock.advance(21 * 24 * 3600_000); // two thirds of a 30-day certificate: due for renewal
      let renewing = true;
      const checks = (async () => {
        // Trust checks with the old certificate, answered after the renewal superseded it.
        while (renewing) await Promise.all(Array.from({ length: 8 }, () => dp.checkTrust()));
      })();
      await dp.poll();
      renewing = false;
      await checks;
      const certs = (await admin("GET", `/api/v1/distribution-points/${id}`)).body.certificates as { serial: string; kind: string; status: string }[];
      assert.equal(certs.find((c) => c.serial === before)?.status, "revoked", "the renewal happened: the old client certificate is superseded");
      assert.equal(dp.removed, null, "not removed by its own renewal");
      await dp.checkTrust();
      assert.equal(dp.removed, null);
      assert.equal((await atDp(url, a.m)).status, 200, "and still serving");
    });

    it("a refusal of the certificate a renewal is replacing is not taken for a removal; the same refusal after it is", async () => {
      const r = await admin("POST", "/api/v1/distribution-points", { name: `lag-renew-${++dpSeq}`, url: `https://dp-lag-${dpSeq}.test:8445` });
      assert.equal(r.status, 201, r.text);
      const dataDir = path.join(dir, `dp-${dpSeq}`);
      fs.mkdirSync(dataDir, { mode: 0o700 });
      const anonymous = new SiteLink({ url: t.mp.url, caPem: t.ca });
      const first = await enrollIdentity({ link: anonymous, dataDir, caPem: t.ca, secret: r.body.secret, names: [] });
      anonymous.close();
      const link = new SiteLink({ url: t.mp.url, caPem: t.ca, identity: first.client });
      const removals: string[] = [];
      const trust = new SiteTrust({ link, onRemoved: (reason) => removals.push(reason) });
      try {
        await trust.check();
        let during: unknown;
        await link.changeIdentity(async () => {
          const next = await renewIdentity({ link, dataDir, caPem: t.ca, names: [] });
          // The site has superseded the certificate this link still presents: it is refused.
          during = await trust.check().then(() => "answered", (err) => err);
          return next.client;
        });
        assert.ok(during instanceof HttpsError && during.status === 403 && !during.sameIdentity, `refused, during the renewal: ${String(during)}`);
        assert.deepEqual(removals, [], "not removed by its own renewal");
        await trust.check();
        assert.equal(trust.removed, null, "the renewed certificate is answered");
        assert.equal((await admin("DELETE", `/api/v1/distribution-points/${r.body.id}`)).status, 204);
        await trust.check();
        assert.equal(removals.length, 1, "removed, once the site refuses the certificate in use");
        assert.match(trust.removed ?? "", /revoked/);
      } finally {
        link.close();
      }
    });

    it("model: after any sequence of grants, withdrawals, blocks, approvals, revocations, deletions and a removal, the distribution point answers what the site answers", async () => {
      type Dev = { m: TestMachine; id: string; deleted: boolean };
      type World = { dp: RunningDp; url: string; dpId: string; clock: Clock; devices: Dev[]; removed: boolean };
      type Step = { kind: "grant" | "withdraw" | "block" | "approve" | "unapprove" | "revoke" | "delete"; device: number } | { kind: "remove" } | { kind: "request"; device: number };
      const trustSteps = new Set(["block", "approve", "unapprove", "revoke", "delete", "remove"]);

      async function apply(w: World, s: Step): Promise<void> {
        if (s.kind === "remove") {
          if (!w.removed) assert.equal((await admin("DELETE", `/api/v1/distribution-points/${w.dpId}`)).status, 204);
          w.removed = true;
          return;
        }
        const d = w.devices[s.device];
        if (d.deleted || s.kind === "request") return;
        const r = s.kind === "grant" ? await admin("POST", "/api/v1/collections/Lag/members", { device: d.id })
          : s.kind === "withdraw" ? await admin("DELETE", `/api/v1/collections/Lag/members/${d.id}`)
          : s.kind === "revoke" ? await (async () => {
            const live = ((await admin("GET", `/api/v1/certificates?device=${d.id}&status=active`)).body as { serial: string }[])[0];
            return live ? admin("POST", `/api/v1/certificates/${live.serial}/revoke`, { reason: "unspecified" }) : { status: 409, text: "" };
          })()
          : s.kind === "delete" ? await admin("DELETE", `/api/v1/devices/${d.id}`)
          : await admin("POST", `/api/v1/devices/${d.id}/${s.kind}`);
        assert.ok(r.status < 300 || r.status === 404 || r.status === 409, `${s.kind}: ${r.status} ${r.text}`);
        if (s.kind === "delete") d.deleted = true;
      }

      /** The distribution point answers every device as the management point does (status code), or refuses everything once removed. */
      async function agrees(w: World, when: string): Promise<void> {
        for (const [i, d] of w.devices.entries()) {
          const here = await atDp(w.url, d.m);
          if (w.removed) {
            assert.deepEqual(here, { status: 410, code: "SLIPWAY_DP_REMOVED" }, `device ${i} ${when}: a removed distribution point serves nothing`);
            continue;
          }
          const site = await atSite(d.m);
          assert.equal(here.status, site, `device ${i} ${when}: the management point answers ${site}, the distribution point ${here.status} ${here.code}`);
        }
      }

      const step: fc.Arbitrary<Step> = fc.oneof(
        { weight: 16, arbitrary: fc.record({ kind: fc.constantFrom("grant", "withdraw", "block", "approve", "unapprove", "revoke", "delete", "request"), device: fc.nat(1) }) as fc.Arbitrary<Step> },
        { weight: 1, arbitrary: fc.constant({ kind: "remove" } as Step) },
      );
      // One distribution point until a run removes it (the site lets an address enroll 20 a minute); fresh devices every run.
      let current: Awaited<ReturnType<typeof newDp>> | null = null;
      await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 10 }), async (steps) => {
        current ??= await newDp();
        const { dp, url, id, clock } = current;
        const devices: Dev[] = [];
        for (let i = 0; i < 2; i++) devices.push({ ...(await newDevice(i === 0)), deleted: false });
        const w: World = { dp, url, dpId: id, clock, devices, removed: false };
        try {
          await agrees(w, "at the start");
          for (const s of steps) {
            await apply(w, s);
            if (trustSteps.has(s.kind)) {
              // Seen through the generation: one trust poll, and the clock has not moved.
              await w.dp.checkTrust();
              await agrees(w, `right after ${JSON.stringify(s)}`);
            }
            clock.advance(BOUND_MS);
            await agrees(w, `5 s after ${JSON.stringify(s)}`);
          }
        } finally {
          if (w.removed) {
            await dp.close();
            current = null;
          }
        }
      }), { numRuns: 15, endOnFailure: true });
    });
  });
}
