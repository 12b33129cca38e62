/**
 * The PXE password's guessing limits (issue #11, items 4 and 7 "Lockout as a weapon"), against
 * a real site over HTTPS, each guess from a chosen loopback address (Linux answers on all of
 * 127.0.0.0/8). A MAC and a boot token are public — anyone on the link asks for a machine's
 * boot script and gets the very token the machine got — so wrong guesses are counted per
 * address, token, machine and site, but only the address and the site-wide budget refuse:
 *
 *  - farming tokens for 100 MACs does not multiply guesses: the site-wide budget stops them;
 *  - someone else's guesses never lock the real machine out (its own address, the right
 *    password, its own token even if the attacker guessed with it, or a fresh one);
 *  - crossing the budget, and the ceiling, raises one alert per window in the audit log;
 *  - a fast-check model of random attackers (sequential and concurrent guesses from 30
 *    addresses against random MACs with shared or fresh tokens) interleaved with the real
 *    machine's enrollments: after every step, per address at most PXE_FAILURE_LIMIT and in all
 *    at most PXE_SITE_FAILURE_BUDGET + one per address that guessed after the budget was spent
 *    are checked in any window, each sequential guess is checked or refused exactly as the
 *    rule says, and the real machine is never refused.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import https from "node:https";
import fc from "fast-check";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { createKeyAndCsr } from "../../src/security/csr.ts";
import {
  bootTokenFor, issueBootToken, PXE_FAILURE_LIMIT, PXE_FAILURE_WINDOW_MS, PXE_SITE_FAILURE_BUDGET, PXE_SITE_FAILURE_CEILING,
} from "../../src/site/credentials.ts";

const PXE = "Lab-PXE-Passphrase-2026";
type Reply = { status: number; body: any; text: string };
type Machine = { id: string; mac: string; uuid: string };
type Audit = { seq: number; at: string; action: string; outcome: string; actor: string; details: any };

/** POSTs an enrollment to the management point from `address`. */
function enrollFrom(t: TestSite, address: string, body: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL("/mp/v1/enroll", t.mp.url), {
      method: "POST", ca: t.ca, agent: false, localAddress: address, headers: { "content-type": "application/json" },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed: unknown;
        try {
          parsed = text ? JSON.parse(text) : undefined;
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, text });
      });
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

