/**
 * Invariant I18 (who ever gets an association's data key or its chunks) as a model-based
 * property, against a real site over real HTTPS and mutual TLS with the built-in state store
 * on disk. Random sequences of operations by random actors — administrators of every built-in
 * role creating, deleting, re-timing and recovering associations; three enrolled machines
 * starting runs, reporting steps, asking for keys, storing their own sealed chunks, garbage or
 * another association's, completing captures, fetching chunks and confirming restores; the
 * fake clock moving on and the retention sweep running; a machine enrolling again — run
 * against a small explicit model of what the site must allow. Every answer's status must be the
 * model's, and after every step, seen from outside:
 *
 *  - the data key went out only in answers the model allowed: to the source device's own run
 *    (same enrollment) at its reported capture step, the destination's at its restore step, or
 *    a Recovery Agent who gave a reason; every key release is one audit entry
 *    (association.key-release for the device and step kind, association.recover with the reason
 *    and the agent), and no other role recovers;
 *  - an association that is gone (deleted, or swept after its "delete after" or expiry) shows
 *    its key destroyed, gives nothing to anyone ever again, and has no folder under DATA/state;
 *  - a second capture of a captured association and a restore before capture are refused;
 *  - every refused request leaves every association row exactly as it was.
 *
 * The model draws a Recovery Agent's chunk read only after that agent recovered the association
 * with a reason; a read before any reason is the separate test at the end (refused or audited).
 * SLIPWAY_MODEL_RUNS sets the number of runs (a soak: 80 and more).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import https from "node:https";
import crypto from "node:crypto";
import fc from "fast-check";
import { startTestSite, adminWithRoles, adminPassword, ADMIN_PASSWORD, type TestSite } from "../support/site.ts";
import { newMachine, enrollApproved, type TestMachine, bytesCall } from "../support/device.ts";
import { sealChunk, openChunk } from "../../src/security/state-cipher.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { sweepAssociations } from "../../src/site/services/associations.ts";
import { stateChunksOf } from "../../src/site/state-store.ts";

const HOUR = 3600_000;
const DAY = 24 * HOUR;
/** Device certificates live 7 days on the site's clock: ordinary clock steps stay well inside. */
const MAX_TICKING = 4 * DAY;
/** Past the 30 days an unrestored association lives (and past every device certificate). */
const EXPIRE_JUMP = 31 * DAY;

type Role = "full" | "deploy" | "security" | "analyst" | "recovery";
const roleIds: Record<Role, string | null> = {
  full: null, deploy: "deployment-administrator", security: "security-administrator", analyst: "read-only-analyst", recovery: "recovery-agent",
};
const writers: readonly Role[] = ["full", "deploy"];
type Action = "capture" | "restore";
/** The task sequence: 0 captures, 1 restores, 2 is another step. */
const STEPS = ["0", "1", "2"] as const;
const stepKind = (s: string): Action | "other" => (s === "0" ? "capture" : s === "1" ? "restore" : "other");

/** Which association an operation names: the device's own live one, or any the model knows. */
type Target = "mine" | number;
type Op =
  | { op: "create"; who: Role; refresh: boolean; s: number; d: number }
  /** Start (or resume) the device's run and report a step started. */
  | { op: "begin"; dev: number; step: string; ask: boolean }
  | { op: "finish-step"; dev: number; step: string }
  | { op: "end"; dev: number }
  | { op: "grant"; dev: number; action: Action | "auto"; step: "open" | "0" | "1" | "2"; run: "own" | "other" | "stale" }
  | { op: "put"; dev: number; a: Target; index: "next" | number; final: boolean; content: "own" | "garbage" | "foreign" }
  | { op: "complete"; dev: number; a: Target }
  | { op: "fetch"; dev: number; a: Target; index: number }
  | { op: "confirm"; dev: number; a: Target }
  | { op: "delete"; who: Role; a: number }
  | { op: "retention"; who: Role; a: number; hours: number }
  | { op: "recover"; who: Role; a: number; reason: boolean }
  | { op: "recover-chunk"; a: number; index: number }
  | { op: "tick"; hours: number }
  | { op: "expire" }
  | { op: "reenroll"; dev: number }
  /** What an agent's step does, spelled out into the operations above: store every chunk and complete; fetch them all and confirm. */
  | { op: "upload"; dev: number; chunks: number }
  | { op: "download"; dev: number }
  /** A whole user-state step as the agent runs it: begin, ask for the key, upload or download. */
  | { op: "agent"; dev: number | "destination"; step: "0" | "1"; chunks: number };

