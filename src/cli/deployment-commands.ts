/** `slipway deployment`: a pinned task sequence version offered or required on a collection. */
import { CliError, ExitCode } from "./command.ts";
import { apiPath, namesById, type Api } from "./client.ts";
import { commandGroup, type Invocation } from "./command-group.ts";
import { isoTime, oneOf, requireChanges, version } from "./arguments.ts";

type Deployment = {
  id: string; name: string; taskSequenceId: string; taskSequenceVersion: number; collectionId: string;
  purpose: "available" | "required"; bootPaths: string[]; availableFrom: string | null; availableUntil: string | null;
  enabled: boolean; createdAt: string; updatedAt: string; minimumAssurance?: string | null; allowSniffableEnrollment?: boolean;
};

const PURPOSES = ["available", "required"] as const;
const BOOT_PATHS = ["pxe", "media"] as const;
const LEVELS = ["sniffable", "password", "approved", "media", "tpm"] as const;

/**
 * The API addresses deployments by id only (devices, collections and task sequences also
 * by name), so a name is looked up in the list.
 */
async function findDeployment(api: Api, ref: string): Promise<Deployment> {
  const all = await api.get<Deployment[]>("/api/v1/deployments");
  const d = all.find((x) => x.id === ref) ?? all.find((x) => x.name === ref);
  if (!d) throw new CliError(`Cannot find deployment "${ref}"`, ExitCode.NOT_FOUND);
  return d;
}

function windowText(d: Deployment): string {
  if (!d.availableFrom && !d.availableUntil) return "always";
  return `${d.availableFrom ?? "…"} – ${d.availableUntil ?? "…"}`;
}

const settings = {
  version: { type: "string", value: "N", description: 'Task sequence version to pin, or "latest" (resolved now, then pinned)' },
  collection: { type: "string", value: "COLLECTION", description: "The collection to target (name or id)" },
  purpose: { type: "string", value: "PURPOSE", description: "available (the default: offered) or required (runs unattended)" },
  boot: { type: "string", multiple: true, value: "PATH", description: "Boot path it is offered on: pxe, media (default both)" },
  from: { type: "string", value: "TIME", description: 'Start of the window, e.g. 2026-03-01T18:00:00Z ("" for none)' },
  until: { type: "string", value: "TIME", description: 'End of the window ("" for none)' },
  "minimum-assurance": { type: "string", value: "LEVEL", description: 'Least enrollment assurance a machine needs: sniffable, password, approved, media, tpm ("" for the default: password when the task sequence uses secrets)' },
  "allow-sniffable-enrollment": { type: "boolean", description: "Open it to machines that proved only their MAC and UUID (refused when the task sequence uses secrets; audited)" },
} as const;

function settingsBody(inv: Invocation) {
  const v = inv.str("version");
  const purpose = inv.str("purpose");
  const boot = inv.list("boot");
  const from = inv.str("from");
  const until = inv.str("until");
  const minimum = inv.str("minimum-assurance");
  return {
    minimumAssurance: minimum === undefined ? undefined : minimum === "" ? null : oneOf(minimum, LEVELS, "--minimum-assurance"),
    allowSniffableEnrollment: inv.values["allow-sniffable-enrollment"] === true ? true : inv.values["disallow-sniffable-enrollment"] === true ? false : undefined,
    version: v === undefined ? undefined : version(v),
    collection: inv.str("collection"),
    purpose: purpose === undefined ? undefined : oneOf(purpose, PURPOSES, "--purpose"),
    bootPaths: boot.length ? boot.map((b) => oneOf(b, BOOT_PATHS, "--boot")) : undefined,
    availableFrom: from === undefined ? undefined : isoTime(from, "--from"),
    availableUntil: until === undefined ? undefined : isoTime(until, "--until"),
  };
}

