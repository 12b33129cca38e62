/**
 * The device identity lifecycle, from outside over real mutual TLS: the exact escapes of
 * issue #10 (items 2, 3, 5 and the certificate part of 7), each refused, changing nothing,
 * audited — and what an administrator's explicit approval brings back.
 *
 *  - a revoked or blocked identity never comes back by itself;
 *  - pre-approval is spent by the first enrollment;
 *  - a media credential never hands out an existing device's identity;
 *  - a superseded certificate never works again;
 *  - a scoped Security Administrator sees and touches only its devices' certificates.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import * as x509 from "@peculiar/x509";
import { startTestSite, adminWithRoles, ADMIN_PASSWORD, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { newMachine, type TestMachine } from "../support/device.ts";
import { callAs, crlEntries, renew } from "../support/identity.ts";
import { issueBootToken } from "../../src/site/credentials.ts";

type Audit = { seq: number; actor: string; action: string; object: string | null; outcome: string; details: Record<string, unknown> | null };

for (const database of databasesUnderTest()) {
  describe(`device identity lifecycle on ${database}`, () => {
    let t: TestSite;
    let n = 0;
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const ids = () => {
      n++;
      const h = n.toString(16).padStart(4, "0");
      return { macs: [`52:54:00:20:${h.slice(0, 2)}:${h.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00000020${h}` };
    };
    async function approved(name: string, extra: Record<string, unknown> = {}) {
      const i = ids();
      const r = await admin("POST", "/api/v1/devices", { name, macs: i.macs, smbiosUuid: i.smbiosUuid, state: "approved", ...extra });
      assert.equal(r.status, 201, r.text);
      return { m: await newMachine(t, i), id: r.body.id as string, i };
    }
    const lastSeq = async () => {
      const all = (await admin("GET", "/api/v1/audit?limit=1000")).body as Audit[];
      let seq = all.at(-1)?.seq ?? 0;
      for (let page = all; page.length === 1000; seq = page.at(-1)!.seq) page = (await admin("GET", `/api/v1/audit?after=${seq}&limit=1000`)).body;
      return seq;
    };
    const auditSince = async (seq: number, action?: string) =>
      ((await admin("GET", `/api/v1/audit?after=${seq}&limit=1000${action ? `&action=${action}` : ""}`)).body as Audit[]);
    /** What an attacker's refused attempt must leave untouched: the device, its certificates, the credentials. */
    const snapshot = async (id: string) => JSON.stringify({
      device: (await admin("GET", `/api/v1/devices/${id}`)).body,
      certs: (await admin("GET", `/api/v1/certificates?device=${id}`)).body,
      creds: (await admin("GET", "/api/v1/enrollment-credentials")).body,
      devices: (await admin("GET", "/api/v1/devices")).body.map((d: { id: string; state: string }) => `${d.id}:${d.state}`),
    });
    const bootToken = async (m: TestMachine, deviceId: string) => (await issueBootToken(t.site, { deviceId, mac: m.macs[0], smbiosUuid: m.smbiosUuid })).token;
    const media = async (uses = 5) => (await admin("POST", "/api/v1/enrollment-credentials", { name: `media-${++n}`, uses })).body.secret as string;

    before(async () => {
      t = await startTestSite({ database });
    });
    after(() => t.close());

    it("a device whose certificate was revoked cannot re-enroll as pre-approved, by boot token or by media until an administrator approves it again", async () => {
      const { m, id, i } = await approved("revoked-pc");
      assert.equal((await m.enroll({ kind: "boot-token", token: await bootToken(m, id) })).status, 201);
      const serial = (await admin("GET", `/api/v1/certificates?device=${id}`)).body[0].serial;
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/revoke`, { reason: "keyCompromise" })).status, 200);
      assert.equal((await admin("GET", `/api/v1/devices/${id}`)).body.state, "blocked", "revoking a device's certificate blocks the device");

      const token = await bootToken(m, id);
      const secret = await media();
      const before = await snapshot(id);
      const seq = await lastSeq();
      const thief = await newMachine(t, i);
      for (const cred of [{ kind: "pre-approved" }, { kind: "boot-token", token }, { kind: "media", secret }]) {
        const r = await thief.enroll(cred);
        // Only a boot token's holder learns the device is blocked; by identifiers alone the
        // answer is the one every refusal gets (no oracle for which identifiers are blocked).
        assert.equal(r.status, cred.kind === "boot-token" ? 403 : 401, `${cred.kind}: ${r.text}`);
        assert.equal(r.body.code, cred.kind === "boot-token" ? "SLIPWAY_DEVICE_BLOCKED" : "SLIPWAY_ENROLLMENT_REFUSED");
      }
      assert.equal(await snapshot(id), before, "nothing changed");
      const denied = (await auditSince(seq, "device.enroll")).filter((e) => e.outcome === "denied");
      assert.deepEqual(denied.map((e) => e.details?.via), ["pre-approved", "boot-token", "media"], "each refusal is audited");

      // The administrator's explicit new approval, audited, re-arms one enrollment.
      const ok = await admin("POST", `/api/v1/devices/${id}/approve`);
      assert.equal(ok.status, 200, ok.text);
      assert.equal(ok.body.preApproval, "armed");
      assert.ok((await auditSince(seq, "device.approve")).some((e) => e.object === `device:${id}` && e.details?.preApproval === "armed"));
      const back = await thief.enroll({ kind: "pre-approved" });
      assert.equal(back.status, 201, back.text);
      const again = await (await newMachine(t, i)).enroll({ kind: "pre-approved" });
      assert.equal(again.status, 401, "the re-armed pre-approval is spent by that one enrollment");
      for (const x of [m, thief]) x.close();
    });

    it("a blocked certificate holds its device: no enrollment of any kind until it is unblocked or revoked and re-approved", async () => {
      const { m, id, i } = await approved("blocked-cert-pc");
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      const serial = (await admin("GET", `/api/v1/certificates?device=${id}`)).body[0].serial;
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/block`, {})).status, 200);
      const token = await bootToken(m, id);
      const before = await snapshot(id);
      const seq = await lastSeq();
      const r = await (await newMachine(t, i)).enroll({ kind: "boot-token", token });
      assert.equal(r.status, 403, r.text);
      assert.equal(r.body.code, "SLIPWAY_DEVICE_BLOCKED");
      assert.equal(await snapshot(id), before);
      assert.ok((await auditSince(seq, "device.enroll")).some((e) => e.outcome === "denied"));
      assert.equal((await admin("POST", `/api/v1/certificates/${serial}/unblock`, {})).status, 200);
      assert.equal((await callAs(t, { keyPem: m.keyPem, certPem: m.certPem! }, "GET", "/mp/v1/policy")).status, 200);
      m.close();
    });

    it("pre-approval is spent by the first enrollment even when that was by boot token, and does not come back when the device is unblocked", async () => {
      const { m, id, i } = await approved("spent-pc");
      assert.equal((await m.enroll({ kind: "boot-token", token: await bootToken(m, id) })).status, 201);
      assert.equal((await admin("GET", `/api/v1/devices/${id}`)).body.preApproval, "spent");
      const seq = await lastSeq();
      const spoof = await newMachine(t, i);
      assert.equal((await spoof.enroll({ kind: "pre-approved" })).status, 401);
      // Blocking and unblocking while it holds a live certificate resumes that identity only.
      await admin("POST", `/api/v1/devices/${id}/block`);
      const un = await admin("POST", `/api/v1/devices/${id}/approve`);
      assert.equal(un.body.preApproval, "spent");
      assert.equal((await spoof.enroll({ kind: "pre-approved" })).status, 401);
      assert.equal((await auditSince(seq, "device.enroll")).filter((e) => e.outcome === "denied").length, 2);
      for (const x of [m, spoof]) x.close();
    });

    it("a media credential does not take over an enrolled device presenting only its MAC, or its MAC with another UUID", async () => {
      const { m, id, i } = await approved("media-victim");
      assert.equal((await m.enroll({ kind: "boot-token", token: await bootToken(m, id) })).status, 201);
      const secret = await media();
      const before = await snapshot(id);
      const seq = await lastSeq();
      const attempts = [
        { macs: i.macs, smbiosUuid: null },
        { macs: i.macs, smbiosUuid: "00000000-0000-4000-8000-0000deadbeef" },
        { macs: [...i.macs, "52:54:00:99:99:99"], smbiosUuid: null },
        { macs: ["52:54:00:99:99:98"], smbiosUuid: i.smbiosUuid },
        // Every identifier matches, but the device holds a live certificate.
        { macs: i.macs, smbiosUuid: i.smbiosUuid },
      ];
      for (const a of attempts) {
        const r = await (await newMachine(t, a)).enroll({ kind: "media", secret });
        assert.equal(r.status, 401, `${JSON.stringify(a)}: ${r.text}`);
        assert.equal(r.body.code, "SLIPWAY_ENROLLMENT_REFUSED");
      }
      assert.equal(await snapshot(id), before, "nothing changed: no certificate, no device, no use of the credential");
      const denied = (await auditSince(seq, "device.enroll")).filter((e) => e.outcome === "denied" && e.details?.via === "media");
      assert.equal(denied.length, attempts.length);
      m.close();
    });

    it("a media credential does not re-approve a device an administrator unapproved, nor mix two devices' identifiers", async () => {
      const a = await approved("media-unapproved");
      assert.equal((await a.m.enroll({ kind: "pre-approved" })).status, 201);
      const serial = (await admin("GET", `/api/v1/certificates?device=${a.id}`)).body[0].serial;
      // No live identity left, approved again and then unapproved: pending, but enrolled before.
      await admin("POST", `/api/v1/certificates/${serial}/revoke`, { reason: "cessationOfOperation" });
      await admin("POST", `/api/v1/devices/${a.id}/approve`);
      await admin("POST", `/api/v1/devices/${a.id}/unapprove`);
      const b = await approved("media-other");
      const secret = await media();
      const seq = await lastSeq();
      const before = [await snapshot(a.id), await snapshot(b.id)];
      const same = await (await newMachine(t, a.i)).enroll({ kind: "media", secret });
      assert.equal(same.status, 401, same.text);
      const mixed = await (await newMachine(t, { macs: a.i.macs, smbiosUuid: b.i.smbiosUuid })).enroll({ kind: "media", secret });
      assert.equal(mixed.status, 401, mixed.text);
      assert.deepEqual([await snapshot(a.id), await snapshot(b.id)], before);
      assert.equal((await auditSince(seq, "device.enroll")).filter((e) => e.outcome === "denied").length, 2);
      a.m.close();
      b.m.close();
    });

    it("a media credential does not approve a device on record; once an administrator approves it, media enrolls it with every identifier", async () => {
      const i = ids();
      const d = await admin("POST", "/api/v1/devices", { name: "media-pending", macs: i.macs, smbiosUuid: i.smbiosUuid });
      assert.equal(d.body.state, "pending");
      const secret = await media();
      const before = await snapshot(d.body.id);
      const seq = await lastSeq();
      const m = await newMachine(t, i);
      for (const who of [await newMachine(t, { macs: i.macs, smbiosUuid: null }), m]) {
        const r = await who.enroll({ kind: "media", secret });
        assert.equal(r.status, 401, r.text);
      }
      assert.equal(await snapshot(d.body.id), before);
      assert.equal((await auditSince(seq, "device.enroll")).filter((e) => e.outcome === "denied").length, 2);
      await admin("POST", `/api/v1/devices/${d.body.id}/approve`);
      assert.equal((await (await newMachine(t, { macs: i.macs, smbiosUuid: null })).enroll({ kind: "media", secret })).status, 401, "still not by its MAC alone");
      const r = await m.enroll({ kind: "media", secret });
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.deviceId, d.body.id);
      assert.equal((await admin("GET", `/api/v1/devices/${d.body.id}`)).body.preApproval, "spent");
      m.close();
    });

    it("renewal supersedes the certificate it was proven with: into the CRL, refused on every route, and never renews again", async () => {
      const { m, id } = await approved("renewer");
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      const old = { keyPem: m.keyPem, certPem: m.certPem! };
      const oldSerial = (await admin("GET", `/api/v1/certificates?device=${id}`)).body[0].serial;
      const { r, next } = await renew(t, old);
      assert.equal(r.status, 201, r.text);
      const certs = (await admin("GET", `/api/v1/certificates?device=${id}`)).body as { serial: string; status: string; reason: string }[];
      assert.deepEqual(certs.map((c) => [c.serial, c.status, c.reason]), [[oldSerial, "revoked", "superseded"], [r.body.serial, "active", null]]);
      assert.equal((await crlEntries(t)).get(oldSerial), x509.X509CrlReason.superseded);

      const before = await snapshot(id);
      const seq = await lastSeq();
      const again = await renew(t, old);
      assert.equal(again.r.status, 403, again.r.text);
      for (const [method, path, body] of [["GET", "/mp/v1/policy"], ["GET", `/mp/v1/devices/${id}/policy`], ["POST", "/mp/v1/runs", { deployment: "x", bootPath: "pxe" }]] as const) {
        assert.equal((await callAs(t, old, method, path, body)).status, 403, `${method} ${path}`);
      }
      assert.equal(await snapshot(id), before, "nothing changed");
      const denied = (await auditSince(seq)).filter((e) => e.outcome === "denied" && JSON.stringify(e.details).includes(oldSerial));
      assert.ok(denied.length >= 4, `each refusal of the old certificate is audited (${denied.length})`);
      assert.equal((await callAs(t, next!, "GET", "/mp/v1/policy")).status, 200, "the new certificate works");
      m.close();
    });

    it("a blocked certificate, a blocked device and an unapproved device cannot renew", async () => {
      const { m, id } = await approved("no-renew");
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      const me = { keyPem: m.keyPem, certPem: m.certPem! };
      const serial = (await admin("GET", `/api/v1/certificates?device=${id}`)).body[0].serial;
      const seq = await lastSeq();
      await admin("POST", `/api/v1/certificates/${serial}/block`, {});
      assert.equal((await renew(t, me)).r.status, 403);
      await admin("POST", `/api/v1/certificates/${serial}/unblock`, {});
      await admin("POST", `/api/v1/devices/${id}/block`);
      assert.equal((await renew(t, me)).r.status, 403);
      await admin("POST", `/api/v1/devices/${id}/unapprove`);
      const r = await renew(t, me);
      assert.equal(r.r.status, 403, r.r.text);
      assert.equal((await admin("GET", `/api/v1/certificates?device=${id}`)).body.length, 1, "nothing issued");
      assert.ok((await auditSince(seq)).filter((e) => e.outcome === "denied").length >= 3);
      m.close();
    });

    it("two renewals racing with one certificate: exactly one succeeds", async () => {
      const { m, id } = await approved("racing-renewer");
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      const me = { keyPem: m.keyPem, certPem: m.certPem! };
      const results = await Promise.all([renew(t, me), renew(t, me), renew(t, me)]);
      assert.deepEqual(results.map((x) => x.r.status).sort(), [201, 403, 403]);
      const active = (await admin("GET", `/api/v1/certificates?device=${id}&status=active`)).body;
      assert.equal(active.length, 1);
      m.close();
    });

    it("deleting a device revokes its certificates: listed in the CRL, refused over mutual TLS", async () => {
      const { m, id } = await approved("deleted-pc");
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      const serial = (await admin("GET", `/api/v1/certificates?device=${id}`)).body[0].serial;
      assert.equal((await admin("DELETE", `/api/v1/devices/${id}`)).status, 204);
      assert.equal((await crlEntries(t)).get(serial), x509.X509CrlReason.cessationOfOperation);
      assert.equal((await callAs(t, { keyPem: m.keyPem, certPem: m.certPem! }, "GET", "/mp/v1/policy")).status, 403);
      m.close();
    });

    it("a scoped Security Administrator sees and touches only the certificates of devices in its scope", async () => {
      const coll = await admin("POST", "/api/v1/collections", { name: "Scope A", rule: "attributes.room == 'A'" });
      assert.equal(coll.status, 201, coll.text);
      const inA = await approved("cert-in-a", { attributes: { room: "A" } });
      const inB = await approved("cert-in-b", { attributes: { room: "B" } });
      for (const x of [inA, inB]) assert.equal((await x.m.enroll({ kind: "pre-approved" })).status, 201);
      const serialA = (await admin("GET", `/api/v1/certificates?device=${inA.id}`)).body[0].serial;
      const serialB = (await admin("GET", `/api/v1/certificates?device=${inB.id}`)).body[0].serial;
      const token = await adminWithRoles(t, `scoped-sec-${database}`, ["security-administrator"], [coll.body.id]);
      const as = (m: string, p: string, body?: unknown) => t.request(m, p, { token, body });

      const listed = (await as("GET", "/api/v1/certificates")).body as { serial: string; kind: string; device: string | null }[];
      assert.ok(listed.some((c) => c.serial === serialA));
      assert.ok(listed.every((c) => c.kind === "device" && c.device === inA.id), `only its devices' certificates: ${JSON.stringify(listed.map((c) => c.kind))}`);
      const seq = await lastSeq();
      const before = await snapshot(inB.id);
      assert.equal((await as("GET", `/api/v1/certificates?device=${inB.id}`)).status, 404);
      for (const action of ["block", "revoke", "unblock"]) {
        const r = await as("POST", `/api/v1/certificates/${serialB}/${action}`, {});
        assert.equal(r.status, 404, `${action}: ${r.text}`);
      }
      assert.equal(await snapshot(inB.id), before, "nothing changed");
      const denied = (await auditSince(seq)).filter((e) => e.outcome === "denied" && e.actor === `admin:scoped-sec-${database}`);
      assert.equal(denied.length, 4, JSON.stringify(denied));
      assert.equal((await as("POST", `/api/v1/certificates/${serialA}/block`, {})).status, 200, "its own device's certificate it can block");
      for (const x of [inA, inB]) x.m.close();
    });
  });

  describe(`device identity after a certificate expires on ${database}`, () => {
    // Its own site: the clock moves eight days ahead, after which certificates issued here are
    // not yet valid for the TLS stack (which checks the real clock); only enrollment is tried.
    let t: TestSite;
    let clock = Date.now();
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    before(async () => {
      t = await startTestSite({ database, now: () => new Date(clock) });
    });
    after(() => t.close());

    it("pre-approval stays spent after the certificate expires; media enrolls the device again only with every identifier on record", async () => {
      const i = { macs: ["52:54:00:21:00:01"], smbiosUuid: "00000000-0000-4000-8000-000000210001" };
      const d = await admin("POST", "/api/v1/devices", { name: "expiring", ...i, state: "approved" });
      const m = await newMachine(t, i);
      assert.equal((await m.enroll({ kind: "pre-approved" })).status, 201);
      const secret = (await admin("POST", "/api/v1/enrollment-credentials", { name: "usb", uses: 3, expiresInHours: 24 * 30 })).body.secret;
      clock += 8 * 86_400_000;
      // The administrator's session ran out with the clock: sign in again.
      const signIn = await t.request("POST", "/api/v1/sessions", { body: { username: "admin", password: `${ADMIN_PASSWORD}-changed` } });
      assert.equal(signIn.status, 201, signIn.text);
      t.adminToken = signIn.body.token;
      const before = JSON.stringify([(await admin("GET", `/api/v1/devices/${d.body.id}`)).body, (await admin("GET", `/api/v1/certificates?device=${d.body.id}`)).body]);
      const spoof = await newMachine(t, i);
      assert.equal((await spoof.enroll({ kind: "pre-approved" })).status, 401, "pre-approval was spent by the first enrollment");
      assert.equal((await (await newMachine(t, { macs: i.macs, smbiosUuid: null })).enroll({ kind: "media", secret })).status, 401, "not by its MAC alone");
      assert.equal(JSON.stringify([(await admin("GET", `/api/v1/devices/${d.body.id}`)).body, (await admin("GET", `/api/v1/certificates?device=${d.body.id}`)).body]), before);
      const r = await spoof.enroll({ kind: "media", secret });
      assert.equal(r.status, 201, "every identifier on record, no live certificate: the media credential admits it");
      assert.equal(r.body.deviceId, d.body.id);
      m.close();
    });
  });
}
