/**
 * Devices. New devices are pending; only `device.approve` approves or blocks them.
 *
 * Approving is the administrator's explicit admission: approving a device that holds no live
 * certificate (never enrolled, its certificate expired or revoked) arms its pre-approval —
 * one enrollment by a machine presenting its identifiers — and is how a device blocked by a
 * revocation comes back. Approving one that holds a live certificate (unblocking it) only
 * resumes that identity. Blocking or unapproving disarms pre-approval. A scoped administrator
 * gets 404 for a device outside its scopes, as if it did not exist, and the refusal is audited.
 *
 * In bulk (POST /api/v1/devices/approve, /block): every pending device a filter names — the
 * PXE link it was first seen on, how recently — within the caller's scopes, in one transaction
 * (roles/site/device-approval.ts). The link is what the PXE responder recorded
 * (attributes.firstSeenLink); the API never sets or changes it, so a device created by hand
 * cannot pass for one a link saw.
 */
import { z } from "zod";
import { route, type Principal, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { stores } from "../../../storage/stores.ts";
import { DeviceMac, isUnsetSmbiosUuid, normalizeMac, normalizeUuid, deviceStates, preApprovalOf, type Device } from "../../../domain/device.ts";
import { SlipwayError } from "../../../errors.ts";
import { deviceCollections, deviceVisible, devicesVisible } from "../../../site/membership.ts";
import { FIRST_SEEN_LINK, matchesSeen } from "../../../domain/pending.ts";
import { decidePending, resolveFilter, settlePreApproval } from "../device-approval.ts";
import { actor, Name, notFound, principal } from "./common.ts";

const Mac = DeviceMac;
const Uuid = z.string().max(64).transform((s, c) => {
  const uuid = normalizeUuid(s);
  if (!uuid) return (c.addIssue({ code: "custom", message: "not a UUID" }), z.NEVER);
  if (isUnsetSmbiosUuid(uuid)) return (c.addIssue({ code: "custom", message: "SMBIOS's all-zero and all-one UUIDs mean \"not set\"; leave the UUID out" }), z.NEVER);
  return uuid;
});
/** A PXE link's name: a network interface name. */
const Link = z.string().min(1).max(64).regex(/^[A-Za-z0-9_.:@-]+$/, "an interface name");
/** A duration back from now (90s, 10m, 2h, 1d) or an ISO time; checked when resolved on the site's clock. */
const Since = z.string().min(2).max(64);
const AttrKey = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, "letters, digits and _");
const Attributes = z.record(AttrKey, z.union([z.string().max(1000), z.number(), z.boolean()]))
  .refine((r) => Object.keys(r).length <= 200, "at most 200 attributes");

/** Refuses attributes that set or change what only the PXE responder records. */
function assertNoRecordedLink(attrs: Record<string, unknown> | undefined, current: Record<string, unknown> = {}) {
  if (attrs && Object.hasOwn(attrs, FIRST_SEEN_LINK) && attrs[FIRST_SEEN_LINK] !== current[FIRST_SEEN_LINK]) {
    throw new SlipwayError("VALIDATION", `Cannot set attribute ${FIRST_SEEN_LINK}: only the PXE responder records the link a machine was first seen on`,
      [{ path: `attributes.${FIRST_SEEN_LINK}`, message: "recorded by the PXE responder only" }]);
  }
}

const deviceView = (d: Device, collections?: string[]) => ({ ...d, ...(collections ? { collections } : {}) });