export const deploymentCommand = commandGroup("deployment", "Deployments: a task sequence version targeted at a collection", {
  list: {
    summary: "List deployments",
    async run(inv) {
      const api = inv.api();
      const rows = await api.get<Deployment[]>("/api/v1/deployments");
      if (inv.out.json) return inv.out.result(rows, () => {});
      const [ts, colls] = rows.length
        ? await Promise.all([namesById(api, "/api/v1/task-sequences"), namesById(api, "/api/v1/collections")])
        : [new Map<string, string>(), new Map<string, string>()];
      inv.out.table(rows, [
        { header: "NAME", value: (d) => d.name, max: 32 },
        { header: "TASK SEQUENCE", value: (d) => `${ts.get(d.taskSequenceId) ?? d.taskSequenceId} v${d.taskSequenceVersion}`, max: 40 },
        { header: "COLLECTION", value: (d) => colls.get(d.collectionId) ?? d.collectionId, max: 32 },
        { header: "PURPOSE", value: (d) => d.purpose },
        { header: "BOOT", value: (d) => d.bootPaths },
        { header: "ENABLED", value: (d) => (d.enabled ? "yes" : "no") },
        { header: "WINDOW", value: windowText, max: 50 },
        { header: "ID", value: (d) => d.id },
      ], "No deployments.");
    },
  },
  show: {
    summary: "Show one deployment (by name or id)",
    args: "DEPLOYMENT",
    async run(inv) {
      const api = inv.api();
      const d = await findDeployment(api, inv.positionals[0]);
      if (inv.out.json) return inv.out.result(d, () => {});
      const [ts, colls] = await Promise.all([namesById(api, "/api/v1/task-sequences"), namesById(api, "/api/v1/collections")]);
      inv.out.fields([
        ["Name", d.name], ["ID", d.id], ["Task sequence", ts.get(d.taskSequenceId) ?? d.taskSequenceId], ["Version", d.taskSequenceVersion],
        ["Collection", colls.get(d.collectionId) ?? d.collectionId], ["Purpose", d.purpose], ["Boot paths", d.bootPaths],
        ["Window", windowText(d)], ["Enabled", d.enabled ? "yes" : "no"],
        ["Minimum assurance", d.minimumAssurance ?? "default"], ["Sniffable enrollment", d.allowSniffableEnrollment ? "allowed (opted in)" : "no"],
        ["Created", d.createdAt], ["Updated", d.updatedAt],
      ]);
    },
  },
  create: {
    summary: "Deploy a task sequence version to a collection",
    args: "NAME",
    options: {
      ts: { type: "string", value: "TS", description: "The task sequence (name or id; required)" },
      ...settings,
      disabled: { type: "boolean", description: "Create it switched off" },
    },
    notes: "Example: slipway deployment create berlin-rollout --ts debian-12 --collection berlin-laptops --purpose required",
    async run(inv) {
      const taskSequence = inv.str("ts");
      const body = settingsBody(inv);
      if (!taskSequence || !body.collection) throw new CliError("--ts and --collection are required", ExitCode.USAGE);
      const d = await inv.api().post<Deployment>("/api/v1/deployments", {
        name: inv.positionals[0], taskSequence, ...body, ...(inv.values.disabled ? { enabled: false } : {}),
      });
      inv.out.result(d, () => inv.out.line(`Created deployment "${d.name}" (version ${d.taskSequenceVersion}, ${d.purpose}${d.enabled ? "" : ", disabled"}), id ${d.id}`));
    },
  },
  update: {
    summary: "Change a deployment's version, target, purpose, boot paths, window or switch it on or off",
    args: "DEPLOYMENT",
    options: {
      name: { type: "string", value: "NAME", description: "New name" },
      ...settings,
      "disallow-sniffable-enrollment": { type: "boolean", description: "Close it again to sniffable enrollments" },
      enable: { type: "boolean", description: "Switch it on" },
      disable: { type: "boolean", description: "Switch it off" },
    },
    async run(inv) {
      if (inv.values.enable && inv.values.disable) throw new CliError("Give --enable or --disable, not both", ExitCode.USAGE);
      if (inv.values["allow-sniffable-enrollment"] && inv.values["disallow-sniffable-enrollment"]) {
        throw new CliError("Give --allow-sniffable-enrollment or --disallow-sniffable-enrollment, not both", ExitCode.USAGE);
      }
      const body = {
        name: inv.str("name"), ...settingsBody(inv),
        enabled: inv.values.enable ? true : inv.values.disable ? false : undefined,
      };
      requireChanges(body, "the deployment");
      const api = inv.api();
      const current = await findDeployment(api, inv.positionals[0]);
      const d = await api.patch<Deployment>(apiPath`/api/v1/deployments/${current.id}`, body);
      inv.out.result(d, () => inv.out.line(`Updated deployment "${d.name}"`));
    },
  },
  delete: {
    summary: "Delete a deployment",
    args: "DEPLOYMENT",
    async run(inv) {
      const api = inv.api();
      const d = await findDeployment(api, inv.positionals[0]);
      await api.delete(apiPath`/api/v1/deployments/${d.id}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted deployment "${d.name}"`));
    },
  },
});
