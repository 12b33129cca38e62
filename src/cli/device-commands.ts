/** `slipway device`: record, change, approve and block devices. */
import { CliError, ExitCode } from "./command.ts";
import { apiPath, namesById } from "./client.ts";
import { commandGroup, type Invocation, type Subcommand } from "./command-group.ts";
import { attributes, integer, oneOf, requireChanges } from "./arguments.ts";
import { deviceTpmSubcommand } from "./device-tpm-command.ts";

type Device = {
  id: string; name: string; macs: string[]; smbiosUuid: string | null; serial: string | null; state: string;
  attributes: Record<string, string | number | boolean>; lastSeenAt: string | null; createdAt: string; updatedAt: string;
  collections?: string[];
};

const STATES = ["pending", "approved", "blocked"] as const;
/** "" on the command line clears an optional identifier. */
const orNull = (v: string | undefined) => (v === undefined ? undefined : v === "" ? null : v);

async function showDevice(inv: Invocation, d: Device): Promise<void> {
  const names = d.collections?.length ? await namesById(inv.api(), "/api/v1/collections") : new Map<string, string>();
  inv.out.result(d, () => inv.out.fields([
    ["Name", d.name], ["ID", d.id], ["State", d.state], ["MACs", d.macs], ["SMBIOS UUID", d.smbiosUuid], ["Serial", d.serial],
    ["Attributes", d.attributes], ...(d.collections ? [["Collections", d.collections.map((c) => names.get(c) ?? c)] as const] : []),
    ["Last seen", d.lastSeenAt ?? "never"], ["Created", d.createdAt], ["Updated", d.updatedAt],
  ]));
}

const identity = {
  mac: { type: "string", multiple: true, value: "MAC", description: "A network card's MAC address" },
  uuid: { type: "string", value: "UUID", description: "SMBIOS UUID" },
  serial: { type: "string", value: "TEXT", description: "Serial number" },
  attr: { type: "string", multiple: true, value: "KEY=VALUE", description: "An attribute collection rules can test; true/false and plain numbers are typed" },
} as const;

const stateChange = (action: "approve" | "block" | "unapprove", summary: string): Subcommand => ({
  summary,
  args: "DEVICE",
  notes: "Needs the device.approve permission.",
  async run(inv) {
    const d = await inv.api().post<Device>(apiPath`/api/v1/devices/${inv.positionals[0]}/${action}`);
    inv.out.result(d, () => inv.out.line(`Device "${d.name}" is now ${d.state}`));
  },
});

const pendingFilter = {
  link: { type: "string", value: "NAME", description: "Only machines the PXE responder first saw on this link (network interface)" },
  since: { type: "string", value: "WHEN", description: "Only devices first recorded within this long (90s, 10m, 2h, 1d) or since an ISO time" },
} as const;

/** What an administrator checks before approving a machine: where and when it was first seen, and what it said it is. */
function pendingTable(inv: Invocation, rows: Device[], empty: string): void {
  const attr = (d: Device, k: string) => (d.attributes[k] === undefined ? null : String(d.attributes[k]));
  inv.out.table(rows, [
    { header: "NAME", value: (d) => d.name, max: 28 },
    { header: "LINK", value: (d) => attr(d, "firstSeenLink") },
    { header: "MAC", value: (d) => d.macs, max: 40 },
    { header: "SMBIOS UUID", value: (d) => d.smbiosUuid, max: 36 },
    { header: "VENDOR / MODEL", value: (d) => [attr(d, "vendor"), attr(d, "model")].filter(Boolean).join(" / ") || null, max: 30 },
    { header: "FIRMWARE", value: (d) => attr(d, "firmware") },
    // An EK FINGERPRINT column goes here once device records carry the TPM endorsement key.
    { header: "FIRST SEEN", value: (d) => d.createdAt },
    { header: "ID", value: (d) => d.id },
  ], empty);
}

