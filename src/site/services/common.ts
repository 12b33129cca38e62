/** What every service shares: how an administrator is named in the audit log, and "not found". */
import type { Principal } from "../principal.ts";
import { SlipwayError } from "../../errors.ts";

/** The audit actor for an administrator (as the route layer's actor(ctx) names them). */
export const adminActor = (p: Principal): string => `admin:${p.username}`;

/** NOT_FOUND for something missing or outside the administrator's scopes (the two read the same). */
export const notFound = (what: string, id: string): SlipwayError => new SlipwayError("NOT_FOUND", `Cannot find ${what} "${id}"`);
