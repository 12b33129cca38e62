/** What Slipway holds about a machine and for how long (rules in src/site/services/privacy.ts). */
import { z } from "zod";
import { route, type Route } from "../http.ts";
import type { Site } from "../../../site/site.ts";
import { MAX_RUN_LOG_DAYS, MIN_RUN_LOG_DAYS, privacyReport, privacySettings, setPrivacySettings } from "../../../site/services/privacy.ts";
import { principal } from "./common.ts";

export function privacyRoutes(site: Site): Route[] {
  return [
    route({
      method: "GET", path: "/api/v1/privacy/settings", access: "site.read", tag: "privacy", summary: "How long run step output is kept",
      handler: async () => ({ body: await privacySettings(site) }),
    }),
    route({
      method: "PUT", path: "/api/v1/privacy/settings", access: "site.write", tag: "privacy", summary: "Change how long run step output is kept",
      body: z.strictObject({ runLogDays: z.int().min(MIN_RUN_LOG_DAYS).max(MAX_RUN_LOG_DAYS) }),
      handler: async (ctx) => ({ body: await setPrivacySettings(site, principal(ctx), ctx.body) }),
    }),
    route({
      method: "GET", path: "/api/v1/devices/:id/privacy-report", access: "device.read", tag: "privacy",
      summary: "Everything held about one device: record, variables, certificates, leases, runs, associations, audit entries naming it",
      handler: async (ctx) => ({ body: await privacyReport(site, principal(ctx), ctx.params.id) }),
    }),
  ];
}
