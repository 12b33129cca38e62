/**
 * TPM-bound enrollment (issue #11 item 2), over real mutual TLS with real software TPMs
 * (swtpm): a machine's endorsement key is recorded by its first enrollment that is more than
 * sniffable (or imported by an administrator); every later enrollment that proves it holds
 * that EK — by recovering a credential the site made for it — is `tpm`: unattended (no PXE
 * password), and it gets its secrets. A machine with the same MAC and UUID and another TPM, or
 * none, or a made-up answer, gets no secret and is audited; it cannot displace the real
 * machine's identity either.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { newMachine, request, type TestMachine } from "../support/device.ts";
import { startSwtpm, type Swtpm } from "../support/swtpm.ts";
import { tpmPart } from "../support/tpm.ts";
import { openTpmSocket, TpmSession } from "../../src/agent/tpm.ts";
import { issueBootToken } from "../../src/site/credentials.ts";
import { parseEkPublic } from "../../src/security/tpm-credential.ts";

type Audit = { actor: string; action: string; object: string | null; outcome: string; details: Record<string, any> | null };
const PXE_PASSWORD = "Lab-PXE-Passphrase-TPM-2026";

for (const database of databasesUnderTest()) {
  describe(`TPM-bound enrollment on ${database}`, () => {
    let t: TestSite;
    let n = 0;
    let secretDeployment = "";
    const canary = `CANARY-${randomBytes(8).toString("hex")}`;
    const dir = mkdtempSync(path.join(os.tmpdir(), "slipway-tpm-api-"));
    const tpms: Swtpm[] = [];
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const ids = () => {
      n++;
      const h = n.toString(16).padStart(4, "0");
      return { macs: [`52:54:00:71:${h.slice(0, 2)}:${h.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00000071${h}` };
    };
    async function approved(name: string) {
      const i = ids();
      const r = await admin("POST", "/api/v1/devices", { name, macs: i.macs, smbiosUuid: i.smbiosUuid, state: "approved", attributes: { vendor: "QEMU" } });
      assert.equal(r.status, 201, r.text);
      return { i, id: r.body.id as string };
    }
    /** A software TPM, open for one enrollment at a time (swtpm serves one connection). */
    async function newTpm(): Promise<Swtpm> {
      const s = await startSwtpm(path.join(dir, `tpm-${tpms.length}`));
      tpms.push(s);
      return s;
    }
    async function withTpm<T>(s: Swtpm, f: (tpm: TpmSession) => Promise<T>): Promise<T> {
      const tpm = await TpmSession.open(await openTpmSocket(s.socket));
      try {
        return await f(tpm);
      } finally {
        await tpm.close();
      }
    }
    const bootToken = async (i: { macs: string[]; smbiosUuid: string }, deviceId: string) =>
      (await issueBootToken(t.site, { deviceId, mac: i.macs[0], smbiosUuid: i.smbiosUuid })).token;
    const challenge = (token: string, tpm: unknown) => request(t.mp.url, { method: "POST", path: "/mp/v1/enroll/tpm-challenge", ca: t.ca, body: { token, tpm } });

    /**
     * Enrolls as the agent does: asks a challenge for its TPM's EK, answers it with the TPM
     * (or, with `forge`, with made-up bytes), then enrolls with the answer.
     */
    async function enrollWith(m: TestMachine, token: string, opts: { tpm?: Swtpm; forgeEk?: string; pxePassword?: string } = {}) {
      const cred = { kind: "boot-token", token, ...(opts.pxePassword ? { pxePassword: opts.pxePassword } : {}) };
      if (!opts.tpm) return m.enroll(cred);
      return withTpm(opts.tpm, async (tpm) => {
        const id = tpm.identity();
        // A forger names another machine's EK (public: not a secret) and answers with what it has.
        const claimed = opts.forgeEk ? { ...id, ekPublic: opts.forgeEk } : id;
        return m.enroll(cred, {}, { tpm: await tpmPart(t, token, tpm, claimed) });
      });
    }
    const audit = async (action: string) => (await admin("GET", `/api/v1/audit?action=${action}&limit=1000`)).body as Audit[];
    async function askSecret(m: TestMachine) {
      const run = await m.call("POST", "/mp/v1/runs", { deployment: secretDeployment, bootPath: "pxe" });
      if (run.status !== 201 && run.status !== 200) return run;
      assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "1", name: "Join", state: "started" })).status, 201);
      return m.call("POST", `/mp/v1/runs/${run.body.id}/secrets`, { step: "1", name: "JoinCredential" });
    }
    async function setPassword(on: boolean) {
      const r = on ? await admin("PUT", "/api/v1/pxe/password", { password: PXE_PASSWORD }) : await admin("DELETE", "/api/v1/pxe/password");
      assert.ok(r.status === 204 || (!on && r.status === 404), r.text);
    }

    before(async () => {
      t = await startTestSite({ database });
      assert.equal((await admin("POST", "/api/v1/collections", { name: "Lab", rule: "attributes.vendor == 'QEMU'" })).status, 201);
      assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: canary, secret: true })).status, 201);
      const doc = { name: "Join build", steps: [
        { name: "Say", type: "run-command", with: { command: "true" } },
        { name: "Join", type: "run-command", with: { command: "realm join lab.example" }, runAs: { secret: "JoinCredential" } },
      ] };
      assert.equal((await admin("POST", "/api/v1/task-sequences", { document: doc })).status, 201);
      const d = await admin("POST", "/api/v1/deployments", { name: "Join lab", taskSequence: "Join build", collection: "Lab", purpose: "required", bootPaths: ["pxe"] });
      assert.equal(d.status, 201, d.text);
      secretDeployment = d.body.id;
    });
    after(async () => {
      await t?.close();
      for (const s of tpms) await s.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it("the first password enrollment records the EK it proves; re-imaging then runs unattended as `tpm` and gets the secret; another TPM with the same MAC and UUID gets nothing, audited", async () => {
      const { i, id } = await approved("tpm-1");
      const mine = await newTpm();
      const other = await newTpm();
      const myEk = parseEkPublic(await withTpm(mine, async (x) => x.identity().ekPublic)).fingerprint;

      // A sniffable enrollment proves the TPM but does not get it recorded: an attacker could plant its own.
      await setPassword(false);
      let m = await newMachine(t, i);
      let e = await enrollWith(m, await bootToken(i, id), { tpm: mine });
      assert.equal(e.status, 201, e.text);
      assert.equal(e.body.assurance, "sniffable");
      assert.equal((await admin("GET", `/api/v1/devices/${id}/tpm`)).body.ekFingerprint, null, "a sniffable enrollment records no EK");

      // With the PXE password typed once, the EK it proves is recorded.
      await setPassword(true);
      m = await newMachine(t, i);
      e = await enrollWith(m, await bootToken(i, id), { tpm: mine, pxePassword: PXE_PASSWORD });
      assert.equal(e.status, 201, e.text);
      assert.equal(e.body.assurance, "password");
      const rec = (await admin("GET", `/api/v1/devices/${id}/tpm`)).body;
      assert.equal(rec.ekFingerprint, myEk);
      assert.equal(rec.source, "password");
      assert.ok((await audit("device.enroll")).some((a) => a.object === `device:${id}` && a.details?.tpm?.recorded === myEk));

      // Re-image: a fresh token, the TPM's answer, no password typed (it is still set) → tpm, and the secret.
      m = await newMachine(t, i);
      e = await enrollWith(m, await bootToken(i, id), { tpm: mine });
      assert.equal(e.status, 201, e.text);
      assert.equal(e.body.assurance, "tpm");
      const s = await askSecret(m);
      assert.equal(s.status, 200, s.text);
      assert.equal(s.body.value, canary);

      // The attacker: same MAC and UUID, its own TPM. No challenge for its EK, so no proof: the
      // password is asked; without it, nothing.
      const attacker = await newMachine(t, i);
      const c = await withTpm(other, async (x) => challenge(await bootToken(i, id), x.identity()));
      assert.equal(c.status, 200, c.text);
      assert.equal(c.body.challenge, null, "no challenge for an EK that is not the one on record");
      e = await enrollWith(attacker, await bootToken(i, id), { tpm: other });
      assert.equal(e.status, 401, e.text);
      assert.equal(e.body.code, "SLIPWAY_PXE_PASSWORD_REQUIRED");
      // It names the real EK (public) to get a challenge for it; its TPM cannot recover the credential.
      const realEkPublic = await withTpm(mine, async (x) => x.identity().ekPublic);
      e = await enrollWith(attacker, await bootToken(i, id), { tpm: other, forgeEk: realEkPublic });
      assert.equal(e.status, 401, e.text);
      assert.equal(e.body.code, "SLIPWAY_ENROLLMENT_REFUSED");
      assert.ok((await audit("device.enroll")).some((a) => a.outcome === "denied" && /TPM proof failed/.test(a.details?.reason ?? "")), "the forged proof is audited");
      // With the password cleared, the attacker's sniffable enrollment would be no better: the
      // device is bound to a TPM, so it is refused — before it spends the token the real machine
      // boots with (boot tokens are handed out again to whoever asks with the MAC and UUID).
      await setPassword(false);
      const shared = await bootToken(i, id);
      e = await enrollWith(attacker, shared, { tpm: other });
      assert.equal(e.status, 401, e.text);
      e = await enrollWith(attacker, shared);
      assert.equal(e.status, 401, e.text);
      e = await attacker.enroll({ kind: "pre-approved" });
      assert.equal(e.status, 401, e.text);
      const refusals = (await audit("device.enroll")).filter((a) => a.outcome === "denied").map((a) => a.details?.reason ?? "");
      assert.ok(refusals.some((r) => /bound to a TPM and the machine proved none/.test(r)), "audited");
      assert.ok(refusals.some((r) => /bound to a TPM; pre-approval does not enroll it/.test(r)), "audited");
      const realAgain = await newMachine(t, i);
      e = await enrollWith(realAgain, shared, { tpm: mine });
      assert.equal(e.status, 201, `the token the attacker tried is still the real machine's: ${e.text}`);
      assert.equal(e.body.assurance, "tpm");
      m.close();
      m = realAgain;
      // A captured answer does not work with another token: challenges are bound to the token.
      const captured = await withTpm(mine, async (x) => {
        const tok = await bootToken(i, id);
        const c = await challenge(tok, x.identity());
        const credential = Buffer.from(await x.activate(Buffer.from(c.body.challenge.credentialBlob, "base64"), Buffer.from(c.body.challenge.secret, "base64"))).toString("base64");
        return { ...x.identity(), proof: { nonce: c.body.challenge.nonce, expiresAt: c.body.challenge.expiresAt, credential } };
      });
      const replay = await newMachine(t, i);
      const other2 = await (await import("../../src/site/credentials.ts")).issueBootToken(t.site, { deviceId: id, mac: i.macs[0], smbiosUuid: i.smbiosUuid });
      e = await replay.enroll({ kind: "boot-token", token: other2.token }, {}, { tpm: captured });
      assert.equal(e.status, 401, `a replayed answer with another token: ${e.text}`);
      assert.ok((await audit("device.enroll")).some((a) => a.outcome === "denied" && /TPM proof failed/.test(a.details?.reason ?? "")));
      replay.close();
      assert.notEqual((await askSecret(attacker)).status, 200, "the attacker gets no secret");
      // The real machine still holds its identity and still gets its secret.
      const again = await m.call("GET", "/mp/v1/policy?bootPath=pxe");
      assert.equal(again.status, 200, again.text);
      assert.equal((await admin("GET", `/api/v1/devices/${id}/tpm`)).body.ekFingerprint, myEk, "the EK on record is unchanged");
      m.close();
      attacker.close();
    });

    it("an administrator imports an EK (PEM public key or TPM public area); the machine's first enrollment is then tpm; an EK binds one device; clearing it is audited", async () => {
      await setPassword(true);
      const { i, id } = await approved("tpm-import");
      const mine = await newTpm();
      const ekPublic = await withTpm(mine, async (x) => x.identity().ekPublic);
      const pem = parseEkPublic(ekPublic).key.export({ type: "spki", format: "pem" }).toString();
      const bad = await admin("PUT", `/api/v1/devices/${id}/tpm`, { ek: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----" });
      assert.equal(bad.status, 400, bad.text);
      assert.equal((await admin("GET", `/api/v1/devices/${id}/tpm`)).body.ekFingerprint, null, "a bad import changes nothing");
      const put = await admin("PUT", `/api/v1/devices/${id}/tpm`, { ek: pem });
      assert.equal(put.status, 200, put.text);
      assert.equal(put.body.source, "import");
      const m = await newMachine(t, i);
      const e = await enrollWith(m, await bootToken(i, id), { tpm: mine });
      assert.equal(e.status, 201, e.text);
      assert.equal(e.body.assurance, "tpm", "no password typed: the imported EK was proven");
      assert.equal((await askSecret(m)).status, 200);
      // The same EK cannot be given to a second device.
      const second = await approved("tpm-import-2");
      const dup = await admin("PUT", `/api/v1/devices/${second.id}/tpm`, { ek: ekPublic });
      assert.equal(dup.status, 409, dup.text);
      const del = await admin("DELETE", `/api/v1/devices/${id}/tpm`);
      assert.equal(del.status, 204, del.text);
      assert.ok((await audit("device.tpm.clear")).some((a) => a.object === `device:${id}` && a.details?.ekFingerprint === parseEkPublic(ekPublic).fingerprint));
      assert.ok((await audit("device.tpm.import")).some((a) => a.object === `device:${id}`));
      m.close();
    });

    it("an administrator without device.approve cannot import or clear an EK", async () => {
      const { id } = await approved("tpm-rbac");
      const r = await admin("POST", "/api/v1/admins", { username: `reader${n}`, password: "Reader-Passphrase-2026-x", roles: ["read-only-analyst"] });
      assert.equal(r.status, 201, r.text);
      const login = await t.request("POST", "/api/v1/sessions", { body: { username: `reader${n}`, password: "Reader-Passphrase-2026-x" } });
      const tok = login.body.token as string;
      await t.request("POST", "/api/v1/me/password", { token: tok, body: { currentPassword: "Reader-Passphrase-2026-x", newPassword: "Reader-Passphrase-2026-y" } });
      const mine = await newTpm();
      const ekPublic = await withTpm(mine, async (x) => x.identity().ekPublic);
      assert.equal((await t.request("PUT", `/api/v1/devices/${id}/tpm`, { token: tok, body: { ek: ekPublic } })).status, 403);
      assert.equal((await admin("GET", `/api/v1/devices/${id}/tpm`)).body.ekFingerprint, null);
    });

    it("model: whatever the order of real and attacking enrollments, password changes and administrator imports, only the machine holding the EK on record is ever `tpm`, the EK on record changes only by an administrator or a non-sniffable enrollment when none is recorded, and an attacker never gets the secret", async () => {
      const real = await newTpm();
      const rogue = await newTpm();
      const realEk = await withTpm(real, async (x) => x.identity().ekPublic);
      const rogueEk = await withTpm(rogue, async (x) => x.identity().ekPublic);
      const fp = (b: string) => parseEkPublic(b).fingerprint;
      type Op =
        | { kind: "real"; password: boolean } | { kind: "attacker"; tpm: "rogue" | "none" | "forge" }
        | { kind: "import"; which: "real" | "rogue" } | { kind: "clear" } | { kind: "pxe"; on: boolean };
      const op: fc.Arbitrary<Op> = fc.oneof(
        fc.record({ kind: fc.constant("real" as const), password: fc.boolean() }),
        fc.record({ kind: fc.constant("attacker" as const), tpm: fc.constantFrom("rogue" as const, "none" as const, "forge" as const) }),
        fc.record({ kind: fc.constant("import" as const), which: fc.constantFrom("real" as const, "rogue" as const) }),
        fc.record({ kind: fc.constant("clear" as const) }),
        fc.record({ kind: fc.constant("pxe" as const), on: fc.boolean() }),
      );
      await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 3, maxLength: 9 }), async (ops) => {
        const { i, id } = await approved(`model-${n}`);
        let onRecord: string | null = null;
        let pxe = false;
        await setPassword(false);
        for (const o of ops) {
          if (o.kind === "pxe") {
            await setPassword(o.on);
            pxe = o.on;
          } else if (o.kind === "import") {
            const r = await admin("PUT", `/api/v1/devices/${id}/tpm`, { ek: o.which === "real" ? realEk : rogueEk });
            // The rogue EK may be bound to an earlier run's device: then the import is refused.
            if (r.status === 200) onRecord = fp(o.which === "real" ? realEk : rogueEk);
            else assert.equal(r.status, 409, r.text);
          } else if (o.kind === "clear") {
            const r = await admin("DELETE", `/api/v1/devices/${id}/tpm`);
            assert.equal(r.status, onRecord ? 204 : 404, r.text);
            onRecord = null;
          } else if (o.kind === "real") {
            const m = await newMachine(t, i);
            const e = await enrollWith(m, await bootToken(i, id), { tpm: real, pxePassword: o.password && pxe ? PXE_PASSWORD : undefined });
            if (e.status === 201) {
              if (e.body.assurance === "tpm") assert.equal(onRecord, fp(realEk), "tpm only with the real EK on record");
              else if (onRecord === null && e.body.assurance !== "sniffable") onRecord = fp(realEk);
            }
            m.close();
          } else {
            const m = await newMachine(t, i);
            const e = await enrollWith(m, await bootToken(i, id), o.tpm === "none" ? {} : { tpm: rogue, ...(o.tpm === "forge" ? { forgeEk: realEk } : {}) });
            if (e.status === 201 && !(onRecord === fp(rogueEk) && o.tpm === "rogue")) {
              // Unless an administrator imported the rogue TPM's EK for this device, it proves nothing.
              assert.equal(e.body.assurance, "sniffable", "an attacker is never tpm with an EK nobody trusted");
              assert.notEqual((await askSecret(m)).status, 200, "an attacker never gets the secret");
            }
            m.close();
          }
          const now = (await admin("GET", `/api/v1/devices/${id}/tpm`)).body.ekFingerprint;
          assert.equal(now, onRecord, `EK on record after ${JSON.stringify(o)}`);
        }
        // Each run has its own device; an EK binds one device, so the next run starts with both free.
        if (onRecord) assert.equal((await admin("DELETE", `/api/v1/devices/${id}/tpm`)).status, 204);
      }), { numRuns: 6 });
    });
  });
}
