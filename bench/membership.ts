/**
 * Benchmark (not a test): what collection membership costs a policy poll and the device list,
 * at 1k, 10k and 100k devices, before and after membership was cached per generation
 * (issue 12, item 4).
 *
 *   export PATH="$PWD/.tools/node/bin:$PATH"   # from the repository's root
 *   node --disable-warning=ExperimentalWarning bench/membership.ts [--sizes 1000,10000,100000] [--rounds 3]
 *
 * About 6 minutes with the defaults on 2 cores, most of it seeding 100k devices twice.
 * Results: bench/README.md.
 *
 * "before" is the code of the commit before the cache (`--before REV`, default: the parent of
 * the commit that added src/storage/membership-generation.ts), unpacked with `git archive` into
 * a temporary folder (its node_modules a link to this checkout's) and loaded into this same
 * process beside the working tree's code ("after"); nothing in the product switches the cache
 * off. Options: --sizes, --rounds R (default 3), --polls N (policy compiles per measurement,
 * default 7), --lists N (device lists per measurement, default 3), --database sqlite|postgres
 * (postgres: SLIPWAY_TEST_DATABASE_URL, as the tests).
 *
 * For each size, each tree gets its own real site (test/support/site.ts: the site server and
 * management point on loopback), seeded through that tree's own DeviceStore in one transaction:
 * N devices with attributes (rack r0..r19, ram 1..8, os linux/windows), 24 collections — 20 with
 * a rule over those attributes, "Everyone" (rule `true`), 3 static with 1% of the fleet each —
 * an available deployment targeting each, a probe device (approved, in Everyone, 4 rule
 * collections and 1 static one) enrolled with its own key and certificate, and an administrator
 * scoped to one static collection. Then, in rounds that alternate which tree goes first:
 *
 *   compile        devicePolicy(site, probe) in process, nothing changed in between (p50 ms)
 *   compile, churn the same, each right after another device's attributes changed (p50 ms)
 *   poll           GET /mp/v1/policy over mutual TLS, keep-alive, as the agent polls (p50 ms)
 *   list           GET /api/v1/devices by an administrator without scopes (p50 ms, whole reply read)
 *   scoped list    the same by the scoped administrator (p50 ms)
 *   scoped, churn  the same, each right after another device's attributes changed (p50 ms)
 *
 * "churn" writes through the tree's own DeviceStore (so "after" counts the write in the
 * membership generation): a fleet where machines report inventory all the time.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import type { TestSite } from "../test/support/site.ts";
import type { TestMachine } from "../test/support/device.ts";
import type { Device } from "../src/domain/device.ts";
import { onExit } from "../test/lab/cleanup.ts";

const { values: argv } = parseArgs({
  options: {
    sizes: { type: "string", default: "1000,10000,100000" },
    rounds: { type: "string", default: "3" },
    polls: { type: "string", default: "7" },
    lists: { type: "string", default: "3" },
    before: { type: "string" },
    database: { type: "string", default: "sqlite" },
  },
});
const SIZES = argv.sizes!.split(",").map(Number);
const ROUNDS = Number(argv.rounds);
const POLLS = Number(argv.polls);
const LISTS = Number(argv.lists);
const DATABASE = argv.database as "sqlite" | "postgres";
if (SIZES.some((n) => !(Number.isInteger(n) && n >= 10 && n <= 1_000_000)) || !(ROUNDS >= 1 && ROUNDS <= 20) || !(POLLS >= 1) || !(LISTS >= 1)
  || !["sqlite", "postgres"].includes(DATABASE)) {
  throw new Error("--sizes 10..1000000 (comma-separated), --rounds 1..20, --polls N ≥ 1, --lists N ≥ 1, --database sqlite|postgres");
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

// ---------------------------------------------------------------------------------------
// The two trees

/** The modules the bench drives, from one tree. */
type Tree = {
  name: "before" | "after";
  site: typeof import("../test/support/site.ts");
  device: typeof import("../test/support/device.ts");
  stores: typeof import("../src/storage/stores.ts");
  policy: typeof import("../src/site/policy.ts");
};

async function loadTree(name: Tree["name"], root: string): Promise<Tree> {
  const im = (p: string) => import(path.join(root, p));
  return { name, site: await im("test/support/site.ts"), device: await im("test/support/device.ts"), stores: await im("src/storage/stores.ts"),
    // The site core moved policy.ts from the management role (issue #12, item 1).
    policy: await im(fs.existsSync(path.join(root, "src/site/policy.ts")) ? "src/site/policy.ts" : "src/roles/management/policy.ts") };
}

