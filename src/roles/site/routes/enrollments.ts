/**
 * Enrollment approval. A machine that enrolled with only a boot token (`sniffable`: its MAC
 * and UUID are broadcast, anyone on its link could have done the same) gets no secret; its
 * agent waits. An administrator who has checked the machines (where and when they enrolled,
 * their MACs, UUIDs and the TPM endorsement key they proved) approves their enrollments:
 *
 *   GET  /api/v1/enrollments/pending?link=&since=    live sniffable enrollments awaiting approval
 *   POST /api/v1/enrollments/approve                 { serials? | link?, since?, all?, expect?, dryRun? }
 *
 * A filter (link, since, all) approves less than a serial does: contested and pre-approval
 * enrollments only by serial. The rules and the transaction are in the enrollments service
 * (src/site/services/enrollments.ts); these handlers parse, call it, and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { approveEnrollments, pendingEnrollments } from "../../../site/services/enrollments.ts";
import { principal } from "./common.ts";

const Link = z.string().min(1).max(64).regex(/^[A-Za-z0-9_.:@-]+$/, "an interface name");
const Since = z.string().min(2).max(64);
const Serial = z.string().regex(/^[0-9a-fA-F]{2,64}$/, "a certificate serial (hex)");

const ApproveBody = z.strictObject({
  serials: z.array(Serial).min(1).max(1000).optional(),
  link: Link.optional(),
  since: Since.optional(),
  all: z.boolean().optional(),
  expect: z.int().min(0).max(100_000).optional(),
  dryRun: z.boolean().optional(),
});

export function enrollmentRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/enrollments/pending", access: "device.read", tag: "devices",
      summary: "Live sniffable enrollments awaiting an administrator's approval (link first seen on, MACs, UUID, the TPM endorsement key proven, when)",
      query: z.strictObject({ link: Link.optional(), since: Since.optional() }),
      handler: async (ctx) => ({ body: await pendingEnrollments(site, principal(ctx), ctx.query) }),
    }),
    route({
      method: "POST", path: "/api/v1/enrollments/approve", access: "device.approve", tag: "devices", body: ApproveBody,
      summary: "Approve, in one transaction, the live sniffable enrollments named (serials) or matching a filter (link, since) within your scopes: they become `approved` and get their secrets",
      handler: async (ctx) => ({ body: await approveEnrollments(site, principal(ctx), ctx.body) }),
    }),
  ];
}
