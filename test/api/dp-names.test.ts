/**
 * Invariants, from outside over HTTPS: a distribution point never holds a certificate for a
 * name another role holds — the site's and its management points' names, another distribution
 * point's — nor for a loopback name or address, however the name is spelled; and a certificate
 * that renewal superseded never works again.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import fc from "fast-check";
import { startTestSite, tempDir, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { newMachine, request, type TestMachine } from "../support/device.ts";
import { startManagementPoint, type ManagementPoint } from "../../src/roles/management/server.ts";
import { issueServerCertificate } from "../../src/security/ca.ts";
import { createKeyAndCsr } from "../../src/security/csr.ts";
import { stores } from "../../src/storage/stores.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

/** A CSR made by openssl that asks for `san` itself (the site must ignore what a CSR asks for). */
function opensslCsr(dir: string, san: string): { keyPem: string; csrPem: string } {
  const key = path.join(dir, `k-${randomBytes(4).toString("hex")}.pem`);
  const csr = `${key}.csr`;
  execFileSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
    "-subj", "/CN=localhost", "-addext", `subjectAltName=${san}`, "-out", csr], { stdio: "ignore" });
  return { keyPem: fs.readFileSync(key, "utf8"), csrPem: fs.readFileSync(csr, "utf8") };
}

/** Whether openssl accepts `certPem` from the site CA for `host` (a name or an IP address). */
function opensslVerifies(dir: string, caPem: string, certPem: string, host: string): boolean {
  const ca = path.join(dir, "ca.pem");
  const cert = path.join(dir, `c-${randomBytes(4).toString("hex")}.pem`);
  fs.writeFileSync(ca, caPem);
  fs.writeFileSync(cert, certPem);
  const flag = /^[\d.]+$|:/.test(host) ? "-verify_ip" : "-verify_hostname";
  return spawnSync("openssl", ["verify", "-CAfile", ca, flag, host, cert], { stdio: "ignore" }).status === 0;
}

// ---- spellings of one host, as a client (or an attacker) might write it ----

const randomCase = (s: string) => fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length })
  .map((up) => [...s].map((ch, i) => (up[i] ? ch.toUpperCase() : ch)).join(""));

function dnsSpelling(name: string): fc.Arbitrary<string> {
  return fc.tuple(randomCase(name), fc.boolean()).map(([n, dot]) => (dot ? `${n}.` : n));
}

function ipv4Spelling(a: number[]): fc.Arbitrary<string> {
  const n = ((a[0] << 24) >>> 0) + (a[1] << 16) + (a[2] << 8) + a[3];
  const hex = (x: number) => x.toString(16);
  return fc.oneof(
    fc.constant(a.join(".")),
    fc.constant(String(n)),
    randomCase(`0x${hex(n)}`),
    fc.constant(a.map((x) => `0x${hex(x)}`).join(".")),
    fc.constant(a.map((x) => `0${x.toString(8)}`).join(".")),
    fc.constant(`${a[0]}.${a[1]}.${(a[2] << 8) + a[3]}`),
    fc.constant(`${a[0]}.${(a[1] << 16) + (a[2] << 8) + a[3]}`),
    randomCase(`::ffff:${a.join(".")}`),
    randomCase(`::ffff:${hex((a[0] << 8) + a[1])}:${hex((a[2] << 8) + a[3])}`),
    randomCase(`0:0:0:0:0:ffff:${a.join(".")}`),
    randomCase(`0000:0000:0000:0000:0000:FFFF:${hex((a[0] << 8) + a[1]).padStart(4, "0")}:${hex((a[2] << 8) + a[3]).padStart(4, "0")}`),
  );
}

const loopbackSpelling: fc.Arbitrary<string> = fc.oneof(
  dnsSpelling("localhost"),
  fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/).chain((l) => dnsSpelling(`${l}.localhost`)),
  fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 })).chain(([b, c, d]) => ipv4Spelling([127, b, c, d])),
  ipv4Spelling([0, 0, 0, 0]),
  fc.constantFrom("::1", "0:0:0:0:0:0:0:1", "0000::0001", "::0:1", "::", "0::0", "0:0:0:0:0:0:0:0"),
);

