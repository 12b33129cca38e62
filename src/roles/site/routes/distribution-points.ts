/**
 * Distribution points as administrators manage them (`/api/v1/distribution-points`):
 * registering one (which mints its one-time enrollment secret, shown once), a new secret to
 * enroll it again, removing it (its certificates are revoked), and assigning content to it —
 * with the replication state it reports. All of it is dp.write (the Infrastructure
 * Administrator's); reading is dp.read. A distribution point's URL and aliases are set only
 * here, at registration, and never to a loopback name, the site's names or another
 * distribution point's (dp-names.ts); enrollment checks them again. The rules and transactions
 * are in the service (src/site/services/distribution-points.ts); these handlers parse, call it,
 * and answer.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { isDistributionPointName } from "../../../domain/distribution-point.ts";
import {
  assignContent, getDistributionPoint, listDistributionPoints, newEnrollmentSecret, registerDistributionPoint, removeDistributionPoint, unassignContent,
} from "../../../site/services/distribution-points.ts";
import { principal } from "./common.ts";

const DpName = z.string().refine(isDistributionPointName, "must be 1-64 letters, digits, . _ - (starting with a letter or digit)");

export function distributionPointRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/distribution-points", access: "dp.read", tag: "distribution-points",
      summary: "Registered distribution points, whether they enrolled, when they were last seen, and how much of their content is ready",
      handler: async () => ({ body: await listDistributionPoints(site) }),
    }),
    route({
      method: "POST", path: "/api/v1/distribution-points", access: "dp.write", tag: "distribution-points",
      summary: "Register a distribution point by the https URL devices reach it at; returns its one-time enrollment secret (24 hours), shown once",
      body: z.strictObject({ name: DpName, url: z.string().max(300), aliases: z.array(z.string().max(253)).max(15).default([]) }),
      handler: async (ctx) => ({ status: 201, body: await registerDistributionPoint(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "GET", path: "/api/v1/distribution-points/:id", access: "dp.read", tag: "distribution-points",
      summary: "A distribution point (by id or name) with each assigned manifest's replication state and its certificates",
      handler: async (ctx) => ({ body: await getDistributionPoint(site, ctx.params.id) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/distribution-points/:id", access: "dp.write", tag: "distribution-points",
      summary: "Remove a distribution point: its certificates are revoked (listed in the CRL) and policies stop naming it",
      handler: async (ctx) => {
        await removeDistributionPoint(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
    route({
      method: "POST", path: "/api/v1/distribution-points/:id/secret", access: "dp.write", tag: "distribution-points",
      summary: "A new one-time enrollment secret (24 hours), e.g. after the distribution point lost its keys; enrolling with it revokes its earlier certificates",
      handler: async (ctx) => ({ status: 201, body: await newEnrollmentSecret(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "POST", path: "/api/v1/distribution-points/:id/content", access: "dp.write", tag: "distribution-points",
      summary: "Assign an image (its newest manifest by name, or a manifest by digest) to a distribution point to replicate",
      body: z.strictObject({ image: z.string().min(1).max(200) }),
      handler: async (ctx) => {
        const { added, assignment } = await assignContent(site, principal(ctx), ctx.params.id, ctx.body.image);
        return { status: added ? 201 : 200, body: assignment };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/distribution-points/:id/content/:image", access: "dp.write", tag: "distribution-points",
      summary: "Unassign content: a manifest by digest, or every assigned manifest of an image name; the distribution point deletes it at its next poll",
      handler: async (ctx) => {
        await unassignContent(site, principal(ctx), ctx.params.id, ctx.params.image);
        return {};
      },
    }),
  ];
}
