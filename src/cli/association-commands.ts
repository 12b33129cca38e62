/** `slipway association`: computer associations — whose user state goes where, and for how long it is kept. */
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { pipeline, Readable } from "node:stream";
import { createZstdDecompress } from "node:zlib";
import { apiBytes, apiPath } from "./client.ts";
import { openStream } from "../security/state-cipher.ts";
import { commandGroup } from "./command-group.ts";
import { integer, oneOf } from "./arguments.ts";
import { CliError } from "./command.ts";

type Association = {
  id: string; kind: "refresh" | "replace"; source: string; destination: string; sourceDeviceId: string; destinationDeviceId: string;
  state: string; store: string; keyDestroyed: boolean; chunks: number; storedBytes: number; stateBytes: number; files: number;
  quotaBytes: number; deleteAfterSeconds: number; expiresAt: string; deleteAt: string | null; createdBy: string; createdAt: string;
  capturedAt: string | null; restoredAt: string | null; deletedAt: string | null; goneReason: string | null;
};

const STATES = ["pending", "captured", "restored", "deleting", "gone"] as const;

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) (v /= 1024, i++);
  return `${v.toFixed(1)} ${units[i]}`;
}

const hours = (s: number) => `${+(s / 3600).toFixed(2)} h`;

/** When the state goes: the deadline that applies in its state. */
const deadline = (a: Association) => a.deleteAt ?? (a.state === "pending" || a.state === "captured" ? a.expiresAt : "");

const NOTES = [
  "A refresh (--in-place DEVICE) keeps one machine's user state across its re-imaging; a replace",
  "(--source OLD --destination NEW) carries it to another machine. A task sequence with both",
  "capture-user-state and restore-user-state makes the refresh association by itself.",
  "The state is kept --delete-after hours after a verified restore (default 24, at least 1) and",
  "destroyed 30 days after creation if never restored; deleting destroys its key first.",
].join("\n");

