/** Shared pieces of the route modules: schemas for ids and names, and the audit actor. */
import { z } from "zod";
import type { Principal, RequestContext } from "../http.ts";
import { SlipwayError } from "../../../errors.ts";
import { nameProblem } from "../../../domain/name.ts";
import { adminActor, notFound } from "../../../site/services/common.ts";

/** A display name: no hidden or direction-changing characters (domain/name.ts), checked before trimming. */
export const Name = z.string()
  .superRefine((s, c) => {
    const problem = nameProblem(s);
    if (problem) c.addIssue({ code: "custom", message: problem });
  })
  .trim().min(1).max(200);
export const Description = z.string().max(2000);
export const Id = z.string().min(1).max(200);
export const IsoTime = z.iso.datetime({ offset: true });
export const VariableName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.]{0,127}$/, "must start with a letter or _ and hold only letters, digits, _ and .");

export function actor(ctx: RequestContext): string {
  return ctx.principal ? adminActor(ctx.principal) : "anonymous";
}

export function principal(ctx: RequestContext): Principal {
  if (!ctx.principal) throw new SlipwayError("UNAUTHENTICATED");
  return ctx.principal;
}

export { notFound };
