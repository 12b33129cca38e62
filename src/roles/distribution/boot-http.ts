/**
 * Boot scripts over plain HTTP, per machine, on the PXE links only. Stock iPXE has no HTTPS,
 * so everything here is public by design: loaders, the deploy environment's kernel and initrd
 * (served only when a boot image uses them), and a one-time boot token bound to the
 * machine's MAC and SMBIOS UUID — useless to anyone else, and without the PXE password
 * useless even to that machine. No secret, and nothing a secret could be learned from, is
 * ever served (the token is an HMAC under a key of its own: it reveals nothing of that key).
 *
 * Asking again does not mint again: a machine gets back its unused token while enough of it is
 * left, and boot script requests are limited per MAC and per link (429 with Retry-After, the
 * refusals counted and recorded once per window), so nobody on a link can fill the database
 * or the audit log with tokens.
 */
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import type { AddressInfo } from "node:net";
import type { Site } from "../../site/site.ts";
import { stores } from "../../storage/stores.ts";
import { BlobStore } from "../../content/blob-store.ts";
import { bootScript, decideBoot, localBootScript, startScript, waitScript, LOADERS, type UnknownPolicy } from "../../domain/pxe.ts";
import { devicePolicy } from "../../site/policy.ts";
import { isUnsetSmbiosUuid, normalizeMac, normalizeUuid } from "../../domain/device.ts";
import { bootTokenFor } from "../../site/credentials.ts";
import { DEFAULT_BOOT_LIMITS, WindowCounter, type BootLimits } from "./boot-limits.ts";
import type { PxeLink } from "./pxe-responder.ts";
import { listenOnDevice } from "../../net/bound-tcp.ts";

export type BootHttpOptions = {
  site: Site;
  links: PxeLink[];
  port: number;
  unknown: UnknownPolicy;
  /** The management point URL a machine on this link reaches (goes on the kernel command line). */
  managementPointUrl(link: PxeLink): string;
  /** Folder with the iPXE loaders (Debian's ipxe package: /usr/lib/ipxe). */
  loaderDir?: string;
  /** Bind each listener to its link's device (the default); false only for loopback tests. */
  bindToDevice?: boolean;
  /** Boot script requests allowed per MAC and per link (DEFAULT_BOOT_LIMITS). */
  limits?: Partial<BootLimits>;
};

export type BootHttp = { port: number; close(): Promise<void>; baseUrl(link: PxeLink): string };

