/**
 * The site server's composition: every route module, the request pipeline and the HTTPS
 * listener. Reading this file shows the whole site API's wiring.
 */
import https from "node:https";
import { createPipeline, type Route, type RequestContext } from "./http.ts";
import type { Site } from "../../site/site.ts";
import { HANDSHAKE_TIMEOUT_MS, listenHttps } from "../pipeline.ts";
import { authenticate, RateLimiter } from "../../site/auth.ts";
import { openApiDocument } from "./openapi.ts";
import { SlipwayError } from "../../errors.ts";
import { stores } from "../../storage/stores.ts";
import { sessionRoutes } from "./routes/sessions.ts";
import { adminRoutes } from "./routes/admins.ts";
import { deviceRoutes } from "./routes/devices.ts";
import { deviceTpmRoutes } from "./routes/device-tpm.ts";
import { enrollmentRoutes } from "./routes/enrollments.ts";
import { tpmRootRoutes } from "./routes/tpm-roots.ts";
import { collectionRoutes } from "./routes/collections.ts";
import { variableRoutes } from "./routes/variables.ts";
import { taskSequenceRoutes } from "./routes/task-sequences.ts";
import { deploymentRoutes } from "./routes/deployments.ts";
import { auditRoutes } from "./routes/audit.ts";
import { keyRoutes } from "./routes/keys.ts";
import { identityRoutes } from "./routes/identity.ts";
import { distributionPointRoutes } from "./routes/distribution-points.ts";
import { siteInfoRoutes, VERSION } from "./routes/site-info.ts";
import { associationRoutes } from "./routes/associations.ts";
import { privacyRoutes } from "./routes/privacy.ts";
import { sweepRunLogs } from "../../site/services/privacy.ts";
import { sweepAssociations } from "../../site/services/associations.ts";
import { stateChunksOf } from "../../site/state-store.ts";

export function siteRoutes(site: Site, opts: { loginLimiter?: RateLimiter } = {}): Route[] {
  const routes: Route[] = [];
  routes.push(
    ...siteInfoRoutes(site, () => routes, (r) => openApiDocument(r, VERSION)),
    ...sessionRoutes(site, opts),
    ...adminRoutes(site),
    ...deviceRoutes(site),
    ...deviceTpmRoutes(site),
    ...enrollmentRoutes(site),
    ...tpmRootRoutes(site),
    ...collectionRoutes(site),
    ...variableRoutes(site),
    ...taskSequenceRoutes(site),
    ...deploymentRoutes(site),
    ...auditRoutes(site),
    ...keyRoutes(site),
    ...identityRoutes(site),
    ...distributionPointRoutes(site),
    ...associationRoutes(site),
    ...privacyRoutes(site),
  );
  return routes;
}

/** Unique and foreign-key violations that slipped past a handler's own checks (a race). */
function constraintError(err: unknown): SlipwayError | null {
  const e = err as { code?: string; message?: string };
  if (e?.code === "23505" || /UNIQUE constraint failed/.test(e?.message ?? "")) return new SlipwayError("CONFLICT", "Conflicts with an object that was just created");
  if (e?.code === "23503" || /FOREIGN KEY constraint failed/.test(e?.message ?? "")) return new SlipwayError("IN_USE");
  return null;
}

export type SiteServer = { url: string; port: number; host: string; routes: readonly Route[]; close(): Promise<void>; rejected: Map<string, number> };

export async function startSiteServer(opts: {
  site: Site; host: string; port: number; tls: { certPem: string; keyPem: string }; loginLimiter?: RateLimiter;
}): Promise<SiteServer> {
  const { site } = opts;
  const routes = siteRoutes(site, { loginLimiter: opts.loginLimiter });
  const rejected = new Map<string, number>();
  // Every refused request is audited once (the pipeline calls this for those whose handler
  // did not audit the refusal itself); anonymous ones at most 60 a minute per address, so a
  // flood of anonymous requests cannot fill the audit log.
  const anonAudit = new RateLimiter(60, 60_000, () => site.now().getTime());
  const pipeline = createPipeline(routes, {
    log: site.log,
    authenticate: (req) => authenticate(site, req),
    async onDenied(ctx: RequestContext, code: string, reason?: string) {
      if (!ctx.principal && !anonAudit.hit(ctx.ip)) return;
      await site.audit.append({
        actor: ctx.principal ? `admin:${ctx.principal.username}` : "anonymous", action: "request.denied", outcome: "denied",
        object: `${ctx.method} ${ctx.path}`, details: { code: `SLIPWAY_${code}`, reason: reason ?? null, ip: ctx.ip },
      });
    },
    onRejected: (code) => rejected.set(code, (rejected.get(code) ?? 0) + 1),
    mapError: constraintError,
  });
  const server = https.createServer({
    cert: opts.tls.certPem, key: opts.tls.keyPem, minVersion: "TLSv1.2",
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS, requestTimeout: 30_000, headersTimeout: 15_000, keepAliveTimeout: 5_000, maxHeaderSize: 16 * 1024,
  }, pipeline.handle);
  server.on("clientError", (_err, socket) => socket.destroy());
  // Expired sessions are refused on use anyway; this keeps the table from growing.
  const sweep = setInterval(() => {
    stores(site.db).admins.deleteExpiredSessions(site.now().toISOString()).catch((err) => site.log.warn("session sweep failed", { err }));
  }, 10 * 60_000);
  sweep.unref();
  // User state is deleted on schedule (after its restore, or never restored by its expiry), and
  // run step output after the privacy retention (docs/privacy.md).
  const retentionSweep = () => {
    sweepAssociations(site, stateChunksOf(site)).catch((err) => site.log.warn("user-state retention sweep failed", { err }));
    sweepRunLogs(site).catch((err) => site.log.warn("run log retention sweep failed", { err }));
  };
  // At start too: deadlines that passed while the site was down are kept at once.
  retentionSweep();
  const stateSweep = setInterval(retentionSweep, 60_000);
  stateSweep.unref();
  const l = await listenHttps(server, opts.host, opts.port, { log: site.log });
  site.log.info("site server listening", { url: l.url, database: site.db.description });
  return {
    url: l.url, port: l.port, host: l.host, routes, rejected,
    close: () => {
      clearInterval(sweep);
      clearInterval(stateSweep);
      return l.close();
    },
  };
}