/** `approve`/`block` of one DEVICE, or with --pending of every pending device a filter names. */
const decision = (action: "approve" | "block", summary: string): Subcommand => {
  const one = stateChange(action, summary);
  return {
    summary: `${summary}; with --pending, every pending device --link/--since name`,
    args: "[DEVICE]",
    options: {
      pending: { type: "boolean", description: `${action === "approve" ? "Approve" : "Block"} every pending device the filter names, in one transaction` },
      ...pendingFilter,
      all: { type: "boolean", description: "With --pending and no --link/--since: every pending device you may see" },
      ...(action === "approve" ? { collection: { type: "string", value: "NAME", description: "Also add them to this collection (needs collection.write)" } } as const : {}),
      expect: { type: "string", value: "N", description: "Refuse, changing nothing, unless exactly N devices match" },
      "dry-run": { type: "boolean", description: "Show what would be decided; change nothing" },
    },
    notes: [
      "Needs the device.approve permission. A scoped administrator decides only on devices in its scopes.",
      `Review first: slipway device pending --link lab0 --since 10m, then slipway device ${action} --pending --link lab0 --since 10m --expect 40.`,
      "Anyone on a PXE link can make a machine appear there: --expect refuses if more (or fewer) match than you counted.",
    ].join("\n"),
    async run(inv) {
      const bulk = inv.values.pending === true;
      const filterGiven = ["link", "since", "collection", "expect"].some((k) => inv.str(k) !== undefined) || inv.values.all === true || inv.values["dry-run"] === true;
      if (!bulk) {
        if (filterGiven) throw new CliError("--link, --since, --all, --collection, --expect and --dry-run go with --pending", ExitCode.USAGE);
        if (inv.positionals.length !== 1) throw new CliError(`Give the DEVICE to ${action}, or --pending with --link/--since`, ExitCode.USAGE);
        return one.run(inv);
      }
      if (inv.positionals.length) throw new CliError("Give either a DEVICE or --pending, not both", ExitCode.USAGE);
      const expect = inv.str("expect");
      const dryRun = inv.values["dry-run"] === true;
      const r = await inv.api().post<{ state: string; dryRun: boolean; devices: Device[] }>(`/api/v1/devices/${action}`, {
        link: inv.str("link"), since: inv.str("since"), ...(inv.values.all === true ? { all: true } : {}), collection: inv.str("collection"),
        ...(expect !== undefined ? { expect: integer(expect, "--expect", 0, 100_000) } : {}), dryRun,
      });
      inv.out.result(r, () => {
        if (!r.devices.length) return inv.out.line("No pending device matches.");
        pendingTable(inv, r.devices, "");
        const n = `${r.devices.length} pending device${r.devices.length === 1 ? "" : "s"}`;
        inv.out.line(dryRun ? `Would ${action} ${n} (dry run: nothing changed)` : `${action === "approve" ? "Approved" : "Blocked"} ${n}`);
      });
    },
  };
};