/** A host spelled as a URL's host (IPv6 in brackets) or as an alias (either way). */
const asUrl = (h: string) => `https://${h.includes(":") ? `[${h}]` : h}:8445`;

// The names other roles hold in this test: a second management point's certificate, and the first distribution point.
const MP_DNS = "mp.example";
const MP_IP = [10, 20, 30, 40];
const HELD_DNS = "held.example";
const HELD_IP = [10, 9, 9, 9];
const takenSpelling = fc.oneof(dnsSpelling(MP_DNS), ipv4Spelling(MP_IP), dnsSpelling(HELD_DNS), ipv4Spelling(HELD_IP));

for (const database of databasesUnderTest()) {
  describe(`distribution point names and certificates on ${database}`, () => {
    let t: TestSite;
    let mp2: ManagementPoint;
    let dir: string;
    let heldId = "";
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const dps = async () => (await admin("GET", "/api/v1/distribution-points")).body as { id: string; name: string; url: string; hostNames: string[] }[];
    const denied = async () => ((await admin("GET", "/api/v1/audit?action=dp.create&limit=1000")).body as { outcome: string; details: { hostName?: string } }[])
      .filter((e) => e.outcome === "denied");
    const enroll = (body: unknown) => request(t.mp.url, { method: "POST", path: "/mp/v1/dp/enroll", ca: t.ca, body });

    /** A registration the rules of today would refuse, as one made before them: straight into the database. */
    async function legacyDp(name: string, hostNames: string[]): Promise<{ id: string; secret: string }> {
      const secret = `swd_${randomBytes(32).toString("base64url")}`;
      const d = await stores(t.site.db).distributionPoints.create({ name, url: asUrl(hostNames[0]).replace(/:8445$/, `:${10_000 + randomBytes(2).readUInt16BE() % 50_000}`), hostNames, secretHash: sha(secret),
        secretExpiresAt: new Date(Date.now() + 3600_000).toISOString(), createdBy: "test" }, new Date().toISOString());
      return { id: d.id, secret };
    }

    before(async () => {
      t = await startTestSite({ database });
      dir = tempDir("slipway-dp-names-");
      // A second management point, with names of its own: they become the site's.
      const tls = await issueServerCertificate(t.site.keys.ca, { dnsNames: [MP_DNS], ipAddresses: [MP_IP.join(".")] });
      mp2 = await startManagementPoint({ site: t.site, host: "127.0.0.1", port: 0, tls });
      const r = await admin("POST", "/api/v1/distribution-points", { name: "held", url: `https://${HELD_DNS}:8445`, aliases: [HELD_IP.join(".")] });
      assert.equal(r.status, 201, r.text);
      heldId = r.body.id;
    });
    after(async () => {
      await mp2?.close();
      await t.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it("registration refuses loopback names, the site's names and another distribution point's, naming the name, audited, changing nothing", async () => {
      const before = await dps();
      const cases: [string, { url: string; aliases?: string[] }, number, string][] = [
        ["localhost", { url: "https://localhost:8445" }, 400, "localhost"],
        ["LOCALHOST.", { url: "https://LOCALHOST.:8445" }, 400, "localhost"],
        ["127.0.0.1", { url: "https://127.0.0.1:8445" }, 400, "127.0.0.1"],
        ["hex IPv4", { url: "https://0x7f000001:8445" }, 400, "127.0.0.1"],
        ["decimal IPv4", { url: "https://2130706433:8445" }, 400, "127.0.0.1"],
        ["::1", { url: "https://[::1]:8445" }, 400, "::1"],
        ["IPv4-mapped", { url: "https://[::ffff:127.0.0.1]:8445" }, 400, "::ffff:7f00:1"],
        ["0.0.0.0", { url: "https://0.0.0.0:8445" }, 400, "0.0.0.0"],
        ["::", { url: "https://[::]:8445" }, 400, "::"],
        ["*.localhost", { url: "https://a.localhost:8445" }, 400, "a.localhost"],
        ["alias 127.0.0.1", { url: "https://fine.example:8445", aliases: ["127.0.0.1"] }, 400, "127.0.0.1"],
        ["alias ::1", { url: "https://fine.example:8445", aliases: ["::1"] }, 400, "::1"],
        ["alias [::1]", { url: "https://fine.example:8445", aliases: ["[0:0:0:0:0:0:0:1]"] }, 400, "::1"],
        ["the site's certificate name", { url: "https://fine.example:8445", aliases: ["localhost"] }, 400, "localhost"],
        ["the management point's name", { url: "https://mp.example:9000" }, 409, "mp.example"],
        ["the management point's name, spelled otherwise", { url: "https://fine.example:8445", aliases: ["MP.Example."] }, 409, "mp.example"],
        ["the management point's address", { url: "https://fine.example:8445", aliases: ["10.20.30.40"] }, 409, "10.20.30.40"],
        ["the management point's address, IPv4-mapped", { url: "https://fine.example:8445", aliases: ["::ffff:10.20.30.40"] }, 409, "::ffff:a14:1e28"],
        ["another distribution point's name", { url: "https://HELD.example.:7000" }, 409, "held.example"],
        ["another distribution point's alias", { url: "https://fine.example:8445", aliases: ["0x0a090909"] }, 409, "10.9.9.9"],
      ];
      for (const [what, body, status, name] of cases) {
        const r = await admin("POST", "/api/v1/distribution-points", { name: "sneaky", ...body });
        assert.equal(r.status, status, `${what}: ${r.text}`);
        assert.equal(r.body.code, status === 400 ? "SLIPWAY_VALIDATION" : "SLIPWAY_CONFLICT", what);
        assert.ok(r.body.message.includes(`"${name}"`), `${what}: ${r.body.message}`);
        assert.equal(r.body.secret, undefined);
      }
      assert.deepEqual(await dps(), before, "nothing registered");
      const audit = await denied();
      assert.ok(audit.length >= cases.length, "each refusal audited");
      assert.ok(audit.some((e) => e.details.hostName === "mp.example"));
    });

    it("property: no spelling of a loopback, site or held name is ever registered; free names are (model-based, over HTTPS)", async () => {
      const held = (await dps()).find((d) => d.name === "held")!;
      type Op = { kind: "forbidden"; host: string; asAlias: boolean } | { kind: "free"; n: number; spell: string } | { kind: "delete"; n: number };
      const freeBase = (n: number) => `free-${n}.example`;
      const opArb: fc.Arbitrary<Op> = fc.oneof(
        fc.record({ kind: fc.constant("forbidden" as const), host: fc.oneof(loopbackSpelling, takenSpelling), asAlias: fc.boolean() }),
        fc.integer({ min: 0, max: 3 }).chain((n) => dnsSpelling(freeBase(n)).map((spell) => ({ kind: "free" as const, n, spell }))),
        fc.record({ kind: fc.constant("delete" as const), n: fc.integer({ min: 0, max: 3 }) }),
      );
      let seq = 0;
      await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 3, maxLength: 12 }), async (ops) => {
        for (const d of await dps()) if (d.id !== held.id) assert.equal((await admin("DELETE", `/api/v1/distribution-points/${d.id}`)).status, 204);
        const model = new Map<number, string>(); // free name index -> DP name
        for (const op of ops) {
          const name = `p-${++seq}`;
          if (op.kind === "forbidden") {
            const body = op.asAlias ? { name, url: `https://${name}.example:8445`, aliases: [op.host] } : { name, url: asUrl(op.host) };
            const r = await admin("POST", "/api/v1/distribution-points", body);
            assert.ok(r.status === 400 || r.status === 409, `${JSON.stringify(body)} was accepted: ${r.status} ${r.text}`);
          } else if (op.kind === "free") {
            // A free name in any spelling is taken once; another spelling of it afterwards is another DP's.
            const r = await admin("POST", "/api/v1/distribution-points", { name, url: asUrl(op.spell) });
            if (model.has(op.n)) {
              assert.equal(r.status, 409, `${op.spell} held by ${model.get(op.n)}: ${r.text}`);
            } else {
              assert.equal(r.status, 201, r.text);
              assert.deepEqual(r.body.hostNames, [freeBase(op.n)], "stored in its one canonical spelling");
              model.set(op.n, name);
            }
          } else if (model.has(op.n)) {
            assert.equal((await admin("DELETE", `/api/v1/distribution-points/${model.get(op.n)}`)).status, 204);
            model.delete(op.n);
          }
          // The invariant, after every step: exactly the model's, and held's, names are held — each by one DP.
          const now = await dps();
          const names = now.flatMap((d) => d.hostNames);
          assert.equal(new Set(names).size, names.length, `a name held twice: ${names}`);
          assert.deepEqual(names.sort(), [...held.hostNames, ...[...model.keys()].map(freeBase)].sort());
        }
      }), { numRuns: 25 });
    });

    it("enrollment never issues a certificate for a forbidden name, even to a registration made before the rule; the secret is not spent", async () => {
      for (const [name, hostNames, status] of [["old-loopback", ["localhost"], 400], ["old-site", ["mp.example"], 409], ["old-held", ["held.example", "dp-x.example"], 409]] as const) {
        const legacy = await legacyDp(name, [...hostNames]);
        const client = await createKeyAndCsr();
        const server = opensslCsr(dir, "DNS:localhost,IP:127.0.0.1");
        const r = await enroll({ secret: legacy.secret, csr: client.csrPem, serverCsr: server.csrPem });
        assert.equal(r.status, status, `${name}: ${r.text}`);
        assert.match(r.body.message, new RegExp(`host name "${hostNames[0]}" is refused`));
        assert.equal(r.body.serverCertificate, undefined);
        const shown = (await admin("GET", `/api/v1/distribution-points/${legacy.id}`)).body;
        assert.deepEqual(shown.certificates, [], `${name}: nothing issued`);
        assert.equal(shown.status, "awaiting enrollment", "the secret was not spent");
        const audit = (await admin("GET", "/api/v1/audit?action=dp.enroll&limit=100")).body as { outcome: string; object: string }[];
        assert.ok(audit.some((e) => e.outcome === "denied" && e.object === `dp:${legacy.id}`), "audited");
        assert.equal((await admin("DELETE", `/api/v1/distribution-points/${legacy.id}`)).status, 204);
      }
      // Two registrations of one name made before the rule: the first keeps it, the later one gets nothing.
      const first = await legacyDp("dup-1", ["dup.example"]);
      // "Earlier" is by registration time (ties broken by id): let the clock move on.
      await new Promise((r) => setTimeout(r, 5));
      const second = await legacyDp("dup-2", ["DUP.example."]);
      const keys = async () => ({ csr: (await createKeyAndCsr()).csrPem, serverCsr: (await createKeyAndCsr()).csrPem });
      assert.equal((await enroll({ secret: second.secret, ...(await keys()) })).status, 409);
      assert.equal((await enroll({ secret: first.secret, ...(await keys()) })).status, 201);
    });

    it("a distribution point whose CSR asks for localhost gets a certificate for its registered names only", async () => {
      const reg = await admin("POST", "/api/v1/distribution-points", { name: "dp-ok", url: "https://dp-ok.example:8445" });
      assert.equal(reg.status, 201, reg.text);
      const client = await createKeyAndCsr();
      const server = opensslCsr(dir, "DNS:localhost,DNS:mp.example,IP:127.0.0.1,IP:::1");
      assert.equal((await enroll({ secret: reg.body.secret, csr: client.csrPem, serverCsr: server.csrPem, names: ["localhost"] })).status, 400);
      const r = await enroll({ secret: reg.body.secret, csr: client.csrPem, serverCsr: server.csrPem });
      assert.equal(r.status, 201, r.text);
      const cert = new X509Certificate(r.body.serverCertificate);
      assert.equal(cert.subjectAltName, "DNS:dp-ok.example");
      for (const h of ["localhost", "mp.example"]) assert.equal(cert.checkHost(h), undefined, h);
      for (const ip of ["127.0.0.1", "::1"]) assert.equal(cert.checkIP(ip), undefined, ip);
      assert.ok(opensslVerifies(dir, t.ca, r.body.serverCertificate, "dp-ok.example"));
      for (const h of ["localhost", "127.0.0.1", "::1", "mp.example"]) assert.ok(!opensslVerifies(dir, t.ca, r.body.serverCertificate, h), `verifies as ${h}`);
    });

    describe("renewal", () => {
      let id = "";
      let current: { key: string; cert: string };
      let device: TestMachine;
      const dpCall = (who: { key: string; cert: string }, method: string, p: string, body?: unknown) => request(t.mp.url, { method, path: p, ca: t.ca, ...who, body });
      const renewBody = async () => ({ csr: (await createKeyAndCsr()).csrPem, serverCsr: (await createKeyAndCsr()).csrPem });
      before(async () => {
        const reg = await admin("POST", "/api/v1/distribution-points", { name: "dp-renew", url: "https://dp-renew.example:8445" });
        id = reg.body.id;
        const client = await createKeyAndCsr();
        const r = await enroll({ secret: reg.body.secret, csr: client.csrPem, serverCsr: (await createKeyAndCsr()).csrPem });
        assert.equal(r.status, 201, r.text);
        current = { key: client.keyPem, cert: r.body.certificate };
        const ids = { macs: ["52:54:00:dd:00:01"], smbiosUuid: "00000000-0000-4000-8000-dd0000000001" };
        assert.equal((await admin("POST", "/api/v1/devices", { name: "renew-probe", ...ids, state: "approved" })).status, 201);
        device = await newMachine(t, ids);
        assert.equal((await device.enroll({ kind: "pre-approved" })).status, 201);
      });
      after(() => device?.close());

      it("supersedes every certificate it replaces, into the CRL; the old client certificate is refused on every distribution point route", async () => {
        const old = (await admin("GET", `/api/v1/distribution-points/${id}`)).body.certificates as { serial: string; kind: string }[];
        assert.equal(old.length, 2);
        const r = await dpCall(current, "POST", "/mp/v1/dp/renew", await renewBody());
        assert.equal(r.status, 201, r.text);
        const certs = (await admin("GET", `/api/v1/distribution-points/${id}`)).body.certificates as { serial: string; status: string }[];
        for (const o of old) assert.equal(certs.find((c) => c.serial === o.serial)?.status, "revoked", `${o.kind} ${o.serial}`);
        assert.equal(certs.filter((c) => c.status === "active").length, 2, "only the new pair");
        const listed = (await admin("GET", "/api/v1/certificates?status=revoked")).body as { serial: string; reason: string }[];
        for (const o of old) assert.equal(listed.find((c) => c.serial === o.serial)?.reason, "superseded");
        const crlFile = path.join(dir, "crl.pem");
        fs.writeFileSync(crlFile, (await t.request("GET", "/api/v1/crl.pem")).body.pem);
        const crl = execFileSync("openssl", ["crl", "-in", crlFile, "-noout", "-text"], { encoding: "utf8" }).replace(/\s+/g, " ");
        for (const o of old) assert.match(crl, new RegExp(`Serial Number: ${o.serial.replace(/^0+/, "")} .*?Superseded`, "i"), o.serial);
        for (const [method, p, b] of [["GET", "/mp/v1/dp/assignments", undefined], ["GET", "/mp/v1/dp/site", undefined], ["POST", "/mp/v1/dp/renew", await renewBody()],
          ["POST", "/mp/v1/dp/authorize", { serial: "01", digest: `sha256:${"0".repeat(64)}` }], ["POST", "/mp/v1/dp/status", { digest: `sha256:${"0".repeat(64)}`, state: "ready" }],
          ["GET", `/mp/v1/dp/content/sha256:${"0".repeat(64)}/chunks/${"0".repeat(64)}`, undefined]] as const) {
          const x = await dpCall(current, method, p, b);
          assert.equal(x.status, 403, `${p}: ${x.text}`);
          assert.equal(x.body.code, "SLIPWAY_DEVICE_BLOCKED", p);
        }
        assert.equal(((await admin("GET", `/api/v1/distribution-points/${id}`)).body.certificates as unknown[]).length, 4, "the refused renewal issued nothing");
      });

      it("two renewals racing with one certificate: one wins; a blocked or revoked certificate renews nothing", async () => {
        const reg = await admin("POST", `/api/v1/distribution-points/${id}/secret`);
        const client = await createKeyAndCsr();
        const e = await enroll({ secret: reg.body.secret, csr: client.csrPem, serverCsr: (await createKeyAndCsr()).csrPem });
        assert.equal(e.status, 201, e.text);
        const me = { key: client.keyPem, cert: e.body.certificate };
        const both = await Promise.all([dpCall(me, "POST", "/mp/v1/dp/renew", await renewBody()), dpCall(me, "POST", "/mp/v1/dp/renew", await renewBody())]);
        assert.deepEqual(both.map((x) => x.status).sort(), [201, 403], both.map((x) => x.text).join(" | "));
        const active = ((await admin("GET", `/api/v1/distribution-points/${id}`)).body.certificates as { status: string }[]).filter((c) => c.status === "active");
        assert.equal(active.length, 2, "one pair only");

        for (const action of ["block", "revoke"] as const) {
          const s = await admin("POST", `/api/v1/distribution-points/${id}/secret`);
          const k = await createKeyAndCsr();
          const x = await enroll({ secret: s.body.secret, csr: k.csrPem, serverCsr: (await createKeyAndCsr()).csrPem });
          assert.equal(x.status, 201);
          assert.equal((await admin("POST", `/api/v1/certificates/${x.body.serial}/${action}`, { reason: "keyCompromise" })).status, 200);
          const r = await dpCall({ key: k.keyPem, cert: x.body.certificate }, "POST", "/mp/v1/dp/renew", await renewBody());
          assert.equal(r.status, 403, `${action}: ${r.text}`);
          assert.equal(r.body.certificate, undefined);
        }
      });

      it("a management point whose certificate names a distribution point's host refuses to start; the distribution point keeps its name and renews", async () => {
        const reg = await admin("POST", "/api/v1/distribution-points", { name: "dp-late", url: "https://late.example:8445" });
        const client = await createKeyAndCsr();
        const e = await enroll({ secret: reg.body.secret, csr: client.csrPem, serverCsr: (await createKeyAndCsr()).csrPem });
        assert.equal(e.status, 201, e.text);
        const tls = await issueServerCertificate(t.site.keys.ca, { dnsNames: ["LATE.example."], ipAddresses: [] });
        await assert.rejects(startManagementPoint({ site: t.site, host: "127.0.0.1", port: 0, tls }),
          (err: Error) => /distribution point "dp-late" holds that name/.test(err.message));
        const me = { key: client.keyPem, cert: e.body.certificate };
        const r = await dpCall(me, "POST", "/mp/v1/dp/renew", await renewBody());
        assert.equal(r.status, 201, `the name was not taken by the site: ${r.text}`);
      });
    });

    it("the first distribution point still holds its names", async () => {
      assert.deepEqual((await dps()).find((d) => d.id === heldId)?.hostNames, [HELD_DNS, HELD_IP.join(".")]);
    });
  });
}