const TEXT = { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" };

export async function startBootHttp(opts: BootHttpOptions): Promise<BootHttp> {
  const { site } = opts;
  const blobs = new BlobStore(site.dataDir);
  const loaderDir = opts.loaderDir ?? "/usr/lib/ipxe";
  const servers: http.Server[] = [];
  let port = opts.port;

  const base = (link: PxeLink) => `http://${link.address}:${port}`;
  const limits = { ...DEFAULT_BOOT_LIMITS, ...opts.limits };
  const clock = () => site.now().getTime();
  const perLink = new WindowCounter(limits.perLink, limits.windowMs, clock);
  const perMac = new WindowCounter(limits.perMac, limits.windowMs, clock);
  const perSource = new WindowCounter(limits.perSource, limits.windowMs, clock);
  /** Requests naming no device on record: the first of each source's window is audited, the rest counted. */
  const unknownAudits = new WindowCounter(1, limits.windowMs, clock);
  // One boot script at a time per MAC, so two requests at once cannot both mint a token.
  const busy = new Map<string, Promise<unknown>>();
  const oneAtATime = <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const run = (busy.get(key) ?? Promise.resolve()).catch(() => {}).then(fn);
    const tail = run.finally(() => {
      if (busy.get(key) === tail) busy.delete(key);
    });
    busy.set(key, tail);
    return run;
  };

  type Reply = { status: number; body: string; headers?: Record<string, string> };
  const NOTHING_TO_BOOT: Reply = { status: 404, body: "#!ipxe\necho Slipway: nothing to boot for this machine\nexit 1\n" };

  /** The answer to a request over a limit; the first of a window is audited, the rest counted. */
  async function limited(link: PxeLink, scope: "mac" | "source" | "link", mac: string | null, source: string, hit: { record: boolean; unrecorded: number; retryAfterSeconds: number }): Promise<Reply> {
    if (hit.record) {
      await site.audit.append({ actor: "pxe", action: "pxe.script.limited", outcome: "denied",
        object: scope === "mac" ? `mac:${mac}` : scope === "source" ? `address:${source}` : `link:${link.name}`,
        details: { mac, source, link: link.name, limit: scope, max: scope === "mac" ? limits.perMac : scope === "source" ? limits.perSource : limits.perLink,
          windowSeconds: limits.windowMs / 1000, refusedUnrecorded: hit.unrecorded } });
    }
    const who = scope === "mac" ? "this machine" : scope === "source" ? "this address" : "this network";
    return {
      status: 429, headers: { "retry-after": String(hit.retryAfterSeconds) },
      body: `#!ipxe\necho Slipway: too many boot requests from ${who}; wait ${hit.retryAfterSeconds} seconds and try again.\nsleep ${hit.retryAfterSeconds}\nexit 1\n`,
    };
  }

  async function machineScript(link: PxeLink, url: URL, source: string): Promise<Reply> {
    const mac = normalizeMac(url.searchParams.get("mac") ?? "");
    const sourceHit = perSource.hit(`source:${source}`);
    if (!sourceHit.ok) return limited(link, "source", mac, source, sourceHit);
    if (!mac) return { status: 400, body: "#!ipxe\necho Slipway: this request names no MAC address\nexit 1\n" };
    const macHit = perMac.hit(`mac:${mac}@${source}`);
    if (!macHit.ok) return limited(link, "mac", mac, source, macHit);
    return oneAtATime(mac, () => scriptFor(link, url, mac, source));
  }

  async function scriptFor(link: PxeLink, url: URL, mac: string, source: string): Promise<Reply> {
    // SMBIOS's "not set" and "not present" UUIDs (all zeros, all ones) identify no machine: absent.
    const reported = normalizeUuid(url.searchParams.get("uuid") ?? "");
    let uuid = reported && !isUnsetSmbiosUuid(reported) ? reported : undefined;
    const s = stores(site.db);
    let device = await s.devices.byMac(mac);
    if (!device && uuid) {
      // A UUID names a device only when that device records no MAC of its own: a device on record
      // with other MACs and this UUID means two machines share one UUID (a known firmware plague),
      // so the UUID identifies nobody and this MAC is an unknown machine.
      const byUuid = await s.devices.bySmbiosUuid(uuid);
      if (byUuid && byUuid.macs.length === 0) device = byUuid;
      else if (byUuid) uuid = undefined;
    }
    // Only the DHCP stage records unknown machines; a script is for machines on record. Made-up
    // MACs cost only their sender's own budget (per source) and one audit entry per source and
    // window: they never use up the link's budget, which machines on record share.
    if (!device) {
      if (unknownAudits.hit(`source:${source}`).ok) {
        await site.audit.append({ actor: "pxe", action: "pxe.script.refused", outcome: "denied", object: `mac:${mac}`,
          details: { mac, link: link.name, source, reason: "no device on record (further ones from this address this minute are not recorded)" } });
      }
      return NOTHING_TO_BOOT;
    }
    const linkHit = perLink.hit(`link:${link.name}`);
    if (!linkHit.ok) return limited(link, "link", mac, source, linkHit);
    const decision = decideBoot(device, opts.unknown);
    if (decision === "wait") {
      return { status: 200, body: waitScript({ pollUrl: `${base(link)}/ipxe/machine?mac=${mac}&uuid=${uuid ?? ""}`, mac }) };
    }
    if (decision !== "boot" || !device) {
      await site.audit.append({ actor: "pxe", action: "pxe.script.refused", outcome: "denied", object: device ? `device:${device.id}` : `mac:${mac}`, details: { mac, link: link.name } });
      return { status: 404, body: "#!ipxe\necho Slipway: nothing to boot for this machine\nexit 1\n" };
    }
    // A token is bound to the UUID the machine reports now. A device on record with a UUID gets
    // none for a machine reporting another one — or none at all (absent, all zeros, all ones):
    // otherwise its MAC alone, which anyone on the link sees, would stand for it.
    if (device.smbiosUuid && device.smbiosUuid !== uuid) {
      await site.audit.append({ actor: "pxe", action: "pxe.script.refused", outcome: "denied", object: `device:${device.id}`,
        details: { mac, reason: uuid ? "SMBIOS UUID differs from the device record" : "the device record has an SMBIOS UUID; the machine reported none" } });
      return { status: 404, body: "#!ipxe\necho Slipway: this machine does not match its record\nexit 1\n" };
    }
    // A machine with nothing to run boots from its own disk: one whose required deployments
    // have all run (PXE-first machines must not re-image themselves in a loop), and one no
    // deployment targets on this boot path (it would only sit in the deploy environment).
    const policy = await devicePolicy(site, device, "pxe");
    const done = new Set((await s.runs.list({ deviceId: device.id, state: "succeeded" })).filter((r) => r.rerunAllowedAt === null).map((r) => r.deploymentId));
    const pending = policy.deployments.filter((d) => d.purpose === "available" || !done.has(d.id));
    if (!pending.length) {
      const reason = policy.deployments.length ? "required deployments done" : "no deployment for this machine";
      await site.audit.append({ actor: "pxe", action: "pxe.script.local", object: `device:${device.id}`, details: { mac, link: link.name, reason } });
      return { status: 200, body: localBootScript(device.name) };
    }
    const image = await s.bootImages.defaultImage();
    if (!image) {
      return { status: 200, body: waitScript({ pollUrl: `${base(link)}/ipxe/machine?mac=${mac}&uuid=${uuid ?? ""}`, mac, seconds: 30 })
        .replace("is waiting for an administrator's approval.", "is approved, but no boot image is registered yet.") };
    }
    // Bound to what the firmware reported (and the agent will read from the same SMBIOS table), not to the record.
    const { token, reused, expiresAt } = await bootTokenFor(site, { deviceId: device.id, mac, smbiosUuid: uuid ?? null });
    // A token handed out again is no new event: only a new one is recorded.
    if (!reused) await site.audit.append({ actor: "pxe", action: "pxe.script", object: `device:${device.id}`, details: { mac, link: link.name, bootImage: image.name, tokenExpiresAt: expiresAt } });
    return {
      status: 200,
      body: bootScript({
        image: { kernelUrl: `${base(link)}/ipxe/files/${image.kernelSha256}`, initrdUrl: `${base(link)}/ipxe/files/${image.initrdSha256}`, cmdline: image.cmdline },
        token, mac, managementPoint: opts.managementPointUrl(link), deviceName: device.name,
      }),
    };
  }

  function streamFile(res: http.ServerResponse, file: string, type: string): void {
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      res.writeHead(404, TEXT).end("not found\n");
      return;
    }
    res.writeHead(200, { "content-type": type, "content-length": st.size, "cache-control": "no-store" });
    fs.createReadStream(file).on("error", () => res.destroy()).pipe(res);
  }

  async function handle(link: PxeLink, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, TEXT).end();
      return;
    }
    let url: URL;
    try {
      url = new URL(req.url ?? "/", base(link));
    } catch {
      res.writeHead(400, TEXT).end();
      return;
    }
    if (url.pathname === "/ipxe/start") {
      res.writeHead(200, TEXT).end(startScript(base(link)));
      return;
    }
    if (url.pathname === "/ipxe/machine") {
      const r = await machineScript(link, url, (req.socket.remoteAddress ?? "").replace(/^::ffff:/, ""));
      res.writeHead(r.status, { ...TEXT, ...r.headers }).end(r.body);
      return;
    }
    const file = /^\/ipxe\/files\/([0-9a-f]{64})$/.exec(url.pathname);
    if (file) {
      if (!(await stores(site.db).bootImages.servesBlob(file[1]))) {
        res.writeHead(404, TEXT).end();
        return;
      }
      streamFile(res, blobs.pathOf(file[1]), "application/octet-stream");
      return;
    }
    const loader = /^\/ipxe\/loaders\/([a-z.]+)$/.exec(url.pathname);
    if (loader && (Object.values(LOADERS) as string[]).includes(loader[1])) {
      streamFile(res, path.join(loaderDir, loader[1]), "application/efi");
      return;
    }
    res.writeHead(404, TEXT).end();
  }

  for (const link of opts.links) {
    const server = http.createServer({ requestTimeout: 60_000, headersTimeout: 10_000, maxHeaderSize: 8 * 1024 }, (req, res) => {
      handle(link, req, res).catch((err) => {
        site.log.error("boot script request failed", { err, link: link.name });
        if (!res.headersSent) res.writeHead(500, TEXT).end();
      });
    });
    server.on("clientError", (_e, socket) => socket.destroy());
    if (opts.bindToDevice === false) {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, link.address, () => resolve());
      });
    } else {
      await listenOnDevice(server, link.name, link.address, port);
    }
    port = (server.address() as AddressInfo).port;
    servers.push(server);
  }
  return {
    port, baseUrl: base,
    close: () => Promise.all(servers.map((x) => new Promise<void>((resolve) => {
      x.close(() => resolve());
      x.closeAllConnections();
    }))).then(() => undefined),
  };
}