const deviceSubcommands: Record<string, Subcommand> = {
  list: {
    summary: "List devices",
    options: {
      state: { type: "string", value: "STATE", description: "Only devices in this state: pending, approved or blocked" },
      mac: { type: "string", value: "MAC", description: "Only the device with this MAC address" },
      name: { type: "string", value: "NAME", description: "Only the device with this exact name" },
    },
    async run(inv) {
      const state = inv.str("state");
      const rows = await inv.api().get<Device[]>("/api/v1/devices", { state: state && oneOf(state, STATES, "--state"), mac: inv.str("mac"), name: inv.str("name") });
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "NAME", value: (d) => d.name, max: 32 },
        { header: "STATE", value: (d) => d.state },
        { header: "MACS", value: (d) => d.macs, max: 40 },
        { header: "SERIAL", value: (d) => d.serial, max: 20 },
        { header: "LAST SEEN", value: (d) => d.lastSeenAt ?? "never" },
        { header: "ID", value: (d) => d.id },
      ], "No devices."));
    },
  },
  pending: {
    summary: "List pending devices with the link and time they were first seen, to approve or block them",
    options: pendingFilter,
    notes: "Then: slipway device approve --pending (same --link/--since), or one by one: slipway device approve DEVICE.",
    async run(inv) {
      const rows = await inv.api().get<Device[]>("/api/v1/devices", { state: "pending", link: inv.str("link"), since: inv.str("since") });
      inv.out.result(rows, () => pendingTable(inv, rows, "No pending devices."));
    },
  },
  show: {
    summary: "Show one device (by name or id) and the collections it is in",
    args: "DEVICE",
    async run(inv) {
      await showDevice(inv, await inv.api().get<Device>(apiPath`/api/v1/devices/${inv.positionals[0]}`));
    },
  },
  create: {
    summary: "Record a device (pending unless you may approve and give --state)",
    args: "[NAME]",
    options: {
      name: { type: "string", value: "NAME", description: "Device name (or give it as the argument)" },
      ...identity,
      collection: { type: "string", multiple: true, value: "COLLECTION", description: "Add it to this collection as a static member" },
      state: { type: "string", value: "STATE", description: "pending (default), approved or blocked; the latter need device.approve" },
    },
    async run(inv) {
      const name = inv.str("name") ?? inv.positionals[0];
      if (!name) throw new CliError("Give the device's name (--name NAME)", ExitCode.USAGE);
      if (inv.str("name") && inv.positionals[0]) throw new CliError("Give the name once: as the argument or with --name", ExitCode.USAGE);
      const state = inv.str("state");
      const d = await inv.api().post<Device>("/api/v1/devices", {
        name, macs: inv.list("mac"), smbiosUuid: orNull(inv.str("uuid")), serial: orNull(inv.str("serial")),
        attributes: attributes(inv.list("attr")), collections: inv.list("collection"), ...(state ? { state: oneOf(state, STATES, "--state") } : {}),
      });
      inv.out.result(d, () => inv.out.line(`Created device "${d.name}" (${d.state}), id ${d.id}`));
    },
  },
  update: {
    summary: "Change a device's name, identifiers or attributes",
    args: "DEVICE",
    options: {
      name: { type: "string", value: "NAME", description: "New name" },
      ...identity,
      "remove-attr": { type: "string", multiple: true, value: "KEY", description: "Remove an attribute" },
    },
    notes: [
      "--mac replaces the whole list of MAC addresses. --attr adds or replaces single attributes and",
      "keeps the others. An empty --uuid or --serial clears it. Changing the MACs or UUID of an",
      "approved or blocked device needs device.approve.",
    ].join("\n"),
    async run(inv) {
      const api = inv.api();
      const ref = inv.positionals[0];
      const add = inv.list("attr");
      const remove = inv.list("remove-attr");
      let attrs: Record<string, string | number | boolean> | undefined;
      if (add.length || remove.length) {
        // The API replaces the attribute set as a whole; merging here keeps the ones not named.
        const current = await api.get<Device>(apiPath`/api/v1/devices/${ref}`);
        attrs = { ...current.attributes, ...attributes(add) };
        for (const k of remove) {
          if (!Object.hasOwn(attrs, k)) throw new CliError(`Device "${current.name}" has no attribute "${k}"`, ExitCode.NOT_FOUND);
          delete attrs[k];
        }
      }
      const body = {
        name: inv.str("name"), macs: inv.list("mac").length ? inv.list("mac") : undefined,
        smbiosUuid: orNull(inv.str("uuid")), serial: orNull(inv.str("serial")), attributes: attrs,
      };
      requireChanges(body, "the device");
      const d = await api.patch<Device>(apiPath`/api/v1/devices/${ref}`, body);
      inv.out.result(d, () => inv.out.line(`Updated device "${d.name}"`));
    },
  },
  delete: {
    summary: "Delete a device and its device variables",
    args: "DEVICE",
    async run(inv) {
      await inv.api().delete(apiPath`/api/v1/devices/${inv.positionals[0]}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted device "${inv.positionals[0]}"`));
    },
  },
  approve: decision("approve", "Approve a device so it may be deployed"),
  block: decision("block", "Block a device: it gets nothing from the site"),
  unapprove: stateChange("unapprove", "Put a device back to pending"),
};

deviceSubcommands.policy = {
  summary: "Show what the device's policy holds now (deployments, resolved variables, secret names)",
  args: "DEVICE",
  options: { boot: { type: "string", value: "PATH", description: "Boot path: pxe (default) or media" } },
  async run(inv) {
    const p = await inv.api().get<{ deployments: { name: string; purpose: string; taskSequence: { name: string; version: number }; variables: Record<string, string>; secrets: string[] }[] }>(
      apiPath`/api/v1/devices/${inv.positionals[0]}/policy`, { bootPath: inv.str("boot") });
    inv.out.result(p, () => inv.out.table(p.deployments, [
      { header: "DEPLOYMENT", value: (d) => d.name, max: 30 },
      { header: "PURPOSE", value: (d) => d.purpose },
      { header: "TASK SEQUENCE", value: (d) => `${d.taskSequence.name} v${d.taskSequence.version}`, max: 36 },
      { header: "VARIABLES", value: (d) => Object.entries(d.variables).map(([k, v]) => `${k}=${v}`).join(" "), max: 50 },
      { header: "SECRETS", value: (d) => d.secrets.join(" "), max: 30 },
    ], "No deployment applies to this device."));
  },
};

deviceSubcommands.tpm = deviceTpmSubcommand;

// `device add` is the name the network-boot documentation uses; it is `create` by another name.
deviceSubcommands.add = { ...deviceSubcommands.create, summary: "Same as create: record a device by MAC/UUID and name" };

export const deviceCommand = commandGroup("device", "Devices: the machines Slipway may deploy (new ones are pending until approved)", deviceSubcommands);

