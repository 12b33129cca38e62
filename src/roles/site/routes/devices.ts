/**
 * Devices. New devices are pending; only `device.approve` approves or blocks them. The rules
 * (pre-approval, identifiers, scopes, the link only the PXE responder records) and the
 * transactions are in the devices service (src/site/services/devices.ts); these handlers
 * parse, call it, and answer.
 *
 * In bulk (POST /api/v1/devices/approve, /block): every pending device a filter names — the
 * PXE link it was first seen on, how recently — within the caller's scopes, in one transaction.
 */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { DeviceMac, isUnsetSmbiosUuid, normalizeUuid, deviceStates } from "../../../domain/device.ts";
import { createDevice, decideDevice, decidePending, deleteDevice, getDevice, listDevices, updateDevice } from "../../../site/services/devices.ts";
import { Name, principal } from "./common.ts";

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

export function deviceRoutes(site: Site): Route[] {
  const setState = (action: "approve" | "block" | "unapprove"): Route => route({
    method: "POST", path: `/api/v1/devices/:id/${action}`, access: "device.approve", tag: "devices",
    summary: action === "approve"
      ? "Approve a device: the administrator's explicit approval, needed again after a block or a certificate revocation; arms one pre-approved enrollment when the device holds no live certificate"
      : `${action[0].toUpperCase()}${action.slice(1)} a device`,
    handler: async (ctx) => ({ body: await decideDevice(site, principal(ctx), ctx.params.id, action) }),
  });

  const bulk = (state: "approved" | "blocked", action: "approve" | "block"): Route => route({
    method: "POST", path: `/api/v1/devices/${action}`, access: "device.approve", tag: "devices",
    summary: `${action === "approve" ? "Approve" : "Block"} in one transaction every pending device a filter names (link first seen on, since) within your scopes; answers the devices ${state}`,
    body: z.strictObject({
      link: Link.optional(), since: Since.optional(), all: z.boolean().optional(),
      collection: z.string().min(1).max(200).optional(), expect: z.int().min(0).max(100_000).optional(), dryRun: z.boolean().default(false),
    }),
    handler: async (ctx) => ({ body: await decidePending(site, principal(ctx), state, ctx.body) }),
  });

  return [
    route({
      method: "GET", path: "/api/v1/devices", access: "device.read", tag: "devices",
      summary: "List devices (filter by state, MAC, name, the PXE link first seen on, and first recorded since a duration such as 10m or an ISO time)",
      query: z.object({ state: z.enum(deviceStates).optional(), mac: Mac.optional(), name: z.string().max(200).optional(), link: Link.optional(), since: Since.optional() }),
      handler: async (ctx) => ({ body: await listDevices(site, principal(ctx), ctx.query) }),
    }),
    route({
      method: "GET", path: "/api/v1/devices/:id", access: "device.read", tag: "devices", summary: "One device (by id or name) and its collections",
      handler: async (ctx) => ({ body: await getDevice(site, principal(ctx), ctx.params.id) }),
    }),
    route({
      method: "POST", path: "/api/v1/devices", access: "device.write", tag: "devices",
      summary: "Record a device; it is pending unless you hold device.approve and ask for another state",
      body: z.strictObject({
        name: Name, macs: z.array(Mac).max(16).default([]), smbiosUuid: Uuid.nullable().optional(),
        serial: z.string().max(200).nullable().optional(), attributes: Attributes.default({}),
        state: z.enum(deviceStates).default("pending"), collections: z.array(z.string().max(200)).max(50).default([]),
      }),
      handler: async (ctx) => ({ status: 201, body: await createDevice(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "PATCH", path: "/api/v1/devices/:id", access: "device.write", tag: "devices", summary: "Change a device's name, identifiers or attributes",
      body: z.strictObject({
        name: Name.optional(), macs: z.array(Mac).max(16).optional(), smbiosUuid: Uuid.nullable().optional(),
        serial: z.string().max(200).nullable().optional(), attributes: Attributes.optional(),
      }),
      handler: async (ctx) => ({ body: await updateDevice(site, principal(ctx), ctx.params.id, ctx.body) }),
    }),
    route({
      method: "DELETE", path: "/api/v1/devices/:id", access: "device.write", tag: "devices", summary: "Delete a device and its device-scope variables; its certificates are revoked (in the CRL)",
      handler: async (ctx) => {
        await deleteDevice(site, principal(ctx), ctx.params.id);
        return {};
      },
    }),
    bulk("approved", "approve"),
    bulk("blocked", "block"),
    setState("approve"),
    setState("block"),
    setState("unapprove"),
  ];
}