/** A site with the PXE password set, approved machines, and ways to guess and enroll. */
async function pxeSite(database: "sqlite" | "postgres", machines: number) {
  let clock = Date.now();
  const t = await startTestSite({ database, now: () => new Date(clock) });
  const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
  assert.equal((await admin("PUT", "/api/v1/pxe/password", { password: PXE })).status, 204);
  const { csrPem } = await createKeyAndCsr();
  const list: Machine[] = [];
  for (let i = 0; i < machines; i++) {
    const mac = `52:54:00:b7:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
    const uuid = `00000000-0000-4000-8000-b70000${i.toString(16).padStart(6, "0")}`;
    const r = await admin("POST", "/api/v1/devices", { name: `lab-${i}`, macs: [mac], smbiosUuid: uuid, state: "approved" });
    assert.equal(r.status, 201, r.text);
    list.push({ id: r.body.id, mac, uuid });
  }
  return {
    t, admin, machines: list,
    advance: (ms: number) => (clock += ms),
    /** The token anyone gets by asking for the machine's boot script: the same unused one while it lasts. */
    shared: async (m: Machine) => (await bootTokenFor(t.site, { deviceId: m.id, mac: m.mac, smbiosUuid: m.uuid })).token,
    fresh: async (m: Machine) => (await issueBootToken(t.site, { deviceId: m.id, mac: m.mac, smbiosUuid: m.uuid })).token,
    guess: (address: string, m: Machine, token: string, pxePassword: string) => enrollFrom(t, address, {
      credential: { kind: "boot-token", token, pxePassword }, csr: csrPem, inventory: { macs: [m.mac], smbiosUuid: m.uuid, vendor: "QEMU" },
    }),
    /** Every audit entry of one action, in order. */
    async audit(action: string): Promise<Audit[]> {
      const out: Audit[] = [];
      for (let after = 0; ;) {
        const page = (await admin("GET", `/api/v1/audit?action=${action}&limit=1000&after=${after}`)).body as Audit[];
        out.push(...page);
        if (page.length < 1000) return out;
        after = page[page.length - 1].seq;
      }
    },
  };
}

const isWrong = (r: Reply) => r.status === 401 && r.body?.code === "SLIPWAY_ENROLLMENT_REFUSED";
const isLocked = (r: Reply) => r.status === 429 && r.body?.code === "SLIPWAY_PXE_PASSWORD_LOCKED";

for (const database of databasesUnderTest()) {
  describe(`PXE password guessing on ${database}`, () => {
    let s: Awaited<ReturnType<typeof pxeSite>>;
    before(async () => {
      s = await pxeSite(database, 100);
    });
    after(() => s.t.close());

    // In order: the budget, the alert, the ceiling, the next window.
    it("a PXE password guessed across 100 farmed tokens: the site-wide budget stops it; the real machine with the right password still enrolls", async () => {
      const victim = s.machines[0];
      // The attacker farms the boot token of each of 100 machines (the victim's among them —
      // the same token the victim got) and guesses three times with each from 20 addresses.
      const tokens = await Promise.all(s.machines.map((m) => s.shared(m)));
      const replies: Reply[] = [];
      for (let j = 0; j < 300; j++) {
        const i = j % 100;
        replies.push(await s.guess(`127.0.1.${1 + (j % 20)}`, s.machines[i], tokens[i], `guess-${j}-xyz`));
      }
      const checked = replies.filter(isWrong).length;
      assert.equal(replies.filter((r) => !isWrong(r) && !isLocked(r)).length, 0, "every guess is refused, as wrong or unchecked");
      assert.equal(checked, PXE_SITE_FAILURE_BUDGET, `the budget bounds the guesses checked (${checked}), not 5 per farmed MAC`);
      assert.match(replies[299].body.message, /too many wrong PXE passwords on this site/);

      // The real machine from its own address, with its own token — the one the attacker used.
      const own = await s.guess("127.0.0.1", victim, await s.shared(victim), PXE);
      assert.equal(own.status, 201, own.text);
      assert.equal(own.body.assurance, "password");
      // And another real machine with a fresh token.
      const other = await s.guess("127.0.0.2", s.machines[1], await s.fresh(s.machines[1]), PXE);
      assert.equal(other.status, 201, other.text);

      // Every refusal audited with its reason; no guess and no password anywhere.
      const denied = (await s.audit("device.enroll")).filter((e) => e.outcome === "denied");
      assert.equal(denied.filter((e) => /^wrong PXE password/.test(e.details.reason)).length, PXE_SITE_FAILURE_BUDGET);
      assert.equal(denied.filter((e) => /^PXE password locked out: the site-wide budget is spent/.test(e.details.reason)).length, 300 - PXE_SITE_FAILURE_BUDGET);
      assert.ok(denied.every((e) => e.details.ip?.startsWith("127.0.1.")), "each refusal names the address it came from");
      const everything = JSON.stringify(await s.audit("")) + JSON.stringify(denied) + s.t.logLines.join("\n");
      assert.ok(!everything.includes("guess-") && !everything.includes(PXE), "guesses and the password never reach the audit log or logs");
    });

    it("the spike raised one alert naming how many addresses, machines and tokens it came from", async () => {
      const alerts = await s.audit("pxe-password.alert");
      assert.equal(alerts.length, 1, JSON.stringify(alerts));
      // The 50 checked guesses: the first 50 attempts, from 20 addresses, one per machine and token.
      assert.deepEqual({ ...alerts[0].details }, { reached: "budget", limit: PXE_SITE_FAILURE_BUDGET, windowMinutes: PXE_FAILURE_WINDOW_MS / 60_000,
        failures: PXE_SITE_FAILURE_BUDGET, sources: 20, machines: 50, tokens: 50 });
      assert.equal(alerts[0].actor, "system");
    });

    it("once the budget is spent, a new address gets one guess, then is refused unchecked", async () => {
      const m = s.machines[7];
      const token = await s.shared(m);
      const first = await s.guess("127.0.2.1", m, token, "guess-late-1");
      assert.ok(isWrong(first), first.text);
      const second = await s.guess("127.0.2.1", m, token, "guess-late-2");
      assert.ok(isLocked(second), second.text);
      assert.equal((await s.audit("pxe-password.alert")).length, 1, "one alert per window");
    });

    it("the ceiling bounds guesses from any number of addresses: none is checked, then, not even the right one", async () => {
      const m = s.machines[9];
      const token = await s.shared(m);
      let failures = PXE_SITE_FAILURE_BUDGET + 1;
      let k = 0;
      const address = () => (k++, `127.0.${10 + Math.floor(k / 250)}.${1 + (k % 250)}`);
      while (failures < PXE_SITE_FAILURE_CEILING) {
        const r = await s.guess(address(), m, token, `guess-c-${k}`);
        assert.ok(isWrong(r), `guess ${k} from a new address is checked: ${r.text}`);
        failures++;
      }
      const over = await s.guess(address(), m, token, "guess-over");
      assert.ok(isLocked(over), over.text);
      assert.match(over.body.message, /checks none for now/);
      // The trade-off, documented: past BUDGET + 350 addresses (more than a /24 holds), the site
      // stops checking altogether rather than let guessing go on without bound.
      const real = await s.guess("127.0.0.3", s.machines[2], await s.shared(s.machines[2]), PXE);
      assert.ok(isLocked(real), real.text);
      const alerts = await s.audit("pxe-password.alert");
      assert.deepEqual(alerts.map((a) => a.details.reached), ["budget", "ceiling"]);
      assert.equal(alerts[1].details.failures, PXE_SITE_FAILURE_CEILING);
    });

    it("a window later the real machine enrolls, and a new spike raises a new alert", async () => {
      s.advance(PXE_FAILURE_WINDOW_MS + 1000);
      const real = await s.guess("127.0.0.3", s.machines[2], await s.shared(s.machines[2]), PXE);
      assert.equal(real.status, 201, real.text);
      for (let j = 0; j < PXE_SITE_FAILURE_BUDGET; j++) {
        const m = s.machines[10 + j];
        assert.ok(isWrong(await s.guess(`127.0.3.${1 + (j % 10)}`, m, await s.shared(m), `guess-w2-${j}`)));
      }
      const alerts = await s.audit("pxe-password.alert");
      assert.deepEqual(alerts.map((a) => a.details.reached), ["budget", "ceiling", "budget"]);
      assert.deepEqual({ failures: alerts[2].details.failures, sources: alerts[2].details.sources, machines: alerts[2].details.machines },
        { failures: PXE_SITE_FAILURE_BUDGET, sources: 10, machines: 50 });
    });
  });

  describe(`the per-machine lockout is no weapon on ${database}`, () => {
    let s: Awaited<ReturnType<typeof pxeSite>>;
    before(async () => {
      s = await pxeSite(database, 2);
    });
    after(() => s.t.close());

    it("guesses from other addresses with the machine's own token do not lock the real machine out", async () => {
      const [victim, second] = s.machines;
      const token = await s.shared(victim);
      // Two attacker addresses, ten wrong guesses against the victim with the victim's token.
      for (const address of ["127.0.4.1", "127.0.4.2"]) {
        for (let i = 0; i < PXE_FAILURE_LIMIT; i++) assert.ok(isWrong(await s.guess(address, victim, token, `guess-${address}-${i}`)));
        const sixth = await s.guess(address, victim, token, `guess-${address}-6`);
        assert.ok(isLocked(sixth), "an address is locked out after its own wrong guesses");
        assert.match(sixth.body.message, /from this address/);
      }
      // Even the right password from an attacker's address waits: the address is what is locked.
      assert.ok(isLocked(await s.guess("127.0.4.1", victim, token, PXE)));
      // The real machine, its own address, the very token the attacker guessed with.
      const own = await s.guess("127.0.0.5", victim, token, PXE);
      assert.equal(own.status, 201, own.text);
      // A second machine over any per-machine count, with a fresh token.
      for (let i = 0; i < PXE_FAILURE_LIMIT; i++) await s.guess("127.0.4.3", second, await s.shared(second), `guess-x-${i}`);
      const fresh = await s.guess("127.0.0.6", second, await s.fresh(second), PXE);
      assert.equal(fresh.status, 201, fresh.text);
      const reasons = (await s.audit("device.enroll")).filter((e) => e.outcome === "denied").map((e) => e.details.reason as string);
      assert.ok(reasons.some((r) => /^wrong PXE password \(in 15 minutes: 5 of 5 from this address, 10 with this boot token, 10 against this machine/.test(r)), reasons.join("\n"));
      assert.ok(reasons.some((r) => /^PXE password locked out: 5 wrong PXE passwords from this address/.test(r)));
    });
  });

  describe(`PXE password guessing model on ${database}`, () => {
    type Op =
      | { op: "guess"; a: number; m: number; token: "shared" | "fresh"; n: number }
      | { op: "spray"; from: number; k: number; m: number }
      | { op: "parallel"; guesses: { a: number; m: number }[]; real: boolean }
      | { op: "real"; token: "shared" | "fresh" }
      | { op: "tick"; ms: number };
    const ADDRESSES = 30;
    const MACHINES = 4; // machine 0 is the real one; the attacker guesses against all four
    const address = fc.nat({ max: ADDRESSES - 1 });
    const machine = fc.nat({ max: MACHINES - 1 });
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      { weight: 5, arbitrary: fc.record({ op: fc.constant("guess" as const), a: address, m: machine, token: fc.constantFrom("shared" as const, "fresh" as const), n: fc.integer({ min: 1, max: 7 }) }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant("spray" as const), from: address, k: fc.integer({ min: 5, max: 20 }), m: machine }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant("parallel" as const), guesses: fc.array(fc.record({ a: address, m: machine }), { minLength: 2, maxLength: 10 }), real: fc.boolean() }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant("real" as const), token: fc.constantFrom("shared" as const, "fresh" as const) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant("tick" as const), ms: fc.integer({ min: 1000, max: 6 * 60_000 }) }) },
    );

    let s: Awaited<ReturnType<typeof pxeSite>>;
    before(async () => {
      s = await pxeSite(database, MACHINES);
    });
    after(() => s.t.close());

    it("after every step: at most the limit per address and the budget plus one per late address are checked, and the real machine is never refused", async () => {
      let now = Date.now();
      let n = 0;
      await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 10, maxLength: 25 }), async (ops) => {
        // Each run starts a window after the last one ended.
        s.advance(PXE_FAILURE_WINDOW_MS + 1000);
        now += PXE_FAILURE_WINDOW_MS + 1000;
        /** The wrong guesses the site checked (answered 401): when, from which address, whether the budget was spent before it. */
        const checked: { at: number; a: number; late: boolean }[] = [];
        const inWindow = () => checked.filter((c) => c.at >= now - PXE_FAILURE_WINDOW_MS);
        const fromAddress = (a: number) => inWindow().filter((c) => c.a === a).length;
        /** Whether the rule checks a guess from `a` now (no guesses in flight). */
        const wouldCheck = (a: number) => {
          const site = inWindow().length;
          const own = fromAddress(a);
          return site < PXE_SITE_FAILURE_CEILING && own < PXE_FAILURE_LIMIT && !(site >= PXE_SITE_FAILURE_BUDGET && own > 0);
        };
        const ip = (a: number) => `127.0.9.${10 + a}`;
        const token = async (m: number, kind: "shared" | "fresh") => (kind === "shared" ? s.shared(s.machines[m]) : s.fresh(s.machines[m]));
        const real = async (kind: "shared" | "fresh") => {
          const r = await s.guess("127.0.8.1", s.machines[0], await token(0, kind), PXE);
          assert.equal(r.status, 201, `the real machine is never refused: ${r.text}`);
        };
        const record = (a: number, r: Reply, late: boolean) => {
          if (isWrong(r)) checked.push({ at: now, a, late });
          else assert.ok(isLocked(r), `a wrong guess is refused as wrong or unchecked: ${r.text}`);
        };
        for (const op of ops) {
          if (op.op === "guess" || op.op === "spray") {
            // One address guessing n times, or k addresses once each (a spray across the link).
            const tok = await token(op.m, op.op === "guess" ? op.token : "shared");
            const from = op.op === "guess" ? Array.from({ length: op.n }, () => op.a) : Array.from({ length: op.k }, (_, i) => (op.from + i) % ADDRESSES);
            for (const a of from) {
              const expected = wouldCheck(a);
              const site = inWindow().length;
              const r = await s.guess(ip(a), s.machines[op.m], tok, `guess-${n++}`);
              record(a, r, site >= PXE_SITE_FAILURE_BUDGET);
              assert.equal(isWrong(r), expected, `guess from address ${a} (${fromAddress(a)} in window, ${site} site-wide) ${expected ? "checked" : "refused unchecked"}: ${r.text}`);
            }
          } else if (op.op === "parallel") {
            const siteBefore = inWindow().length;
            const tokens = await Promise.all(op.guesses.map((g) => token(g.m, "shared")));
            const replies = await Promise.all([
              ...op.guesses.map((g, i) => s.guess(ip(g.a), s.machines[g.m], tokens[i], `guess-${n++}`)),
              ...(op.real ? [real("shared").then(() => null)] : []),
            ]);
            // In which order the site took them is unknown: all count as late once the burst went past the budget.
            const late = siteBefore + replies.slice(0, op.guesses.length).filter((r) => isWrong(r as Reply)).length > PXE_SITE_FAILURE_BUDGET;
            op.guesses.forEach((g, i) => record(g.a, replies[i] as Reply, late));
          } else if (op.op === "real") {
            await real(op.token);
          } else {
            s.advance(op.ms);
            now += op.ms;
          }
          // The invariants, after every step.
          const w = inWindow();
          for (let a = 0; a < ADDRESSES; a++) assert.ok(fromAddress(a) <= PXE_FAILURE_LIMIT, `address ${a}: ${fromAddress(a)} wrong guesses checked in a window`);
          const lateNow = new Set(w.filter((c) => c.late).map((c) => c.a));
          assert.ok(w.length <= PXE_SITE_FAILURE_BUDGET + lateNow.size, `${w.length} wrong guesses checked in a window, budget ${PXE_SITE_FAILURE_BUDGET} + ${lateNow.size} late addresses`);
          assert.ok(w.length <= PXE_SITE_FAILURE_CEILING);
        }
      }), { numRuns: 10, endOnFailure: true });
    });
  });
}
