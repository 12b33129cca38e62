/** The OpenAPI 3.1 document, generated from the route table so it cannot drift from it. */
import { z } from "zod";
import type { Route } from "./http.ts";
import { ErrorCodes } from "../../errors.ts";

function schemaOf(t: z.ZodType, io: "input" | "output" = "input"): unknown {
  try {
    const s = z.toJSONSchema(t, { io, unrepresentable: "any" }) as Record<string, unknown>;
    delete s.$schema;
    return s;
  } catch {
    return {};
  }
}

export function openApiDocument(routes: readonly Route[], version: string): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const p = r.path.replace(/:([A-Za-z]+)/g, "{$1}");
    const params = [...r.path.matchAll(/:([A-Za-z]+)/g)].map((m) => ({ name: m[1], in: "path", required: true, schema: { type: "string" } }));
    if (r.query) {
      const qs = schemaOf(r.query) as { properties?: Record<string, unknown> };
      for (const [name, schema] of Object.entries(qs.properties ?? {})) params.push({ name, in: "query", required: false, schema: schema as { type: string } });
    }
    paths[p] ??= {};
    paths[p][r.method.toLowerCase()] = {
      summary: r.summary,
      tags: [r.tag],
      operationId: `${r.method.toLowerCase()}${p.replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? "").toUpperCase())}`,
      "x-slipway-permission": r.access,
      ...(r.access === "public" ? { security: [] } : {}),
      ...(params.length ? { parameters: params } : {}),
      ...(r.body ? { requestBody: { required: true, content: { "application/json": { schema: schemaOf(r.body) } } } } : {}),
      ...(r.bytes ? { requestBody: { required: true, content: { "application/octet-stream": { schema: { type: "string", format: "binary", maxLength: r.bytes.maxBytes } } } } } : {}),
      responses: {
        "200": { description: "Success" },
        default: { description: "Error", content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } },
      },
    };
  }
  return {
    openapi: "3.1.0",
    info: { title: "Slipway site API", version, description: "Every operation names the permission it needs in x-slipway-permission." },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "A session token from POST /api/v1/sessions or an API token" } },
      schemas: {
        Error: {
          type: "object", required: ["code", "message", "details"],
          properties: {
            code: { type: "string", enum: Object.keys(ErrorCodes).map((c) => `SLIPWAY_${c}`) },
            message: { type: "string" }, details: {},
          },
        },
      },
    },
  };
}
