/**
 * `slipway variable`: variables at site, collection and device scope. A secret value goes
 * in from standard input or a hidden prompt and is never printed: the API does not return
 * it, and this command never echoes what it sent.
 */
import { CliError, ExitCode } from "./command.ts";
import { apiPath, namesById, type Api } from "./client.ts";
import { commandGroup, type Invocation } from "./command-group.ts";
import { oneOf } from "./arguments.ts";
import { canPrompt, promptNewSecret, stdinValue } from "./secret-input.ts";

type Variable = {
  id: string; scope: "site" | "collection" | "device"; target: string | null; name: string; secret: boolean;
  isSet?: boolean; value?: string; updatedAt: string; createdAt: string;
};

const SCOPES = ["site", "collection", "device"] as const;

const scopeOptions = {
  scope: { type: "string", value: "SCOPE", description: "site (default), collection or device" },
  target: { type: "string", value: "NAME", description: "The collection or device (name or id) for those scopes" },
} as const;

function scopeOf(inv: Invocation): { scope: (typeof SCOPES)[number]; target: string | undefined } {
  const scope = oneOf(inv.str("scope") ?? "site", SCOPES, "--scope");
  const target = inv.str("target");
  if (scope === "site" && target) throw new CliError("A site variable takes no --target", ExitCode.USAGE);
  if (scope !== "site" && !target) throw new CliError(`A ${scope} variable needs --target (the ${scope}'s name or id)`, ExitCode.USAGE);
  return { scope, target };
}

async function targetNames(api: Api, rows: Variable[]): Promise<(v: Variable) => string> {
  const devices = rows.some((v) => v.scope === "device") ? await namesById(api, "/api/v1/devices") : new Map<string, string>();
  const collections = rows.some((v) => v.scope === "collection") ? await namesById(api, "/api/v1/collections") : new Map<string, string>();
  return (v) => (v.target === null ? "" : (v.scope === "device" ? devices : collections).get(v.target) ?? v.target);
}

/** What a table shows for a value: never a secret's, which the API does not send anyway. */
const shownValue = (v: Variable) => (v.secret ? (v.isSet ? "(secret, set)" : "(secret, not set)") : v.value ?? "");

export const variableCommand = commandGroup("variable", "Variables task sequences read, at site, collection and device scope", {
  list: {
    summary: "List variables; secret ones show only that they are set",
    options: {
      scope: { type: "string", value: "SCOPE", description: "Only this scope: site, collection or device" },
      target: { type: "string", value: "NAME", description: "Only this collection or device (with --scope)" },
    },
    async run(inv) {
      const scope = inv.str("scope");
      if (inv.str("target") && !scope) throw new CliError("--target needs --scope collection or --scope device", ExitCode.USAGE);
      const api = inv.api();
      const rows = await api.get<Variable[]>("/api/v1/variables", { scope: scope && oneOf(scope, SCOPES, "--scope"), target: inv.str("target") });
      if (inv.out.json) return inv.out.result(rows, () => {});
      const target = await targetNames(api, rows);
      inv.out.table(rows, [
        { header: "NAME", value: (v) => v.name, max: 40 },
        { header: "SCOPE", value: (v) => v.scope },
        { header: "TARGET", value: target, max: 32 },
        { header: "VALUE", value: shownValue, max: 48 },
        { header: "UPDATED", value: (v) => v.updatedAt },
        { header: "ID", value: (v) => v.id },
      ], "No variables.");
    },
  },
  set: {
    summary: "Create or replace a variable",
    args: "NAME",
    options: {
      value: { type: "string", value: "VALUE", description: "The value (avoid for secrets: command lines leak)" },
      "value-stdin": { type: "boolean", description: "Read the value from standard input (one final line break is dropped)" },
      secret: { type: "boolean", description: "Store it sealed; it can be replaced or deleted but never read back" },
      ...scopeOptions,
    },
    notes: [
      "For --secret without --value or --value-stdin, the value is asked for twice at a hidden prompt.",
      "Examples:",
      "  slipway variable set TimeZone --value Europe/Berlin",
      "  printf %s \"$PW\" | slipway variable set DomainJoinPassword --secret --value-stdin",
      "  slipway variable set Ring --value pilot --scope collection --target berlin-laptops",
    ].join("\n"),
    async run(inv) {
      const name = inv.positionals[0];
      const secret = inv.values.secret === true;
      const { scope, target } = scopeOf(inv);
      const given = inv.str("value");
      const fromStdin = inv.values["value-stdin"] === true;
      if (given !== undefined && fromStdin) throw new CliError("Give the value once: --value or --value-stdin", ExitCode.USAGE);
      let value: string;
      if (fromStdin) value = await stdinValue();
      else if (given !== undefined) {
        value = given;
        if (secret) process.stderr.write("slipway: warning: a secret given with --value can show in ps and shell history; prefer --value-stdin\n");
      } else if (secret) {
        if (!canPrompt()) throw new CliError("No value: give --value-stdin (or run in a terminal to be asked)", ExitCode.USAGE);
        value = await promptNewSecret(`Value of secret ${name}: `);
      } else throw new CliError("No value: give --value VALUE or --value-stdin", ExitCode.USAGE);
      const v = await inv.api().post<Variable>("/api/v1/variables", { scope, ...(target ? { target } : {}), name, value, secret });
      inv.out.result(v, () => inv.out.line(`Set ${v.secret ? "secret " : ""}variable ${v.name} at ${scope} scope${target ? ` for ${target}` : ""}`));
    },
  },
  delete: {
    summary: "Delete a variable (by name in its scope, or by id); a secret's sealed value is destroyed",
    args: "NAME",
    options: scopeOptions,
    async run(inv) {
      const ref = inv.positionals[0];
      const { scope, target } = scopeOf(inv);
      const api = inv.api();
      const rows = await api.get<Variable[]>("/api/v1/variables", { scope, target });
      // The API addresses variables by id only; a name is looked up in the given scope.
      const v = rows.find((x) => x.name === ref);
      await api.delete(apiPath`/api/v1/variables/${v ? v.id : ref}`);
      inv.out.result(undefined, () => inv.out.line(`Deleted variable ${v ? v.name : ref}`));
    },
  },
});