/** Device A acts most, so that captures and restores get far enough; B and C are the other ends and the bystanders. */
const dev = fc.constantFrom(0, 0, 0, 1, 1, 2);
const anyAssoc = fc.nat({ max: 7 });
const target: fc.Arbitrary<Target> = fc.oneof({ weight: 4, arbitrary: fc.constant("mine" as const) }, { weight: 1, arbitrary: anyAssoc });
const role = fc.constantFrom<Role>("full", "deploy", "security", "analyst", "recovery");
const step = fc.constantFrom(...STEPS);
const action = fc.constantFrom<Action>("capture", "restore");
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant("create" as const), who: fc.constantFrom<Role>("full", "full", "deploy", "security", "analyst", "recovery"), refresh: fc.boolean(), s: dev, d: dev }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant("begin" as const), dev, step: fc.constantFrom("0", "0", "1", "1", "2"), ask: fc.constantFrom(true, true, false) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("finish-step" as const), dev, step }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("end" as const), dev }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant("grant" as const), dev, action: fc.constantFrom<Action | "auto">("auto", "auto", "auto", "capture", "restore"), step: fc.constantFrom("open" as const, "open" as const, "open" as const, "0" as const, "1" as const, "2" as const),
    run: fc.constantFrom("own" as const, "own" as const, "own" as const, "own" as const, "other" as const, "stale" as const) }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant("put" as const), dev, a: target, index: fc.constantFrom("next" as const, "next" as const, "next" as const, 0, 1, 2), final: fc.boolean(),
    content: fc.constantFrom("own" as const, "own" as const, "own" as const, "garbage" as const, "foreign" as const) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("complete" as const), dev, a: target }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("fetch" as const), dev, a: target, index: fc.nat({ max: 2 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("confirm" as const), dev, a: target }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("delete" as const), who: role, a: anyAssoc }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("retention" as const), who: role, a: anyAssoc, hours: fc.constantFrom(1, 2, 30, 0.5) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("recover" as const), who: fc.constantFrom<Role>("recovery", "recovery", "full", "deploy", "security", "analyst"), a: anyAssoc, reason: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("recover-chunk" as const), a: anyAssoc, index: fc.nat({ max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("tick" as const), hours: fc.integer({ min: 1, max: 30 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("reenroll" as const), dev }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("upload" as const), dev, chunks: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("download" as const), dev }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant("agent" as const), dev: fc.oneof(dev, fc.constant("destination" as const)), step: fc.constantFrom("0" as const, "1" as const), chunks: fc.integer({ min: 1, max: 2 }) }) },
);
/** A sequence, and sometimes the 31-day jump near its end (after it no device certificate is valid). */
const runArb = fc.record({
  /** How it starts: an association made by a Full Administrator (refresh A, replace A→B, B→A, A→C), or none (the run makes a refresh itself). */
  first: fc.constantFrom<Op[]>([{ op: "create", who: "full", refresh: true, s: 0, d: 0 }], [{ op: "create", who: "full", refresh: false, s: 0, d: 1 }],
    [{ op: "create", who: "full", refresh: false, s: 1, d: 0 }], [{ op: "create", who: "full", refresh: false, s: 0, d: 2 }], []),
  ops: fc.array(opArb, { minLength: 15, maxLength: 26 }),
  expire: fc.integer({ min: 0, max: 9 }),
  tail: fc.array(opArb, { minLength: 1, maxLength: 4 }),
}).map(({ first, ops, expire, tail }): Op[] => [...first, ...ops, ...(expire < 3 ? [{ op: "expire" as const }, ...tail] : [])]);

type MState = "pending" | "captured" | "restored" | "gone";
type MAssoc = {
  id: string; src: number; dst: number; state: MState; createdAt: number;
  /** The data key, as first released (every later release must be the same key). */
  key: Buffer | null;
  stream: string | null; captureRun: string | null; restoreRun: string | null;
  /** The current stream's stored chunks, and the final one's index. */
  stored: Map<number, Buffer>; finalIndex: number | null; chunks: number;
  deleteAfterH: number; restoredAt: number | null;
  /** Expected audit entries: key releases (actor and kind) and recoveries. */
  releases: { actor: string; for: Action }[]; recovers: number;
};
type MRun = { id: string; dev: number; gen: number; running: boolean; open: string | null };
type MDev = { id: string; ids: { macs: string[]; smbiosUuid: string }; m: TestMachine; serial: string; gen: number; run: string | null; stale: string | null };