function git(...args: string[]): string {
  const r = spawnSync("git", ["-C", ROOT, ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** The "before" tree: REV's files in a temporary folder, sharing this checkout's node_modules. */
function unpackBefore(): { rev: string; dir: string } {
  const added = argv.before ?? git("log", "--diff-filter=A", "--format=%H", "--", "src/storage/membership-generation.ts").split("\n").at(-1);
  if (!added) throw new Error("Cannot find the commit that added the membership cache; name one with --before REV");
  const rev = argv.before ? git("rev-parse", "--verify", `${argv.before}^{commit}`) : git("rev-parse", "--verify", `${added}^`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-bench-before-"));
  const archive = spawnSync("git", ["-C", ROOT, "archive", "--format=tar", rev], { maxBuffer: 1 << 30 });
  if (archive.status !== 0) throw new Error(`git archive ${rev}: ${archive.stderr.toString().trim()}`);
  const tar = spawnSync("tar", ["-x", "-C", dir], { input: archive.stdout });
  if (tar.status !== 0) throw new Error(`tar: ${tar.stderr.toString().trim()}`);
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  return { rev, dir };
}

// ---------------------------------------------------------------------------------------
// One site per tree and size

type Bench = { tree: Tree; t: TestSite; probe: Device; machine: TestMachine; scopedToken: string; others: string[]; close(): Promise<void> };

const RULES = [
  ...Array.from({ length: 10 }, (_, k) => `attributes.rack == "r${k}"`),
  ...Array.from({ length: 5 }, (_, k) => `attributes.ram >= ${k + 4} and attributes.os == "linux"`),
  ...Array.from({ length: 5 }, (_, k) => `attributes.rack in ["r${10 + 2 * k}", "r${11 + 2 * k}"] or attributes.ram == ${k + 1}`),
];
const TASK_SEQUENCE = "name: Bench\nsteps:\n  - name: Say hello\n    type: run-command\n    with: { command: \"echo hello\" }\n";

async function setUp(tree: Tree, n: number): Promise<Bench> {
  const t = await tree.site.startTestSite({ database: DATABASE });
  const admin = async (method: string, p: string, body?: unknown, token = t.adminToken) => {
    const r = await t.request(method, p, { token, body });
    if (r.status >= 300) throw new Error(`${tree.name}: ${method} ${p}: ${r.status} ${r.text}`);
    return r.body;
  };
  await admin("POST", "/api/v1/task-sequences", { document: TASK_SEQUENCE, format: "yaml" });
  const names = [...RULES.map((_, k) => `rule-${k}`), "Everyone", "static-0", "static-1", "static-2"];
  const ids: string[] = [];
  for (const [k, name] of names.entries()) {
    const c = await admin("POST", "/api/v1/collections", { name, rule: k < RULES.length ? RULES[k] : name === "Everyone" ? "true" : null });
    ids.push(c.id);
    await admin("POST", "/api/v1/deployments", { name: `dep-${name}`, taskSequence: "Bench", collection: c.id, purpose: "available", bootPaths: ["pxe", "media"] });
  }
  const statics = ids.slice(-3);
  const others: string[] = [];
  const now = new Date().toISOString();
  await t.site.db.transaction(async (tx) => {
    const s = tree.stores.stores(tx);
    for (let i = 0; i < n; i++) {
      const d = await s.devices.create({ name: `pc-${String(i).padStart(7, "0")}`, macs: [`02:42:${[16, 8, 0].map((b) => ((i >> b) & 0xff).toString(16).padStart(2, "0")).join(":")}:01`],
        smbiosUuid: null, serial: `SN${i}`, state: "approved", attributes: { rack: `r${i % 20}`, ram: 1 + (i % 8), os: i % 3 ? "linux" : "windows" } }, now);
      if (i % 100 === 0) await s.collections.addMember(statics[(i / 100) % 3], d.id);
      if (i % 97 === 0) others.push(d.id);
    }
  });
  // The probe: rack r3, ram 6, linux → Everyone, rule-3, rule-10..12 (ram ≥ 4, 5, 6 and linux), static-1.
  const mac = "02:42:ff:ff:ff:01";
  const uuid = "00000000-0000-4000-8000-0000000b3c01";
  const created = await admin("POST", "/api/v1/devices", { name: "probe", macs: [mac], smbiosUuid: uuid, state: "approved",
    attributes: { rack: "r3", ram: 6, os: "linux" }, collections: ["static-1"] });
  const machine = await tree.device.newMachine(t, { macs: [mac], smbiosUuid: uuid });
  const r = await machine.enroll({ kind: "pre-approved" });
  if (r.status !== 201) throw new Error(`${tree.name}: the probe's enrollment: ${r.status} ${r.text}`);
  const probe = (await tree.stores.stores(t.site.db).devices.byId(created.id))!;
  const scopedToken = await tree.site.adminWithRoles(t, "scoped", ["deployment-administrator"], [statics[0]]);
  return { tree, t, probe, machine, scopedToken, others, async close() {
    machine.close();
    await t.close();
  } };
}

// ---------------------------------------------------------------------------------------
// Measurements

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
let churned = 0;

/** Another device's attributes change, through the tree's own store. */
async function churn(b: Bench): Promise<void> {
  const id = b.others[churned++ % b.others.length];
  await b.tree.stores.stores(b.t.site.db).devices.update(id, { attributes: { rack: `r${churned % 20}`, ram: 1 + (churned % 8), os: "linux" } }, new Date().toISOString());
}

async function timed(n: number, before: (() => Promise<void>) | null, fn: () => Promise<unknown>): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    if (before) await before();
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

type Figures = { compile: number; compileChurn: number; poll: number; list: number; scoped: number; scopedChurn: number };
const COLUMNS: [keyof Figures, string][] = [["compile", "compile"], ["compileChurn", "compile, churn"], ["poll", "poll (mTLS)"],
  ["list", "list"], ["scoped", "scoped list"], ["scopedChurn", "scoped, churn"]];

async function measure(b: Bench): Promise<Figures> {
  const { t, tree, probe } = b;
  const compile = async () => {
    const p = await tree.policy.devicePolicy(t.site, probe, "pxe", "sniffable");
    if (p.deployments.length !== 6) throw new Error(`${tree.name}: the probe's policy has ${p.deployments.length} deployments, not 6`);
  };
  const poll = async () => {
    const r = await b.machine.call("GET", "/mp/v1/policy?bootPath=pxe");
    if (r.status !== 200) throw new Error(`${tree.name}: policy poll: ${r.status} ${r.text}`);
  };
  const list = (token: string) => async () => {
    const r = await t.request("GET", "/api/v1/devices", { token });
    if (r.status !== 200 || !Array.isArray(r.body) || r.body.length === 0) throw new Error(`${tree.name}: device list: ${r.status} ${r.text.slice(0, 200)}`);
  };
  await compile(); // warm up: code paths, statement caches, what is kept
  const compiled = await timed(POLLS, null, compile);
  const compileChurn = await timed(POLLS, () => churn(b), compile);
  // A fresh keep-alive connection (the server closed the last one while it sat idle), its
  // handshake left out as an agent's is after its first poll.
  b.machine.agent.destroy();
  b.machine.agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  await poll();
  return {
    compile: compiled,
    compileChurn,
    poll: await timed(POLLS, null, poll),
    list: await timed(LISTS, null, list(t.adminToken)),
    scoped: await timed(LISTS, null, list(b.scopedToken)),
    scopedChurn: await timed(LISTS, () => churn(b), list(b.scopedToken)),
  };
}

// ---------------------------------------------------------------------------------------

const { rev, dir } = unpackBefore();
onExit(() => fs.rmSync(dir, { recursive: true, force: true }));
const trees = [await loadTree("before", dir), await loadTree("after", ROOT)];
const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)).padStart(9);
console.log(`membership bench: before = ${rev.slice(0, 12)}, after = working tree (${git("rev-parse", "--short=12", "HEAD")}${git("status", "--porcelain", "--", "src").length ? ", modified" : ""}); ${DATABASE}; ${os.cpus().length} CPUs, Node ${process.version}`);
console.log(`p50 ms of ${POLLS} compiles/polls and ${LISTS} lists per measurement\n`);
const header = `${"devices".padStart(8)}  ${"tree".padEnd(6)}  round  ${COLUMNS.map(([, h]) => h.padStart(14)).join("")}`;
const summary: string[] = [];
for (const n of SIZES) {
  console.log(header);
  const t0 = performance.now();
  const benches: Bench[] = [];
  try {
    for (const tree of trees) benches.push(await setUp(tree, n));
    const rounds = new Map<string, Figures[]>(trees.map((t) => [t.name, []]));
    for (let r = 1; r <= ROUNDS; r++) {
      for (const b of r % 2 ? benches : [...benches].reverse()) {
        const f = await measure(b);
        rounds.get(b.tree.name)!.push(f);
        console.log(`${String(n).padStart(8)}  ${b.tree.name.padEnd(6)}  ${String(r).padStart(5)}  ${COLUMNS.map(([k]) => fmt(f[k]).padStart(14)).join("")}`);
      }
    }
    const med = (name: string) => Object.fromEntries(COLUMNS.map(([k]) => [k, median(rounds.get(name)!.map((f) => f[k]))])) as Figures;
    const [bf, af] = [med("before"), med("after")];
    const line = `${String(n).padStart(8)}  ${COLUMNS.map(([k, h]) => `${h} ${bf[k] >= 10 ? bf[k].toFixed(0) : bf[k].toFixed(2)} → ${af[k] >= 10 ? af[k].toFixed(0) : af[k].toFixed(2)} ms (${(bf[k] / af[k]).toFixed(1)}×)`).join("; ")}`;
    summary.push(line);
    console.log(`(set-up and ${ROUNDS} rounds: ${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  } finally {
    for (const b of benches) await b.close();
  }
}
console.log("medians of the rounds, before → after:");
for (const l of summary) console.log(l);
