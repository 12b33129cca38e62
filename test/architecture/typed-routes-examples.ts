/**
 * Route handlers that misuse what their route declares, each marked `@ts-expect-error`, and
 * the same reads done right. `tsc -p .` checks this file with the rest of the tree: if route
 * typing broke (a handler's ctx became `any` again), a marked line would compile and tsc
 * would fail on the unused directive. typed-routes.test.ts compiles it with the directives
 * removed and checks that each marked line, and only those, is an error.
 *
 * Not a test itself (no `.test.ts`): nothing here runs.
 */
import { z } from "zod";
import { route, type Route } from "../../src/roles/site/http.ts";
import { routeOf } from "../../src/roles/pipeline.ts";

const Body = z.strictObject({ name: z.string(), secret: z.boolean().default(false), size: z.coerce.number().optional() });
const Query = z.object({ bootPath: z.enum(["pxe", "media"]).default("pxe"), target: z.string().optional() });

export const examples: Route[] = [
  route({
    method: "POST", path: "/examples/:id", access: "variable.write", tag: "examples", summary: "Reads what it declares", body: Body, query: Query,
    handler: async (ctx) => {
      const name: string = ctx.body.name;
      // The schema's default applies: the output type has secret, not secret?.
      const secret: boolean = ctx.body.secret;
      const size: number | undefined = ctx.body.size;
      const bootPath: "pxe" | "media" = ctx.query.bootPath;
      const target: string | undefined = ctx.query.target;
      const id: string = ctx.params.id;
      // @ts-expect-error -- a body field its schema does not have
      const nope = ctx.body.nonexistent;
      // @ts-expect-error -- a query parameter its schema does not have
      const nope2 = ctx.query.nonexistent;
      // @ts-expect-error -- a path parameter its path does not have
      const nope3 = ctx.params.name;
      // @ts-expect-error -- the schema's type, not any: a string is not a number
      const wrong: number = ctx.body.name;
      // @ts-expect-error -- an optional field may be undefined
      const size2: number = ctx.body.size;
      // @ts-expect-error -- an enum is only its values
      const bootPath2: "http" = ctx.query.bootPath;
      return { body: { name, secret, size, bootPath, target, id, nope, nope2, nope3, wrong, size2, bootPath2 } };
    },
  }),
  route({
    method: "GET", path: "/examples/:id/parts/:part", access: "public", tag: "examples", summary: "No body, no query schema",
    handler: async (ctx) => {
      const id: string = ctx.params.id;
      const part: string = ctx.params.part;
      // Without a query schema the raw query string: every parameter a string, maybe absent.
      const raw: string | undefined = ctx.query.anything;
      // @ts-expect-error -- a raw query parameter may be absent
      const raw2: string = ctx.query.anything;
      // @ts-expect-error -- a route without a body schema has no body
      const nope = ctx.body.name;
      return { body: { id, part, raw, raw2, nope } };
    },
  }),
  route({
    method: "GET", path: "/examples", access: "site.read", tag: "examples", summary: "Declares a body it reads wrongly",
    body: z.strictObject({ count: z.int() }),
    // @ts-expect-error -- a handler whose ctx type contradicts the schema is refused
    handler: async (ctx: { body: { count: string } }) => ({ body: ctx.body.count }),
  }),
  route({
    method: "GET", path: "/examples/access", tag: "examples", summary: "An access that is not a permission",
    // @ts-expect-error -- access is a permission, "public" or "authenticated"
    access: "everything",
    handler: async () => ({}),
  }),
];

/** Another role's routes: its own access values and principal. */
type DevicePrincipal = { kind: "device"; deviceId: string };
const deviceRoute = routeOf<"device", DevicePrincipal>();
export const deviceExamples = [
  deviceRoute({
    method: "POST", path: "/mp/examples/:id/events", access: "device", tag: "examples", summary: "A device route",
    body: z.strictObject({ step: z.string(), state: z.enum(["started", "succeeded"]) }),
    handler: async (ctx) => {
      const who: string | undefined = ctx.principal?.deviceId;
      const state: "started" | "succeeded" = ctx.body.state;
      // @ts-expect-error -- a field of another route's body
      const exitCode: number = ctx.body.exitCode;
      // @ts-expect-error -- the principal is this role's, not an administrator
      const username: string = ctx.principal?.username;
      return { body: { who, state, exitCode, username } };
    },
  }),
];