const isLive = (s: MState) => s !== "gone";

function adminBytes(t: TestSite, token: string, p: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(new URL(p, t.url), { method: "GET", ca: t.ca, agent: false, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

const plaintextOf = (a: string, stream: string, index: number) => Buffer.from(`user state of ${a}, stream ${stream}, chunk ${index}`);

for (const database of databasesUnderTest()) describe(`computer associations on ${database}: who gets the key and the chunks (I18, model)`, () => {
  it("only the running step of the association's own device, or a Recovery Agent with a reason, ever gets its key or chunks; deleted and expired ones give nothing", async () => {
    let counter = 0;
    await fc.assert(fc.asyncProperty(runArb, async (ops) => {
      const started = Date.now();
      let clock = started;
      let ticked = 0;
      let expired = false;
      const t = await startTestSite({ database, now: () => new Date(clock) });
      const devs: MDev[] = [];
      try {
        const tokens = {} as Record<Role, string>;
        const usernames = {} as Record<Role, string>;
        tokens.full = t.adminToken;
        usernames.full = "admin";
        for (const r of ["deploy", "security", "analyst", "recovery"] as const) {
          usernames[r] = `i18.${r}`;
          tokens[r] = await adminWithRoles(t, usernames[r], [roleIds[r]!]);
        }
        const signInAll = async () => {
          for (const r of Object.keys(usernames) as Role[]) {
            const password = r === "full" ? `${ADMIN_PASSWORD}-changed` : adminPassword(usernames[r], true);
            const s = await t.request("POST", "/api/v1/sessions", { body: { username: usernames[r], password } });
            assert.equal(s.status, 201, s.text);
            tokens[r] = s.body.token;
          }
        };
        const as = (r: Role, method: string, p: string, body?: unknown) => t.request(method, p, { token: tokens[r], body });
        const doc = { name: "Migrate", steps: [
          { name: "Capture", type: "capture-user-state" },
          { name: "Restore", type: "restore-user-state" },
          { name: "Note", type: "run-command", with: { command: "true" } },
        ] };
        assert.equal((await as("full", "POST", "/api/v1/collections", { name: "Lab" })).status, 201);
        assert.equal((await as("full", "POST", "/api/v1/task-sequences", { document: doc })).status, 201);
        const dep = await as("full", "POST", "/api/v1/deployments", { name: "Migrate", taskSequence: "Migrate", collection: "Lab", purpose: "available", bootPaths: ["media"] });
        assert.equal(dep.status, 201, dep.text);
        const depId = dep.body.id as string;
        for (const name of ["A", "B", "C"]) {
          counter++;
          const n = counter.toString(16).padStart(4, "0");
          const ids = { macs: [`52:54:00:18:${n.slice(0, 2)}:${n.slice(2)}`], smbiosUuid: `00000000-0000-4000-8000-00001818${n}` };
          const d = await as("full", "POST", "/api/v1/devices", { name, ...ids, state: "approved", collections: ["Lab"] });
          assert.equal(d.status, 201, d.text);
          const m = await newMachine(t, ids);
          const e = await enrollApproved(t, m);
          assert.equal(e.status, 201, e.text);
          devs.push({ id: d.body.id, ids, m, serial: e.body.serial, gen: 0, run: null, stale: null });
        }

        const assocs: MAssoc[] = [];
        const runs = new Map<string, MRun>();
        const log: string[] = [];
        const fail = (msg: string) => `${msg}\nsteps:\n${log.join("\n")}`;
        const liveFor = (d: number) => assocs.find((a) => isLive(a.state) && (a.src === d || a.dst === d));
        const pick = (i: number): MAssoc | undefined => (assocs.length ? assocs[i % assocs.length] : undefined);
        const stateDir = path.join(t.dataDir, "state");
        const rows = async (): Promise<any[]> => {
          const r = await as("full", "GET", "/api/v1/associations");
          assert.equal(r.status, 200, r.text);
          return (r.body as any[]).sort((x, y) => (x.id < y.id ? -1 : 1));
        };
        /** The step's run gate, as the model sees it (user-state.ts gate). */
        const gateOk = (runId: string | null, d: number, stepPath: string | null, act: Action): boolean => {
          const r = runId ? runs.get(runId) : undefined;
          if (!r || r.dev !== d || r.gen !== devs[d].gen || !r.running) return false;
          const s = stepPath ?? r.open ?? "";
          return stepKind(s) === act && r.open === s;
        };
        const sameKey = (a: MAssoc, b64: string, what: string) => {
          const k = Buffer.from(b64, "base64");
          assert.equal(k.length, 32, fail(`${what}: not a 256-bit key`));
          if (a.key) assert.ok(a.key.equals(k), fail(`${what}: another key than the association's`));
          else {
            // A new association (one made again after a delete, say) never gets an old one's key.
            assert.ok(!assocs.some((x) => x.key?.equals(k)), fail(`${what}: the key of another association`));
            a.key = k;
          }
        };

        /** I18 from outside, after every step. */
        const check = async () => {
          const list = await rows();
          assert.equal(list.length, assocs.length, fail(`the site holds ${list.length} associations, the model ${assocs.length}`));
          const releases = await t.site.audit.list({ action: "association.key-release", outcome: "success", limit: 1000 });
          const recovers = await t.site.audit.list({ action: "association.recover", outcome: "success", limit: 1000 });
          for (const a of assocs) {
            const row = list.find((x) => x.id === a.id);
            assert.ok(row, fail(`association ${a.id} is missing`));
            assert.equal(row.state, a.state, fail(`association ${a.id} is ${row.state}, the model says ${a.state}`));
            assert.equal(row.keyDestroyed, a.state === "gone", fail(`association ${a.id} (${a.state}) keyDestroyed=${row.keyDestroyed}`));
            if (a.state === "captured" || a.state === "restored") assert.equal(row.chunks, a.chunks, fail(`association ${a.id} counts ${row.chunks} chunks`));
            if (isLive(a.state)) assert.equal(row.deleteAfterSeconds, a.deleteAfterH * 3600, fail(`association ${a.id} keeps ${row.deleteAfterSeconds} s`));
            if (a.state === "restored") assert.equal(Date.parse(row.deleteAt), a.restoredAt! + a.deleteAfterH * HOUR, fail(`association ${a.id} is deleted at ${row.deleteAt}`));
            const rel = releases.filter((e) => e.object === `association:${a.id}`).map((e) => ({ actor: e.actor, for: (e.details as any).for }));
            assert.deepEqual(rel, a.releases, fail(`key releases of ${a.id} in the audit log differ from the model`));
            const rec = recovers.filter((e) => e.object === `association:${a.id}`);
            assert.equal(rec.length, a.recovers, fail(`association ${a.id}: ${rec.length} recoveries audited, ${a.recovers} made`));
            for (const e of rec) {
              assert.equal(e.actor, `admin:${usernames.recovery}`, fail(`association ${a.id} recovered by ${e.actor}`));
              assert.ok(String((e.details as any).reason ?? "").trim().length >= 10, fail(`association ${a.id} recovered without a reason`));
            }
            if (a.state === "gone") {
              assert.ok(!fs.existsSync(path.join(stateDir, a.id)), fail(`the chunk folder of gone association ${a.id} is still on disk`));
              const leftovers = fs.existsSync(stateDir) ? fs.readdirSync(stateDir).filter((n) => n.includes(a.id)) : [];
              assert.deepEqual(leftovers, [], fail(`files of gone association ${a.id} remain under DATA/state`));
            }
          }
          // Nothing released for an association the model does not know.
          const known = new Set(assocs.map((a) => `association:${a.id}`));
          for (const e of [...releases, ...recovers]) assert.ok(known.has(e.object ?? ""), fail(`a key release for ${e.object}`));
          return list;
        };

        // An agent asks for the key as soon as it reports a user-state step started.
        const expand = (o: Op): Op[] => {
          if (o.op === "begin" && o.ask && o.step !== "2") return [{ ...o, ask: false }, { op: "grant", dev: o.dev, action: "auto", step: "open", run: "own" }];
          if (o.op === "upload") {
            const puts = [...Array(o.chunks).keys()].map((i): Op => ({ op: "put", dev: o.dev, a: "mine", index: "next", final: i === o.chunks - 1, content: "own" }));
            return [...puts, { op: "complete", dev: o.dev, a: "mine" }];
          }
          if (o.op === "download") return [0, 1].map((index): Op => ({ op: "fetch", dev: o.dev, a: "mine", index })).concat([{ op: "confirm", dev: o.dev, a: "mine" }]);
          if (o.op === "agent") {
            // "destination": the machine a captured association waits for, as a replace's new machine would.
            const waiting = assocs.findLast((a) => a.state === "captured");
            const d = o.dev === "destination" ? (waiting?.dst ?? 0) : o.dev;
            const step = o.dev === "destination" ? "1" : o.step;
            return [...expand({ op: "begin", dev: d, step, ask: true }), ...expand(step === "0" ? { op: "upload", dev: d, chunks: o.chunks } : { op: "download", dev: d })];
          }
          return [o];
        };
        let last = await rows();
        const queue = [...ops];
        while (queue.length > 0) {
          const next = queue.shift()!;
          const parts = expand(next);
          if (parts.length !== 1 || parts[0] !== next) {
            queue.unshift(...parts);
            continue;
          }
          const o = next;
          log.push(JSON.stringify(o));
          const before = last;
          /** The status the model expects, set by each branch; null skips the comparison (the op did not apply). */
          let got: number | null = null;
          let want: number | number[] | null = null;

          if (o.op === "create") {
            const s = o.s, d = o.refresh ? o.s : o.d;
            const body = o.refresh ? { inPlace: devs[s].id } : { source: devs[s].id, destination: devs[d].id };
            const r = await as(o.who, "POST", "/api/v1/associations", body);
            got = r.status;
            want = !writers.includes(o.who) ? 403 : !o.refresh && s === d ? 400 : liveFor(s) || liveFor(d) ? 409 : 201;
            if (r.status === 201 && want === 201) {
              assocs.push({ id: r.body.id, src: s, dst: d, state: "pending", createdAt: clock, key: null, stream: null, captureRun: null, restoreRun: null,
                stored: new Map(), finalIndex: null, chunks: 0, deleteAfterH: 24, restoredAt: null, releases: [], recovers: 0 });
            }
          } else if (o.op === "begin") {
            const D = devs[o.dev];
            const r = await D.m.call("POST", "/mp/v1/runs", { deployment: depId, bootPath: "media" });
            const cur = D.run ? runs.get(D.run) : undefined;
            const resume = cur?.running && cur.gen === D.gen;
            const wantStart: number = expired ? 401 : resume ? 200 : 201;
            assert.equal(r.status, wantStart, fail(`start → ${r.status}, the model expects ${wantStart}: ${r.text}`));
            if (r.status === 200) assert.equal(r.body.id, cur!.id, fail("resumed another run"));
            if (r.status === 201) {
              // A running run of an earlier enrollment is cancelled and replaced.
              if (D.stale) runs.get(D.stale)!.running = false;
              runs.set(r.body.id, { id: r.body.id, dev: o.dev, gen: D.gen, running: true, open: null });
              D.run = r.body.id;
            }
            if (!expired) {
              const e = await D.m.call("POST", `/mp/v1/runs/${D.run}/events`, { step: o.step, state: "started" });
              got = e.status;
              want = 201;
              if (e.status === 201) runs.get(D.run!)!.open = o.step;
            }
          } else if (o.op === "finish-step" || o.op === "end") {
            const D = devs[o.dev];
            const run = D.run ? runs.get(D.run) : undefined;
            if (!run) continue;
            const body = o.op === "end" ? { step: "", state: "succeeded" } : { step: o.step, state: "succeeded" };
            const r = await D.m.call("POST", `/mp/v1/runs/${run.id}/events`, body);
            got = r.status;
            want = expired ? 401 : run.running ? 201 : 409;
            if (r.status === 201 && want === 201) {
              if (o.op === "end") Object.assign(run, { running: false, open: null });
              else if (run.open === o.step) run.open = null;
            }
          } else if (o.op === "grant") {
            const D = devs[o.dev];
            const runId = o.run === "own" ? D.run : o.run === "stale" ? D.stale : devs[(o.dev + 1) % 3].run;
            if (!runId) continue;
            const stepPath = o.step === "open" ? runs.get(runId)!.open ?? "2" : o.step;
            // "auto": the action the step is for (what an agent asks), or a capture at another step.
            const act: Action = o.action === "auto" ? (stepKind(stepPath) === "restore" ? "restore" : "capture") : o.action;
            const r = await D.m.call("POST", `/mp/v1/runs/${runId}/user-state`, { step: stepPath, action: act });
            got = r.status;
            if (expired) want = 401;
            else if (!gateOk(runId, o.dev, stepPath, act)) want = 403;
            else {
              let a = liveFor(o.dev);
              // A task sequence that captures and restores makes a refresh association by itself.
              const auto = !a && act === "capture";
              if (auto && r.status === 200) {
                a = { id: r.body.association, src: o.dev, dst: o.dev, state: "pending", createdAt: clock, key: null, stream: null, captureRun: null, restoreRun: null,
                  stored: new Map(), finalIndex: null, chunks: 0, deleteAfterH: 24, restoredAt: null, releases: [], recovers: 0 };
                assocs.push(a);
              }
              if (!a) want = auto ? 200 : 409;
              // A new capture grant clears what a pending association holds (even a complete,
              // unconfirmed attempt); a refresh restores only to the enrollment that captured it.
              else if (act === "capture") want = a.src !== o.dev || a.state !== "pending" ? 409 : 200;
              else {
                const refresh = a.src === a.dst;
                const capturedBy = a.captureRun ? runs.get(a.captureRun)?.gen : undefined;
                want = a.dst !== o.dev || (a.state !== "captured" && a.state !== "restored") || (refresh && capturedBy !== D.gen) ? 409 : 200;
              }
              if (r.status === 200 && want === 200 && a) {
                assert.equal(r.body.association, a.id, fail("the key of another association"));
                sameKey(a, r.body.dataKey, "grant");
                a.releases.push({ actor: `device:${D.id}`, for: act });
                if (act === "capture") {
                  Object.assign(a, { stream: r.body.streamId, captureRun: runId, stored: new Map(), finalIndex: null });
                } else {
                  a.restoreRun = runId;
                  assert.equal(r.body.chunks, a.chunks);
                }
              }
            }
          } else if (o.op === "put" || o.op === "complete" || o.op === "fetch" || o.op === "confirm") {
            const a = o.a === "mine" ? liveFor(o.dev) ?? assocs.findLast((x) => x.src === o.dev || x.dst === o.dev) ?? pick(o.dev) : pick(o.a);
            if (!a) continue;
            const D = devs[o.dev];
            const act: Action = o.op === "put" || o.op === "complete" ? "capture" : "restore";
            const end = act === "capture" ? a.src : a.dst;
            const runId = act === "capture" ? a.captureRun : a.restoreRun;
            const stateOk = act === "capture" ? a.state === "pending" : a.state === "captured" || a.state === "restored";
            // user-state.ts current(): the device must be that end, a run must hold the key, the gate, then the state.
            const gateWant = expired ? 401 : end !== o.dev ? 403 : !runId ? 409 : !gateOk(runId, o.dev, null, act) ? 403 : !stateOk ? 409 : null;
            if (o.op === "put") {
              let bytes: Buffer;
              const index = o.index === "next" ? Math.max(-1, ...a.stored.keys()) + 1 : o.index;
              if (o.content === "own" && a.key && a.stream) {
                bytes = sealChunk({ dataKey: a.key, associationId: a.id, streamId: a.stream, index, final: o.final, plaintext: plaintextOf(a.id, a.stream, index) });
              } else if (o.content === "foreign" || o.content === "own") {
                // Another association's (or attempt's) sealed chunk, under its own key and stream.
                const other = assocs.find((x) => x !== a && x.key && x.stream);
                bytes = sealChunk({ dataKey: other?.key ?? crypto.randomBytes(32), associationId: other?.id ?? crypto.randomUUID(), streamId: other?.stream ?? crypto.randomBytes(16).toString("hex"),
                  index, final: o.final, plaintext: Buffer.from("not yours") });
              } else {
                bytes = crypto.randomBytes(64 + index);
              }
              const r = await bytesCall(t, D.m, "PUT", `/mp/v1/user-state/${a.id}/chunks/${index}`, bytes);
              got = r.status;
              if (gateWant !== null) want = gateWant;
              else if (o.content === "garbage" || !(o.content === "own" && a.key && a.stream)) want = 400;
              else {
                const held = a.stored.get(index);
                const beyond = Math.max(-1, ...a.stored.keys());
                want = held ? (held.equals(bytes) ? 201 : 409)
                  : a.finalIndex !== null && index > a.finalIndex ? 409
                  : o.final && (a.finalIndex !== null || beyond > index) ? 409 : 201;
                if (r.status === 201 && want === 201) {
                  a.stored.set(index, bytes);
                  if (o.final) a.finalIndex = index;
                }
              }
            } else if (o.op === "complete") {
              const r = await D.m.call("POST", `/mp/v1/user-state/${a.id}/captured`, { files: 1, stateBytes: 100 });
              got = r.status;
              const complete = a.finalIndex !== null && [...Array(a.finalIndex + 1).keys()].every((i) => a.stored.has(i));
              want = gateWant ?? (complete ? 200 : 409);
              if (r.status === 200 && want === 200) Object.assign(a, { state: "captured", chunks: a.finalIndex! + 1 });
            } else if (o.op === "fetch") {
              const r = await bytesCall(t, D.m, "GET", `/mp/v1/user-state/${a.id}/chunks/${o.index}`);
              got = r.status;
              want = gateWant ?? (o.index < a.chunks ? 200 : 404);
              if (r.status === 200 && want === 200) {
                assert.ok(r.body.equals(a.stored.get(o.index)!), fail("fetched other bytes than were stored"));
                const opened = openChunk(r.body, { dataKey: a.key!, associationId: a.id });
                assert.ok(opened.plaintext.equals(plaintextOf(a.id, a.stream!, o.index)), fail("the chunk does not open to what was captured"));
              }
            } else {
              const r = await D.m.call("POST", `/mp/v1/user-state/${a.id}/restored`, { files: 1, notRestored: 0 });
              got = r.status;
              want = gateWant ?? 200;
              if (r.status === 200 && want === 200) Object.assign(a, { state: "restored", restoredAt: clock });
            }
          } else if (o.op === "delete" || o.op === "retention") {
            const a = pick(o.a);
            if (!a) continue;
            if (o.op === "delete") {
              const r = await as(o.who, "DELETE", `/api/v1/associations/${a.id}`);
              got = r.status;
              want = writers.includes(o.who) ? 200 : 403;
              if (r.status === 200 && want === 200) {
                a.state = "gone";
                assert.equal(r.body.state, "gone", fail("a deleted association is not gone"));
              }
            } else {
              const r = await as(o.who, "PATCH", `/api/v1/associations/${a.id}`, { deleteAfterHours: o.hours });
              got = r.status;
              want = !writers.includes(o.who) ? 403 : o.hours < 1 ? 400 : !isLive(a.state) ? 409 : 200;
              if (r.status === 200 && want === 200) a.deleteAfterH = o.hours;
            }
          } else if (o.op === "recover") {
            const a = pick(o.a);
            if (!a) continue;
            const r = await as(o.who, "POST", `/api/v1/associations/${a.id}/recover`, o.reason ? { reason: "the user lost their files after a failed restore" } : {});
            got = r.status;
            if (o.who !== "recovery") want = [403, 404];
            else if (!o.reason) want = 400;
            else want = a.state === "captured" || a.state === "restored" ? 200 : 409;
            if (r.status === 200 && want === 200) {
              sameKey(a, r.body.dataKey, "recover");
              assert.equal(r.body.chunks, a.chunks);
              a.recovers++;
            }
          } else if (o.op === "recover-chunk") {
            const a = pick(o.a);
            // A chunk read before the agent gave a reason is the separate test below (a hole today).
            if (!a || a.recovers === 0) continue;
            const r = await adminBytes(t, tokens.recovery, `/api/v1/associations/${a.id}/chunks/${o.index}`);
            got = r.status;
            want = a.state !== "captured" && a.state !== "restored" ? 409 : o.index < a.chunks ? 200 : 404;
            if (r.status === 200 && want === 200) assert.ok(r.body.equals(a.stored.get(o.index)!), fail("the Recovery Agent got other bytes than were stored"));
            // No other role reads a chunk.
            for (const who of ["full", "deploy", "security", "analyst"] as const) {
              const x = await adminBytes(t, tokens[who], `/api/v1/associations/${a.id}/chunks/${o.index}`);
              assert.ok(x.status === 403 || x.status === 404, fail(`${who} read a chunk: ${x.status}`));
            }
          } else if (o.op === "tick" || o.op === "expire") {
            if (o.op === "tick") {
              const step = Math.min(o.hours * HOUR, MAX_TICKING - ticked);
              if (step <= 0) continue;
              ticked += step;
              clock += step;
            } else {
              if (expired) continue;
              expired = true;
              clock += EXPIRE_JUMP;
            }
            await signInAll();
            const swept = await sweepAssociations(t.site, stateChunksOf(t.site));
            const due = assocs.filter((a) => (a.state === "restored" && a.restoredAt! + a.deleteAfterH * HOUR <= clock)
              || ((a.state === "pending" || a.state === "captured") && a.createdAt + 30 * DAY <= clock));
            assert.deepEqual([...swept.deleted, ...swept.expired].sort(), due.map((a) => a.id).sort(), fail(`the sweep shredded ${JSON.stringify(swept)}`));
            for (const a of due) a.state = "gone";
          } else if (o.op === "reenroll") {
            // A certificate issued on a clock ahead of the real one is not yet valid for TLS.
            if (expired || ticked > 0) continue;
            const D = devs[o.dev];
            // The old enrollment goes (revoked), the device is approved again, a new machine key enrolls.
            const rv = await as("full", "POST", `/api/v1/certificates/${D.serial}/revoke`, { reason: "keyCompromise" });
            assert.equal(rv.status, 200, rv.text);
            assert.equal((await as("full", "POST", `/api/v1/devices/${D.id}/approve`)).status, 200);
            const m = await newMachine(t, D.ids);
            const e = await enrollApproved(t, m);
            assert.equal(e.status, 201, fail(e.text));
            D.m.close();
            Object.assign(D, { m, serial: e.body.serial, gen: D.gen + 1, stale: D.run ?? D.stale, run: null });
          }

          if (want !== null && got !== null) {
            const ok = Array.isArray(want) ? want.includes(got) : want === got;
            assert.ok(ok, fail(`→ ${got}, the model expects ${JSON.stringify(want)}`));
          }
          last = await check();
          if (got !== null && got >= 400) assert.deepEqual(last, before, fail("a refused request changed an association"));
        }
      } finally {
        for (const d of devs) d.m.close();
        await t.close();
      }
    }), { numRuns: Number(process.env.SLIPWAY_MODEL_RUNS ?? (database === "sqlite" ? 12 : 8)), endOnFailure: true });
  });
});

describe("computer associations: recovery outside a run", () => {
  it("a Recovery Agent reads no chunk before giving a reason (each read of user state is audited with one)", async () => {
    const t = await startTestSite();
    try {
      // Capture through a real run, then the agent asks for a chunk without ever calling recover.
      const doc = { name: "R", steps: [{ name: "Capture", type: "capture-user-state" }, { name: "Restore", type: "restore-user-state" }] };
      assert.equal((await t.request("POST", "/api/v1/collections", { token: t.adminToken, body: { name: "L" } })).status, 201);
      assert.equal((await t.request("POST", "/api/v1/task-sequences", { token: t.adminToken, body: { document: doc } })).status, 201);
      const dep = await t.request("POST", "/api/v1/deployments", { token: t.adminToken, body: { name: "R", taskSequence: "R", collection: "L", purpose: "available", bootPaths: ["media"] } });
      const ids = { macs: ["52:54:00:18:ff:01"], smbiosUuid: "00000000-0000-4000-8000-0000181fff01" };
      assert.equal((await t.request("POST", "/api/v1/devices", { token: t.adminToken, body: { name: "pc", ...ids, state: "approved", collections: ["L"] } })).status, 201);
      const m = await newMachine(t, ids);
      try {
        assert.equal((await enrollApproved(t, m)).status, 201);
        const run = await m.call("POST", "/mp/v1/runs", { deployment: dep.body.id, bootPath: "media" });
        assert.equal((await m.call("POST", `/mp/v1/runs/${run.body.id}/events`, { step: "0", state: "started" })).status, 201);
        const g = await m.call("POST", `/mp/v1/runs/${run.body.id}/user-state`, { step: "0", action: "capture" });
        assert.equal(g.status, 200, g.text);
        const c = sealChunk({ dataKey: Buffer.from(g.body.dataKey, "base64"), associationId: g.body.association, streamId: g.body.streamId, index: 0, final: true, plaintext: Buffer.from("files") });
        assert.equal((await bytesCall(t, m, "PUT", `/mp/v1/user-state/${g.body.association}/chunks/0`, c)).status, 201);
        assert.equal((await m.call("POST", `/mp/v1/user-state/${g.body.association}/captured`, { files: 1, stateBytes: 5 })).status, 200);
        const agent = await adminWithRoles(t, "i18.agent", ["recovery-agent"]);
        const r = await adminBytes(t, agent, `/api/v1/associations/${g.body.association}/chunks/0`);
        const audited = await t.site.audit.list({ action: "association.recover", limit: 1000 });
        assert.ok(r.status >= 400 || audited.some((e) => e.actor === "admin:i18.agent" && e.object === `association:${g.body.association}`),
          `a Recovery Agent read a stored chunk (${r.status}) with no reason given and nothing audited`);
      } finally {
        m.close();
      }
    } finally {
      await t.close();
    }
  });
});
