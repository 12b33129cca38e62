/** `slipway device`: record, change, approve and block devices. */
import { CliError, ExitCode } from "./command.ts";
import { apiPath, namesById } from "./client.ts";
import { commandGroup, type Invocation, type Subcommand } from "./command-group.ts";
import { attributes, oneOf, requireChanges } from "./arguments.ts";

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
  approve: stateChange("approve", "Approve a device so it may be deployed"),
  block: stateChange("block", "Block a device: it gets nothing from the site"),
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

// `device add` is the name the network-boot documentation uses; it is `create` by another name.
deviceSubcommands.add = { ...deviceSubcommands.create, summary: "Same as create: record a device by MAC/UUID and name" };

export const deviceCommand = commandGroup("device", "Devices: the machines Slipway may deploy (new ones are pending until approved)", deviceSubcommands);

