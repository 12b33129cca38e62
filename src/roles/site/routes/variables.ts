/**
 * Variables at site, collection and device scope. Secret values go in and never come
 * out: each is sealed with its own data key under the master key, and every read shows
 * only that it is set and when. The rules, sealing and transactions are in the variables
 * service (src/site/services/variables.ts); these handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import type { VariableRecord } from "../../../storage/variable-store.ts";
import { deleteVariable, getVariable, listVariables, setVariable } from "../../../site/services/variables.ts";
import { principal, VariableName } from "./common.ts";

export const MAX_VARIABLE_BYTES = 64 * 1024;

/** What the API shows of a variable; a secret's value and envelope are never included. */
export function variableView(v: VariableRecord) {
  return v.secret
    ? { id: v.id, scope: v.scope, target: v.scopeId || null, name: v.name, secret: true, isSet: v.sealed !== null, updatedAt: v.updatedAt, createdAt: v.createdAt }
    : { id: v.id, scope: v.scope, target: v.scopeId || null, name: v.name, secret: false, value: v.value, updatedAt: v.updatedAt, createdAt: v.createdAt };
}

export function variableRoutes(site: Site): Route[] {
  const Scope = z.enum(["site", "collection", "device"]);
  return [
    route({
      method: "GET", path: "/api/v1/variables", access: "variable.read", tag: "variables", summary: "List variables; secret ones show only that they are set",
      query: z.object({ scope: Scope.optional(), target: z.string().max(200).optional() }),
      handler: async (ctx) => ({ body: (await listVariables(site, principal(ctx), ctx.query)).map(variableView) }),
    }),
    route({
      method: "GET", path: "/api/v1/variables/:id", access: "variable.read", tag: "variables", summary: "One variable (never a secret's value)",
      handler: async (ctx) => ({ body: variableView(await getVariable(site, principal(ctx), ctx.params.id)) }),
    }),
    route({
      method: "POST", path: "/api/v1/variables", access: "variable.write", tag: "variables",
      summary: "Set a variable (creates or replaces); with secret: true the value is write-only",
      body: z.strictObject({
        scope: Scope, target: z.string().min(1).max(200).optional(), name: VariableName,
        value: z.string().refine((s) => Buffer.byteLength(s) <= MAX_VARIABLE_BYTES, `at most ${MAX_VARIABLE_BYTES} bytes`),
        secret: z.boolean().default(false),
      }),
      handler: async (ctx) => {
        const { variable, created } = await setVariable(site, principal(ctx), ctx.body);
        return { status: created ? 201 : 200, body: variableView(variable) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/variables/:id", access: "variable.write", tag: "variables", summary: "Delete a variable (a secret's envelope is destroyed with it)",
      handler: async (ctx) => {
        await deleteVariable(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
  ];
}