export const associationCommand = commandGroup("association", "Computer associations: whose user state goes where, and until when", {
  list: {
    summary: "List associations",
    options: {
      device: { type: "string", value: "DEVICE", description: "Only those of one device (source or destination)" },
      state: { type: "string", value: "STATE", description: `Only those in one state (${STATES.join(", ")})` },
    },
    async run(inv) {
      const q = new URLSearchParams();
      if (inv.str("device")) q.set("device", inv.str("device")!);
      if (inv.str("state")) q.set("state", oneOf(inv.str("state")!, STATES, "--state"));
      const rows = await inv.api().get<Association[]>(`/api/v1/associations${q.size ? `?${q}` : ""}`);
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "ID", value: (a) => a.id },
        { header: "KIND", value: (a) => a.kind },
        { header: "SOURCE", value: (a) => a.source, max: 24 },
        { header: "DESTINATION", value: (a) => a.destination, max: 24 },
        { header: "STATE", value: (a) => a.state },
        { header: "STORED", value: (a) => size(a.storedBytes), align: "right" },
        { header: "DELETED AT", value: (a) => deadline(a) },
      ], "No associations."));
    },
  },
  show: {
    summary: "Show one association",
    args: "ID",
    async run(inv) {
      const a = await inv.api().get<Association>(apiPath`/api/v1/associations/${inv.positionals[0]}`);
      inv.out.result(a, () => inv.out.fields([
        ["ID", a.id], ["Kind", a.kind], ["Source", `${a.source} (${a.sourceDeviceId})`], ["Destination", `${a.destination} (${a.destinationDeviceId})`],
        ["State", a.state], ["Key", a.keyDestroyed ? "destroyed" : "sealed by the site master key"], ["Files", a.files],
        ["User state", size(a.stateBytes)], ["Stored (compressed, encrypted)", `${size(a.storedBytes)} in ${a.chunks} chunks`], ["Quota", size(a.quotaBytes)],
        ["Delete after restore", hours(a.deleteAfterSeconds)], ["Expires if never restored", a.expiresAt], ["Delete at", a.deleteAt ?? "after its restore"],
        ["Created", `${a.createdAt} by ${a.createdBy}`], ["Captured", a.capturedAt ?? "not yet"], ["Restored", a.restoredAt ?? "not yet"],
        ...(a.deletedAt ? [["Deleted", `${a.deletedAt} (${a.goneReason ?? ""})`] as const] : []),
      ]));
    },
  },
  create: {
    summary: "Create an association: --in-place DEVICE (refresh), or --source OLD --destination NEW (replace)",
    options: {
      "in-place": { type: "string", value: "DEVICE", description: "Refresh: the machine keeps its own user state across re-imaging" },
      source: { type: "string", value: "DEVICE", description: "Replace: the old machine, whose state is captured" },
      destination: { type: "string", value: "DEVICE", description: "Replace: the new machine, where it is restored" },
      "delete-after": { type: "string", value: "HOURS", description: "Keep the state this long after a verified restore (default 24, at least 1)" },
    },
    notes: NOTES,
    async run(inv) {
      const inPlace = inv.str("in-place");
      const source = inv.str("source");
      const destination = inv.str("destination");
      if (inPlace === undefined && (source === undefined || destination === undefined)) {
        throw new CliError("Cannot create an association: give --in-place DEVICE, or --source DEVICE and --destination DEVICE");
      }
      const deleteAfter = inv.str("delete-after");
      const a = await inv.api().post<Association>("/api/v1/associations", {
        inPlace, source, destination, ...(deleteAfter !== undefined ? { deleteAfterHours: integer(deleteAfter, "--delete-after", 1, 365 * 24) } : {}),
      });
      inv.out.result(a, () => inv.out.line(a.kind === "refresh"
        ? `Created refresh association ${a.id} for "${a.source}"`
        : `Created replace association ${a.id}: "${a.source}" → "${a.destination}"`));
    },
  },
  retention: {
    summary: "Change how long an association's state is kept after its restore",
    args: "ID",
    options: { "delete-after": { type: "string", value: "HOURS", description: "Hours after a verified restore (at least 1)" } },
    async run(inv) {
      const v = inv.str("delete-after");
      if (v === undefined) throw new CliError("Cannot change the retention: give --delete-after HOURS");
      const a = await inv.api().patch<Association>(apiPath`/api/v1/associations/${inv.positionals[0]}`, { deleteAfterHours: integer(v, "--delete-after", 1, 365 * 24) });
      inv.out.result(a, () => inv.out.line(`Association ${a.id} keeps its state ${hours(a.deleteAfterSeconds)} after its restore${a.deleteAt ? ` (until ${a.deleteAt})` : ""}`));
    },
  },
  recover: {
    summary: "Recover an association's user state outside a run (Recovery Agent only; the reason is audited)",
    args: "ID",
    options: {
      output: { type: "string", value: "DIR", description: "An empty or new folder to write the files into (made 0700)" },
      reason: { type: "string", value: "TEXT", description: "Why you read this user's files (at least 10 characters; kept in the audit log)" },
    },
    notes: [
      "Needs the recovery.read permission, which only the built-in Recovery Agent role carries and only a",
      "Full Administrator assigns. Each use is audited with its reason before the key is released. Files are",
      "written owned by you (owners, ACLs and extended attributes are not applied); the archive's",
      ".slipway-user-state.json lists the users and paths it came from.",
    ].join("\n"),
    async run(inv) {
      const out = inv.str("output");
      const reason = inv.str("reason");
      if (!out) throw new CliError("Cannot recover: give --output DIR");
      if (!reason) throw new CliError("Cannot recover: give --reason TEXT (it is kept in the audit log)");
      const dir = path.resolve(out);
      if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new CliError(`Cannot recover into ${dir}: it is not a folder`);
      if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new CliError(`Cannot recover into ${dir}: it is not empty`);
      const api = inv.api();
      const g = await api.post<{ association: string; dataKey: string; chunks: number; files: number; source: string }>(
        apiPath`/api/v1/associations/${inv.positionals[0]}/recover`, { reason });
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.chmodSync(dir, 0o700);
      const chunks = async function* () {
        for (let i = 0; i < g.chunks; i++) yield await apiBytes(api.connection, apiPath`/api/v1/associations/${g.association}/chunks/${i}`);
      };
      // Owned by the caller, with the caller's umask and no set-user-id or set-group-id bits, even as root.
      const tar = spawn("tar", ["-x", "-f", "-", "-C", dir, "--no-same-owner", "--no-same-permissions", "--ignore-zeros"], { stdio: ["pipe", "ignore", "pipe"] });
      let stderr = "";
      tar.stderr.on("data", (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4096)));
      const exited = new Promise<number>((resolve) => tar.on("close", (code) => resolve(code ?? 1)));
      tar.stdin.on("error", () => {});
      try {
        for await (const piece of pipeline(Readable.from(openStream(chunks(), { dataKey: Buffer.from(g.dataKey, "base64"), associationId: g.association })), createZstdDecompress(), () => {})) {
          if (!tar.stdin.write(piece)) await Promise.race([once(tar.stdin, "drain"), exited]);
        }
        tar.stdin.end();
      } catch (err) {
        tar.kill("SIGKILL");
        await exited;
        throw new CliError(`Cannot recover association ${g.association}: ${(err as Error).message}; ${dir} may hold part of it`);
      }
      const code = await exited;
      if (code !== 0) throw new CliError(`Cannot recover association ${g.association}: tar exited ${code}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
      inv.out.result({ association: g.association, output: dir, files: g.files }, () =>
        inv.out.line(`Recovered ${g.files} files of "${g.source}" (association ${g.association}) into ${dir}; this read is in the audit log`));
    },
  },
  delete: {
    summary: "Delete an association: its key is destroyed at once, then its stored state",
    args: "ID",
    async run(inv) {
      const api = inv.api();
      await api.delete(apiPath`/api/v1/associations/${inv.positionals[0]}`);
      const a = await api.get<Association>(apiPath`/api/v1/associations/${inv.positionals[0]}`);
      inv.out.result(a, () => inv.out.line(`Deleted association ${a.id}: its key is destroyed${a.state === "gone" ? " and its stored state removed" : "; its stored state is being removed"}`));
    },
  },
});