export function deviceRoutes(site: Site): Route[] {
  /** A device with its pre-approval ("armed", "spent" or "none") and when it last enrolled. */
  async function withEnrollment(d: Device, collections?: string[]) {
    const e = await stores(site.db).devices.enrollmentOf(d.id);
    return { ...deviceView(d, collections), preApproval: e ? preApprovalOf(e) : "none", enrolledAt: e?.enrolledAt ?? null, enrollmentAssurance: e?.assurance ?? null };
  }
  async function loadInScope(ctx: Parameters<Route["handler"]>[0], action: string) {
    const s = stores(site.db);
    const d = (await s.devices.byId(ctx.params.id)) ?? (await s.devices.byName(ctx.params.id));
    if (!d) throw notFound("device", ctx.params.id);
    if (!(await deviceVisible(s, principal(ctx), d))) {
      await site.audit.append({ actor: actor(ctx), action, outcome: "denied", object: `device:${d.id}`, details: { reason: "out of scope" } });
      throw notFound("device", ctx.params.id);
    }
    return { d };
  }
  /** Refuses identifiers another device holds; names that device only to a caller who may see it. */
  async function assertUnique(p: Principal, macs: string[], uuid: string | null, self?: string) {
    const s = stores(site.db);
    const owner = async (other: Device) =>
      (await deviceVisible(s, p, other)) ? `device "${other.name}"` : "a device outside your scopes";
    for (const mac of macs) {
      const other = await s.devices.byMac(mac);
      if (other && other.id !== self) throw new SlipwayError("CONFLICT", `MAC ${mac} already belongs to ${await owner(other)}`);
    }
    if (uuid) {
      const other = await s.devices.bySmbiosUuid(uuid);
      if (other && other.id !== self) throw new SlipwayError("CONFLICT", `SMBIOS UUID ${uuid} already belongs to ${await owner(other)}`);
    }
  }
  const setState = (state: "approved" | "blocked" | "pending", action: string): Route => route({
    method: "POST", path: `/api/v1/devices/:id/${action}`, access: "device.approve", tag: "devices",
    summary: action === "approve"
      ? "Approve a device: the administrator's explicit approval, needed again after a block or a certificate revocation; arms one pre-approved enrollment when the device holds no live certificate"
      : `${action[0].toUpperCase()}${action.slice(1)} a device`,
    handler: async (ctx) => {
      const { d } = await loadInScope(ctx, `device.${action}`);
      const now = site.now().toISOString();
      const updated = await site.db.transaction(async (tx) => {
        const t = stores(tx);
        const u = await t.devices.update(d.id, { state }, now);
        const preApproval = await settlePreApproval(t, d.id, state, now);
        await site.audit.append({ actor: actor(ctx), action: `device.${action}`, object: `device:${d.id}`,
          details: { name: d.name, from: d.state, to: state, preApproval } }, tx);
        return u!;
      });
      return { body: await withEnrollment(updated) };
    },
  });

  const bulk = (state: "approved" | "blocked", action: "approve" | "block"): Route => route({
    method: "POST", path: `/api/v1/devices/${action}`, access: "device.approve", tag: "devices",
    summary: `${action === "approve" ? "Approve" : "Block"} in one transaction every pending device a filter names (link first seen on, since) within your scopes; answers the devices ${state}`,
    body: z.strictObject({
      link: Link.optional(), since: Since.optional(), all: z.boolean().optional(),
      collection: z.string().min(1).max(200).optional(), expect: z.int().min(0).max(100_000).optional(), dryRun: z.boolean().default(false),
    }),
    handler: async (ctx) => ({ body: await decidePending(site, principal(ctx), actor(ctx), state, ctx.body) }),
  });

  return [
    route({
      method: "GET", path: "/api/v1/devices", access: "device.read", tag: "devices",
      summary: "List devices (filter by state, MAC, name, the PXE link first seen on, and first recorded since a duration such as 10m or an ISO time)",
      query: z.object({ state: z.enum(deviceStates).optional(), mac: Mac.optional(), name: z.string().max(200).optional(), link: Link.optional(), since: Since.optional() }),
      handler: async (ctx) => {
        const s = stores(site.db);
        const q = ctx.query;
        const seen = resolveFilter(site, q);
        // No membership for an administrator without scopes: it sees every device.
        const list = (await devicesVisible(s, principal(ctx), await s.devices.list())).filter((d) => (!q.state || d.state === q.state)
          && (!q.mac || d.macs.includes(q.mac)) && (!q.name || d.name === q.name) && matchesSeen(d, seen));
        return { body: list.map((d) => deviceView(d)) };
      },
    }),
    route({
      method: "GET", path: "/api/v1/devices/:id", access: "device.read", tag: "devices", summary: "One device (by id or name) and its collections",
      handler: async (ctx) => {
        const { d } = await loadInScope(ctx, "device.read");
        return { body: await withEnrollment(d, await deviceCollections(stores(site.db), d)) };
      },
    }),
    route({
      method: "POST", path: "/api/v1/devices", access: "device.write", tag: "devices",
      summary: "Record a device; it is pending unless you hold device.approve and ask for another state",
      body: z.strictObject({
        name: Name, macs: z.array(Mac).max(16).default([]), smbiosUuid: Uuid.nullable().optional(),
        serial: z.string().max(200).nullable().optional(), attributes: Attributes.default({}),
        state: z.enum(deviceStates).default("pending"), collections: z.array(z.string().max(200)).max(50).default([]),
      }),
      handler: async (ctx) => {
        const p = principal(ctx);
        const b = ctx.body;
        assertNoRecordedLink(b.attributes);
        if (b.state !== "pending" && !p.permissions.has("device.approve")) {
          throw new SlipwayError("FORBIDDEN", `Not allowed: creating a device as ${b.state} needs the device.approve permission`);
        }
        const macs = [...new Set<string>(b.macs)];
        const s = stores(site.db);
        if (await s.devices.byName(b.name)) throw new SlipwayError("CONFLICT", `Cannot create device "${b.name}": the name is taken`);
        await assertUnique(p, macs, b.smbiosUuid ?? null);
        const colls: string[] = [];
        for (const c of b.collections) {
          const coll = (await s.collections.byId(c)) ?? (await s.collections.byName(c));
          if (!coll) throw new SlipwayError("VALIDATION", `Cannot add the device to collection "${c}": it does not exist`);
          colls.push(coll.id);
        }
        // A scoped administrator must place the device where they can still see it.
        if (p.scopes !== null && !colls.some((c) => p.scopes!.includes(c))) {
          throw new SlipwayError("OUT_OF_SCOPE", "Not allowed: add the device to one of your scoped collections");
        }
        if (p.scopes !== null && colls.some((c) => !p.scopes!.includes(c))) throw new SlipwayError("OUT_OF_SCOPE");
        const d = await site.db.transaction(async (tx) => {
          const t = stores(tx);
          // Created approved by an administrator: pre-approved for its first enrollment.
          const dev = await t.devices.create({ name: b.name, macs, smbiosUuid: b.smbiosUuid ?? null, serial: b.serial ?? null,
            state: b.state, attributes: b.attributes }, site.now().toISOString(), { preApproved: b.state === "approved" });
          for (const c of colls) await t.collections.addMember(c, dev.id);
          await site.audit.append({ actor: actor(ctx), action: "device.create", object: `device:${dev.id}`,
            details: { name: dev.name, macs, smbiosUuid: dev.smbiosUuid, state: dev.state } }, tx);
          return dev;
        });
        return { status: 201, body: await withEnrollment(d, colls) };
      },
    }),
    route({
      method: "PATCH", path: "/api/v1/devices/:id", access: "device.write", tag: "devices", summary: "Change a device's name, identifiers or attributes",
      body: z.strictObject({
        name: Name.optional(), macs: z.array(Mac).max(16).optional(), smbiosUuid: Uuid.nullable().optional(),
        serial: z.string().max(200).nullable().optional(), attributes: Attributes.optional(),
      }),
      handler: async (ctx) => {
        const { d } = await loadInScope(ctx, "device.update");
        const b = ctx.body;
        assertNoRecordedLink(b.attributes, d.attributes);
        const p = principal(ctx);
        // Changing what identifies an approved device would hand its approval to another machine.
        if ((b.macs || b.smbiosUuid !== undefined) && d.state !== "pending" && !p.permissions.has("device.approve")) {
          throw new SlipwayError("FORBIDDEN", "Not allowed: changing the MAC or UUID of an approved or blocked device needs device.approve");
        }
        const s = stores(site.db);
        if (b.name && b.name !== d.name && (await s.devices.byName(b.name))) throw new SlipwayError("CONFLICT", `Cannot rename to "${b.name}": the name is taken`);
        const macs = b.macs ? [...new Set<string>(b.macs)] : undefined;
        await assertUnique(p, macs ?? [], b.smbiosUuid ?? null, d.id);
        const u = await site.db.transaction(async (tx) => {
          const r = await stores(tx).devices.update(d.id, { ...b, macs }, site.now().toISOString());
          await site.audit.append({ actor: actor(ctx), action: "device.update", object: `device:${d.id}`, details: { changed: Object.keys(b) } }, tx);
          return r!;
        });
        return { body: deviceView(u) };
      },
    }),
    route({
      method: "DELETE", path: "/api/v1/devices/:id", access: "device.write", tag: "devices", summary: "Delete a device and its device-scope variables; its certificates are revoked (in the CRL)",
      handler: async (ctx) => {
        const { d } = await loadInScope(ctx, "device.delete");
        await site.db.transaction(async (tx) => {
          const t = stores(tx);
          await t.variables.deleteScope("device", d.id);
          // Its certificates go with it, into the CRL: a certificate names no device any more.
          for (const c of await t.certificates.list({ deviceId: d.id })) {
            if (c.status !== "revoked") await t.certificates.setStatus(c.serial, "revoked", "cessationOfOperation", site.now().toISOString());
          }
          await t.devices.delete(d.id);
          await site.audit.append({ actor: actor(ctx), action: "device.delete", object: `device:${d.id}`, details: { name: d.name } }, tx);
        });
        return {};
      },
    }),
    bulk("approved", "approve"),
    bulk("blocked", "block"),
    setState("approved", "approve"),
    setState("blocked", "block"),
    setState("pending", "unapprove"),
  ];
}
