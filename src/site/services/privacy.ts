/**
 * What Slipway holds about a machine, and for how long (docs/privacy.md): the retention of run
 * step output (default 90 days after the run ended; the run itself stays, so a finished
 * required deployment stays finished), its sweep, and the privacy report of one device —
 * everything held about it, in one answer. Deleting a device purges it all (devices.ts).
 */
import type { Site } from "../site.ts";
import type { Principal } from "../principal.ts";
import { stores } from "../../storage/stores.ts";
import { SlipwayError } from "../../errors.ts";
import { adminActor, notFound } from "./common.ts";
import { deviceVisible } from "../membership.ts";
import { associationView, type AssociationView } from "./associations.ts";

const RUN_LOG_DAYS = "privacy.run-log-days";
export const DEFAULT_RUN_LOG_DAYS = 90;
export const MIN_RUN_LOG_DAYS = 1;
export const MAX_RUN_LOG_DAYS = 3650;
const DAY_MS = 24 * 3600_000;

export type PrivacySettings = { runLogDays: number };

export async function privacySettings(site: Site): Promise<PrivacySettings> {
  const v = await stores(site.db).settings.get(RUN_LOG_DAYS);
  const n = v === null ? NaN : Number(v);
  return { runLogDays: Number.isSafeInteger(n) && n >= MIN_RUN_LOG_DAYS && n <= MAX_RUN_LOG_DAYS ? n : DEFAULT_RUN_LOG_DAYS };
}

/** Sets how long step output is kept after a run ends (audited privacy.settings). */
export async function setPrivacySettings(site: Site, p: Principal, req: PrivacySettings): Promise<PrivacySettings> {
  if (!Number.isSafeInteger(req.runLogDays) || req.runLogDays < MIN_RUN_LOG_DAYS || req.runLogDays > MAX_RUN_LOG_DAYS) {
    throw new SlipwayError("VALIDATION", `Cannot keep run logs ${req.runLogDays} days: give whole days from ${MIN_RUN_LOG_DAYS} to ${MAX_RUN_LOG_DAYS}`,
      [{ path: "runLogDays", message: `${MIN_RUN_LOG_DAYS} to ${MAX_RUN_LOG_DAYS}` }]);
  }
  const was = await privacySettings(site);
  await site.db.transaction(async (tx) => {
    await stores(tx).settings.set(RUN_LOG_DAYS, String(req.runLogDays));
    await site.audit.append({ actor: adminActor(p), action: "privacy.settings", object: "site", details: { runLogDays: req.runLogDays, was: was.runLogDays } }, tx);
  });
  return privacySettings(site);
}

/** Deletes the step output of runs that ended longer ago than the retention (audited run.logs-purged when it deletes any). */
export async function sweepRunLogs(site: Site): Promise<number> {
  const { runLogDays } = await privacySettings(site);
  const cutoff = new Date(site.now().getTime() - runLogDays * DAY_MS).toISOString();
  return site.db.transaction(async (tx) => {
    const n = await stores(tx).runs.purgeEvents(cutoff);
    if (n > 0) await site.audit.append({ actor: "site", action: "run.logs-purged", object: "site", details: { events: n, endedBefore: cutoff, runLogDays } }, tx);
    return n;
  });
}

export type PrivacyReport = {
  device: {
    id: string; name: string; state: string; macs: string[]; smbiosUuid: string | null; serial: string | null;
    attributes: Record<string, unknown>; createdAt: string; lastSeenAt: string | null; tpmEndorsementKey: string | null;
  };
  variables: { name: string; secret: boolean }[];
  certificates: { serial: string; subject: string; status: string; notBefore: string; notAfter: string }[];
  leases: { mac: string; ip: string; expiresAt: string }[];
  runs: { id: string; deployment: string; state: string; startedAt: string; endedAt: string | null; logLines: number; logsKeptUntil: string | null }[];
  associations: AssociationView[];
  audit: { entries: number; first: string | null; last: string | null; actions: Record<string, number>; note: string };
  retention: PrivacySettings & { deleting: string };
};

/** Everything Slipway holds about one device (device.read; a scoped administrator sees only its devices). */
export async function privacyReport(site: Site, p: Principal, ref: string): Promise<PrivacyReport> {
  const s = stores(site.db);
  const d = (await s.devices.byId(ref)) ?? (await s.devices.byName(ref));
  if (!d || !(await deviceVisible(s, p, d))) throw notFound("device", ref);
  const settings = await privacySettings(site);
  const runs = [];
  for (const r of await s.runs.list({ deviceId: d.id })) {
    runs.push({
      id: r.id, deployment: r.deploymentId, state: r.state, startedAt: r.startedAt, endedAt: r.endedAt, logLines: await s.runs.eventCount(r.id),
      logsKeptUntil: r.endedAt ? new Date(Date.parse(r.endedAt) + settings.runLogDays * DAY_MS).toISOString() : null,
    });
  }
  const leases = [];
  for (const mac of d.macs) {
    const l = await s.leases.byMac(mac);
    if (l) leases.push({ mac, ip: l.ip, expiresAt: l.expiresAt });
  }
  const associations = await s.associations.list({ deviceId: d.id });
  const ek = (d as { tpmEkFingerprint?: string | null }).tpmEkFingerprint ?? null;
  return {
    device: {
      id: d.id, name: d.name, state: d.state, macs: d.macs, smbiosUuid: d.smbiosUuid, serial: d.serial, attributes: d.attributes,
      createdAt: d.createdAt, lastSeenAt: d.lastSeenAt, tpmEndorsementKey: ek,
    },
    variables: (await s.variables.list({ scope: "device", scopeId: d.id })).map((v) => ({ name: v.name, secret: v.secret })),
    certificates: (await s.certificates.list({ deviceId: d.id })).map((c) => ({ serial: c.serial, subject: c.subject, status: c.status, notBefore: c.notBefore, notAfter: c.notAfter })),
    leases,
    runs,
    associations: associations.map((a) => associationView(a, new Map([[d.id, d.name]]))),
    audit: { ...(await site.audit.about(`device:${d.id}`)), note: "audit entries name the device by id and are kept: the log must stay verifiable" },
    retention: { ...settings, deleting: "slipway device delete removes the device, its variables, run history and step output, leases and associations (shredded); its certificates stay in the revocation list" },
  };
}
