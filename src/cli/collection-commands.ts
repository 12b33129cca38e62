/** `slipway collection`: groups of devices, by static membership and by a rule over attributes. */
import { apiPath } from "./client.ts";
import { commandGroup } from "./command-group.ts";
import { requireChanges } from "./arguments.ts";

type Collection = {
  id: string; name: string; description: string; rule: string | null; memberCount: number;
  staticMembers?: string[]; createdAt: string; updatedAt: string;
};
type Member = { id: string; name: string; state: string; static: boolean };

const RULE_HELP = [
  'A rule is an expression over device fields, e.g. attributes.site == "berlin" and attributes.ram >= 8;',
  "devices matching it are members, besides the static members added with \"collection add\".",
].join("\n");

export const collectionCommand = commandGroup("collection", "Collections: groups of devices that deployments and scopes target", {
  list: {
    summary: "List collections with their member counts",
    async run(inv) {
      const rows = await inv.api().get<Collection[]>("/api/v1/collections");
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "NAME", value: (c) => c.name, max: 32 },
        { header: "MEMBERS", value: (c) => c.memberCount, align: "right" },
        { header: "RULE", value: (c) => c.rule ?? "", max: 48 },
        { header: "DESCRIPTION", value: (c) => c.description, max: 40 },
        { header: "ID", value: (c) => c.id },
      ], "No collections."));
    },
  },
  show: {
    summary: "Show one collection (by name or id)",
    args: "COLLECTION",
    async run(inv) {
      const api = inv.api();
      const c = await api.get<Collection>(apiPath`/api/v1/collections/${inv.positionals[0]}`);
      const members = inv.out.json ? [] : await api.get<Member[]>(apiPath`/api/v1/collections/${c.id}/members`);
      inv.out.result(c, () => inv.out.fields([
        ["Name", c.name], ["ID", c.id], ["Description", c.description], ["Rule", c.rule ?? "none"], ["Members", c.memberCount],
        ["Static members", members.filter((m) => m.static).map((m) => m.name)], ["Created", c.createdAt], ["Updated", c.updatedAt],
      ]));
    },
  },
  members: {
    summary: "List the devices in a collection (static members and rule matches)",
    args: "COLLECTION",
    async run(inv) {
      const rows = await inv.api().get<Member[]>(apiPath`/api/v1/collections/${inv.positionals[0]}/members`);
      inv.out.result(rows, () => inv.out.table(rows, [
        { header: "NAME", value: (m) => m.name, max: 32 },
        { header: "STATE", value: (m) => m.state },
        { header: "HOW", value: (m) => (m.static ? "static" : "rule") },
        { header: "ID", value: (m) => m.id },
      ], "No members."));
    },
  },
  create: {
    summary: "Create a collection",
    args: "NAME",
    options: {
      rule: { type: "string", value: "EXPR", description: "Membership rule" },
      description: { type: "string", value: "TEXT", description: "What the collection is for" },
    },
    notes: RULE_HELP,
    async run(inv) {
      const c = await inv.api().post<Collection>("/api/v1/collections", {
        name: inv.positionals[0], rule: inv.str("rule") || null, ...(inv.str("description") !== undefined ? { description: inv.str("description") } : {}),
      });
      inv.out.result(c, () => inv.out.line(`Created collection "${c.name}" (${c.memberCount} members), id ${c.id}`));
    },
  },
  update: {
    summary: "Rename a collection, or change its rule or description",
    args: "COLLECTION",
    options: {
      name: { type: "string", value: "NAME", description: "New name" },
      rule: { type: "string", value: "EXPR", description: 'New membership rule; --rule "" removes it' },
      description: { type: "string", value: "TEXT", description: "New description" },
    },
    notes: RULE_HELP,
    async run(inv) {
      const rule = inv.str("rule");
      const body = { name: inv.str("name"), description: inv.str("description"), rule: rule === undefined ? undefined : rule || null };
      requireChanges(body, "the collection");
      const c = await inv.api().patch<Collection>(apiPath`/api/v1/collections/${inv.positionals[0]}`, body);
      inv.out.result(c, () => inv.out.line(`Updated collection "${c.name}" (${c.memberCount} members)`));
    },
  },
  delete: {
    summary: "Delete a collection that no deployment targets",
    args: "COLLECTION",
    async run(inv) {
      await inv.api().delete(apiPath`/api/v1/collections/${inv.positionals[0]}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted collection "${inv.positionals[0]}"`));
    },
  },
  add: {
    summary: "Add devices to a collection as static members",
    args: "COLLECTION DEVICE...",
    async run(inv) {
      const [coll, ...devices] = inv.positionals;
      const api = inv.api();
      const out = [];
      for (const d of devices) out.push(await api.post(apiPath`/api/v1/collections/${coll}/members`, { device: d }));
      inv.out.result(out, () => inv.out.line(`Added ${devices.length} device${devices.length === 1 ? "" : "s"} to "${coll}"`));
    },
  },
  remove: {
    summary: "Remove static members from a collection",
    args: "COLLECTION DEVICE...",
    notes: "A device that matches the collection's rule stays a member; change the rule or the device's attributes.",
    async run(inv) {
      const [coll, ...devices] = inv.positionals;
      const api = inv.api();
      for (const d of devices) await api.delete(apiPath`/api/v1/collections/${coll}/members/${d}`);
      inv.out.result(undefined, () => inv.out.line(`Removed ${devices.length} device${devices.length === 1 ? "" : "s"} from "${coll}"`));
    },
  },
});
