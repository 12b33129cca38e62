/** Reading and verifying the audit log over the API. */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { readHead, verifyAuditLog } from "../../../storage/audit-store.ts";
import { actor } from "./common.ts";

export function auditRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/audit", access: "audit.read", tag: "audit", summary: "Audit entries in order, after a sequence number",
      query: z.object({
        after: z.coerce.number().int().min(0).optional(), limit: z.coerce.number().int().min(1).max(1000).optional(),
        action: z.string().max(100).optional(), actor: z.string().max(200).optional(), outcome: z.enum(["success", "denied", "failure"]).optional(),
      }),
      handler: async (ctx) => {
        const q = ctx.query;
        return { body: await site.audit.list({ afterSeq: q.after, limit: q.limit, action: q.action, actor: q.actor, outcome: q.outcome }) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/audit/verify", access: "audit.read", tag: "audit",
      summary: "Verify the whole hash chain, signatures and signed head checkpoint; says how many entries it checked and names the first bad entry",
      handler: async (ctx) => {
        const r = await verifyAuditLog(site.db, site.keys.verifyKey, { head: readHead(site.dataDir) });
        await site.audit.append({ actor: actor(ctx), action: "audit.verify", outcome: r.ok ? "success" : "failure",
          details: r.ok ? { count: r.count, lastSeq: r.lastSeq, uncovered: r.uncovered } : { seq: r.seq, reason: r.reason, checked: r.checked } });
        return { body: r };
      },
    }),
  ];
}
