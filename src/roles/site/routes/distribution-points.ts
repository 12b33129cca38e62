/**
 * Distribution points as administrators manage them (`/api/v1/distribution-points`):
 * registering one (which mints its one-time enrollment secret, shown once), a new secret to
 * enroll it again, removing it (its certificates are revoked), and assigning content to it —
 * with the replication state it reports. All of it is dp.write (the Infrastructure
 * Administrator's); reading is dp.read. A distribution point's URL and aliases are set only
 * here, at registration, and never to a loopback name, the site's names or another
 * distribution point's (dp-names.ts); enrollment checks them again.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import type { Assignment, DistributionPoint } from "../../../storage/distribution-point-store.ts";
import type { CertificateRecord } from "../../../storage/certificate-store.ts";
import { SlipwayError } from "../../../errors.ts";
import { isDistributionPointName, normalizeHostName, parseDistributionPointUrl } from "../../../domain/distribution-point.ts";
import { newDpSecret } from "../../../site/dp-enroll.ts";
import { refusedHostName, refuseHostName } from "../../../site/dp-names.ts";
import { findImage } from "../../../site/content-library.ts";
import { actor, notFound } from "./common.ts";

const DpName = z.string().refine(isDistributionPointName, "must be 1-64 letters, digits, . _ - (starting with a letter or digit)");

const view = (d: DistributionPoint, assignments: Assignment[], now: string) => ({
  id: d.id, name: d.name, url: d.url, hostNames: d.hostNames,
  status: d.enrolledAt ? "enrolled" : d.secretExpiresAt && d.secretExpiresAt > now ? "awaiting enrollment" : "secret expired",
  enrolledAt: d.enrolledAt, lastSeenAt: d.lastSeenAt, secretExpiresAt: d.secretExpiresAt,
  content: {
    assigned: assignments.length,
    ready: assignments.filter((a) => a.state === "ready").length,
    failed: assignments.filter((a) => a.state === "failed").length,
  },
  createdBy: d.createdBy, createdAt: d.createdAt,
});

const certView = (c: CertificateRecord) => ({ serial: c.serial, kind: c.kind, subject: c.subject, status: c.status, notBefore: c.notBefore, expires: c.notAfter, lastUsedAt: c.lastUsedAt });

export function distributionPointRoutes(site: Site): Route[] {
  async function find(ref: string): Promise<DistributionPoint> {
    const s = stores(site.db).distributionPoints;
    const d = (await s.byId(ref)) ?? (await s.byName(ref));
    if (!d) throw notFound("distribution point", ref);
    return d;
  }
  async function contentView(d: DistributionPoint) {
    const s = stores(site.db);
    const out = [];
    for (const a of await s.distributionPoints.assignments(d.id)) {
      const c = await s.content.byDigest(a.digest);
      out.push({ digest: a.digest, image: c?.name ?? null, size: c?.size ?? null, state: a.state, message: a.message, assignedBy: a.assignedBy, assignedAt: a.assignedAt, updatedAt: a.updatedAt });
    }
    return out;
  }

  return [
    route({
      method: "GET", path: "/api/v1/distribution-points", access: "dp.read", tag: "distribution-points",
      summary: "Registered distribution points, whether they enrolled, when they were last seen, and how much of their content is ready",
      handler: async () => {
        const s = stores(site.db).distributionPoints;
        const all = await s.assignments();
        const now = site.now().toISOString();
        return { body: (await s.list()).map((d) => view(d, all.filter((a) => a.dpId === d.id), now)) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/distribution-points", access: "dp.write", tag: "distribution-points",
      summary: "Register a distribution point by the https URL devices reach it at; returns its one-time enrollment secret (24 hours), shown once",
      body: z.strictObject({ name: DpName, url: z.string().max(300), aliases: z.array(z.string().max(253)).max(15).default([]) }),
      handler: async (ctx) => {
        let origin: string, host: string;
        try {
          ({ origin, host } = parseDistributionPointUrl(ctx.body.url));
        } catch (err) {
          throw new SlipwayError("VALIDATION", `Cannot register distribution point "${ctx.body.name}": ${(err as Error).message}`);
        }
        const hostNames = [host];
        for (const a of ctx.body.aliases) {
          const n = normalizeHostName(a);
          if (!n) throw new SlipwayError("VALIDATION", `Cannot register distribution point "${ctx.body.name}": alias "${a}" is not a host name or IP address`);
          if (!hostNames.includes(n)) hostNames.push(n);
        }
        const s = stores(site.db).distributionPoints;
        if (await s.byName(ctx.body.name)) throw new SlipwayError("CONFLICT", `A distribution point named "${ctx.body.name}" exists`);
        // Its server certificate will carry these names: never loopback, the site's, or another distribution point's.
        const refusal = await refusedHostName(site, hostNames);
        if (refusal) {
          await refuseHostName(site, refusal, `Cannot register distribution point "${ctx.body.name}"`,
            { actor: actor(ctx), action: "dp.create", object: null, details: { name: ctx.body.name, url: origin, hostNames } });
        }
        if ((await s.list()).some((d) => d.url === origin)) throw new SlipwayError("CONFLICT", `A distribution point at ${origin} exists`);
        const { secret, secretHash, expiresAt } = newDpSecret(site);
        const now = site.now().toISOString();
        const d = await site.db.transaction(async (tx) => {
          const made = await stores(tx).distributionPoints.create({ name: ctx.body.name, url: origin, hostNames, secretHash, secretExpiresAt: expiresAt, createdBy: actor(ctx) }, now);
          await site.audit.append({ actor: actor(ctx), action: "dp.create", object: `dp:${made.id}`, details: { name: made.name, url: origin, hostNames, secretExpiresAt: expiresAt } }, tx);
          return made;
        });
        return { status: 201, body: { ...view(d, [], now), secret } };
      },
    }),
    route({
      method: "GET", path: "/api/v1/distribution-points/:id", access: "dp.read", tag: "distribution-points",
      summary: "A distribution point (by id or name) with each assigned manifest's replication state and its certificates",
      handler: async (ctx) => {
        const d = await find(ctx.params.id);
        const s = stores(site.db);
        return {
          body: { ...view(d, await s.distributionPoints.assignments(d.id), site.now().toISOString()),
            assignments: await contentView(d), certificates: (await s.certificates.list({ dpId: d.id })).map(certView) },
        };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/distribution-points/:id", access: "dp.write", tag: "distribution-points",
      summary: "Remove a distribution point: its certificates are revoked (listed in the CRL) and policies stop naming it",
      handler: async (ctx) => {
        const d = await find(ctx.params.id);
        const now = site.now().toISOString();
        await site.db.transaction(async (tx) => {
          const t = stores(tx);
          const active = (await t.certificates.list({ dpId: d.id })).filter((c) => c.status !== "revoked").map((c) => c.serial);
          for (const serial of active) await t.certificates.setStatus(serial, "revoked", "cessationOfOperation", now);
          await t.distributionPoints.delete(d.id);
          await site.audit.append({ actor: actor(ctx), action: "dp.delete", object: `dp:${d.id}`, details: { name: d.name, url: d.url, revoked: active } }, tx);
        });
        return {};
      },
    }),
    route({
      method: "POST", path: "/api/v1/distribution-points/:id/secret", access: "dp.write", tag: "distribution-points",
      summary: "A new one-time enrollment secret (24 hours), e.g. after the distribution point lost its keys; enrolling with it revokes its earlier certificates",
      handler: async (ctx) => {
        const d = await find(ctx.params.id);
        const { secret, secretHash, expiresAt } = newDpSecret(site);
        const now = site.now().toISOString();
        await site.db.transaction(async (tx) => {
          await stores(tx).distributionPoints.setSecret(d.id, secretHash, expiresAt, now);
          await site.audit.append({ actor: actor(ctx), action: "dp.secret", object: `dp:${d.id}`, details: { name: d.name, secretExpiresAt: expiresAt } }, tx);
        });
        return { status: 201, body: { id: d.id, name: d.name, secret, secretExpiresAt: expiresAt } };
      },
    }),
    route({
      method: "POST", path: "/api/v1/distribution-points/:id/content", access: "dp.write", tag: "distribution-points",
      summary: "Assign an image (its newest manifest by name, or a manifest by digest) to a distribution point to replicate",
      body: z.strictObject({ image: z.string().min(1).max(200) }),
      handler: async (ctx) => {
        const d = await find(ctx.params.id);
        const record = await findImage(site, ctx.body.image);
        if (!record) throw notFound("image", ctx.body.image);
        const now = site.now().toISOString();
        const added = await site.db.transaction(async (tx) => {
          const isNew = await stores(tx).distributionPoints.assign(d.id, record.digest, actor(ctx), now);
          if (isNew) await site.audit.append({ actor: actor(ctx), action: "dp.assign", object: `dp:${d.id}`, details: { dp: d.name, digest: record.digest, image: record.name } }, tx);
          return isNew;
        });
        const a = (await stores(site.db).distributionPoints.assignment(d.id, record.digest))!;
        return { status: added ? 201 : 200, body: { digest: a.digest, image: record.name, state: a.state, message: a.message, assignedAt: a.assignedAt } };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/distribution-points/:id/content/:image", access: "dp.write", tag: "distribution-points",
      summary: "Unassign content: a manifest by digest, or every assigned manifest of an image name; the distribution point deletes it at its next poll",
      handler: async (ctx) => {
        const d = await find(ctx.params.id);
        const s = stores(site.db);
        const ref = ctx.params.image;
        const gone: string[] = [];
        for (const a of await s.distributionPoints.assignments(d.id)) {
          if (a.digest === ref || (await s.content.byDigest(a.digest))?.name === ref) gone.push(a.digest);
        }
        if (!gone.length) throw new SlipwayError("NOT_FOUND", `Cannot unassign "${ref}": it is not assigned to distribution point "${d.name}"`);
        await site.db.transaction(async (tx) => {
          for (const digest of gone) await stores(tx).distributionPoints.unassign(d.id, digest);
          await site.audit.append({ actor: actor(ctx), action: "dp.unassign", object: `dp:${d.id}`, details: { dp: d.name, digests: gone } }, tx);
        });
        return {};
      },
    }),
  ];
}
