/**
 * The management point's HTTPS listener: mutual TLS with the site CA as the only trust root
 * for client certificates. A client certificate is requested but not required at the TLS
 * layer, so a machine without one can still reach enrollment; every other route checks it,
 * and takes only its own kind: device routes a device's, `/mp/v1/dp` routes a distribution
 * point's.
 */
import https from "node:https";
import { constants } from "node:crypto";
import type { Site } from "../../site/site.ts";
import { createPipeline, HANDSHAKE_TIMEOUT_MS, listenHttps } from "../pipeline.ts";
import { SlipwayError } from "../../errors.ts";
import { RateLimiter } from "../../site/auth.ts";
import { principalFromRequest, type MpPrincipal } from "./device-auth.ts";
import { managementRoutes, type MpAccess, type MpRoute } from "./routes.ts";
import { userStateRoutes } from "./user-state-routes.ts";
import { contentRoutes } from "./content-routes.ts";
import { distributionPointRoutes } from "./dp-routes.ts";
import { certificateHostNames, recordSiteHostNames } from "../../site/dp-names.ts";
import os from "node:os";

export type ManagementPoint = { url: string; port: number; routes: readonly MpRoute[]; close(): Promise<void> };

export async function startManagementPoint(opts: { site: Site; host: string; port: number; tls: { certPem: string; keyPem: string } }): Promise<ManagementPoint> {
  const { site } = opts;
  // The names this management point answers under are never a distribution point's.
  await recordSiteHostNames(site, [...certificateHostNames(opts.tls.certPem), os.hostname()]);
  const routes = [...managementRoutes(site), ...userStateRoutes(site), ...contentRoutes(site), ...distributionPointRoutes(site)];
  const deniedAudit = new RateLimiter(60, 60_000, () => site.now().getTime());
  const pipeline = createPipeline<MpAccess, MpPrincipal>(routes, {
    log: site.log,
    async authenticate(req) {
      const r = await principalFromRequest(site, req);
      if (r instanceof SlipwayError) {
        const ip = req.socket.remoteAddress ?? "";
        if (deniedAudit.hit(ip)) {
          await site.audit.append({ actor: "device:?", action: "mp.denied", outcome: "denied", object: `${req.method} ${(req.url ?? "").split("?")[0]}`,
            details: { code: `SLIPWAY_${r.code}`, reason: r.message, ip } });
        }
        throw r;
      }
      return r;
    },
    authorize: (route, p) => route.access === p.kind ? null
      : new SlipwayError("FORBIDDEN", p.kind === "dp" ? "Not allowed: a distribution point's certificate cannot use device routes"
        : "Not allowed: only distribution points may use this route"),
    async onDenied(ctx, code, reason) {
      const p = ctx.principal;
      if (!deniedAudit.hit(ctx.ip)) return;
      await site.audit.append({ actor: !p ? "device:?" : p.kind === "dp" ? `dp:${p.dp.id}` : `device:${p.device.id}`, action: "mp.denied", outcome: "denied",
        object: `${ctx.method} ${ctx.path}`, details: { code: `SLIPWAY_${code}`, reason: reason ?? null, serial: p?.certificate.serial ?? null, ip: ctx.ip } });
    },
    mapError: (err) => {
      const e = err as { code?: string; message?: string };
      return e?.code === "23505" || /UNIQUE constraint failed/.test(e?.message ?? "") ? new SlipwayError("CONFLICT") : null;
    },
  });
  const server = https.createServer({
    cert: opts.tls.certPem, key: opts.tls.keyPem, ca: [site.keys.ca.certPem], requestCert: true, rejectUnauthorized: false,
    minVersion: "TLSv1.2",
    // No session tickets: every connection proves its certificate afresh.
    secureOptions: constants.SSL_OP_NO_TICKET,
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS, requestTimeout: 60_000, headersTimeout: 15_000, keepAliveTimeout: 30_000, maxHeaderSize: 16 * 1024,
  }, pipeline.handle);
  server.on("clientError", (_err, socket) => socket.destroy());
  const l = await listenHttps(server, opts.host, opts.port, { log: site.log });
  site.log.info("management point listening", { url: l.url });
  return { url: l.url, port: l.port, routes, close: l.close };
}
