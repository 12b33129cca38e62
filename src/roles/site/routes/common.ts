/** Shared pieces of the route modules: schemas for ids and names, and the audit actor. */
import { z } from "zod";
import type { Principal, RequestContext } from "../http.ts";
import { SlipwayError } from "../../../errors.ts";

/**
 * Characters a name may not hold, each class with the message that names it. Invisible and
 * direction-changing characters let two names look alike, or a name read differently on
 * screen than it is stored (a device "pc-1\u202Egpj.exe"), so they are refused, not stripped.
 * Checked before trimming, so a leading or trailing one is refused too.
 */
const forbiddenInNames: readonly { test: (s: string) => boolean; message: string }[] = [
  { test: (s) => /[\u0000-\u001f\u007f-\u009f]/.test(s), message: "must not contain control characters (U+0000–U+001F, U+007F–U+009F)" },
  { test: (s) => /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(s),
    message: "must not contain bidirectional control characters (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C)" },
  { test: (s) => /[\u200b-\u200d\u2060\ufeff]/.test(s), message: "must not contain zero-width characters (U+200B–U+200D, U+2060, U+FEFF)" },
  { test: (s) => /[\u2028\u2029]/.test(s), message: "must not contain line or paragraph separators (U+2028, U+2029)" },
  { test: (s) => !s.isWellFormed(), message: "must not contain unpaired surrogates (malformed UTF-16)" },
];

/** The first rule a name breaks, or null; shared by every schema that takes a display name. */
export function nameProblem(s: string): string | null {
  return forbiddenInNames.find((f) => f.test(s))?.message ?? null;
}

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
  return ctx.principal ? `admin:${ctx.principal.username}` : "anonymous";
}

export function principal(ctx: RequestContext): Principal {
  if (!ctx.principal) throw new SlipwayError("UNAUTHENTICATED");
  return ctx.principal;
}

export function notFound(what: string, id: string): SlipwayError {
  return new SlipwayError("NOT_FOUND", `Cannot find ${what} "${id}"`);
}
