/** Commands that act on a site's data folder: init, up, audit verify. */
import fs from "node:fs";
import path from "node:path";
import { isIPv4 } from "node:net";
import { initSite, openSite, siteExists, type OpenSiteOptions, type Site } from "../site/site.ts";
import { buildBootImage, DEFAULT_CMDLINE, type BootImage } from "../media/boot-image.ts";
import { startSiteServer } from "../roles/site/server.ts";
import { startManagementPoint } from "../roles/management/server.ts";
import { NoSuchLinkError, startNetworkBoot, waitForLinks } from "../roles/distribution/network-boot.ts";
import type { PxeLink } from "../roles/distribution/pxe-responder.ts";
import { unknownPolicies, type UnknownPolicy } from "../domain/pxe.ts";
import { parseRange, type IpRange } from "../domain/ip-pool.ts";
import { ensureServerCertificate } from "../security/site-keys.ts";
import { certificateHostNames, heldByDistributionPoint, recordSiteHostNames } from "../site/dp-names.ts";
import { entryAt, readHead, verifyAuditLog } from "../storage/audit-store.ts";
import { createLogger } from "../log.ts";
import os from "node:os";
import { stores } from "../storage/stores.ts";
import { announcePxeService, sitePosture, withdrawPxeService } from "../roles/site/posture.ts";
import { BlobStore } from "../content/blob-store.ts";
import { CliError, ExitCode, type Command } from "./command.ts";
import { dataOption, parse, parseListen, type ParsedArgs } from "./arguments.ts";

export const DEFAULT_LISTEN = "127.0.0.1:8443";
export const DEFAULT_MP_LISTEN = "127.0.0.1:8444";

export function siteOptions(dataDir: string): OpenSiteOptions {
  return { dataDir, databaseUrl: process.env.SLIPWAY_DATABASE_URL || undefined, log: createLogger({ level: (process.env.SLIPWAY_LOG_LEVEL as never) ?? "info" }) };
}

/** Creates the site; human messages go to `out` (stderr for `up`, whose stdout is JSON logs). */
async function runInit(dataDir: string, quietIfExists: boolean, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  if (siteExists(dataDir)) {
    if (quietIfExists) return;
    throw new CliError(`Cannot initialize ${dataDir}: a site already exists there`, ExitCode.CONFLICT);
  }
  const { site, adminPassword, generated } = await initSite({ ...siteOptions(dataDir), adminPassword: process.env.SLIPWAY_ADMIN_PASSWORD || undefined });
  await site.close();
  out.write(`Created a Slipway site in ${dataDir}\n`);
  if (generated) {
    out.write(`First administrator: admin\nOne-time password:   ${adminPassword}\n(shown once; you must change it when you first sign in)\n`);
  } else {
    out.write(`First administrator: admin (password from SLIPWAY_ADMIN_PASSWORD; change it when you first sign in)\n`);
  }
}

const init: Command = {
  summary: "Create a site in a data folder (keys, database, first administrator)",
  async run(args) {
    const { values } = parse(args, { data: { type: "string" } });
    if (values.help) {
      process.stdout.write("Usage: slipway init [--data DIR]\n  Reads SLIPWAY_ADMIN_PASSWORD and SLIPWAY_DATABASE_URL when set.\n");
      return ExitCode.OK;
    }
    await runInit(dataOption(values.data as string | undefined), false);
    return ExitCode.OK;
  },
};

const up: Command = {
  summary: "Start the site server (initializes an empty data folder first), or a distribution point (--role distribution)",
  async run(args) {
    const { values } = parse(args, {
      data: { type: "string" }, listen: { type: "string" }, "mp-listen": { type: "string" }, "tls-cert": { type: "string" }, "tls-key": { type: "string" },
      "public-name": { type: "string", multiple: true },
      "pxe-interface": { type: "string", multiple: true }, "pxe-mode": { type: "string" }, "dhcp-range": { type: "string", multiple: true },
      "dhcp-relay": { type: "string", multiple: true }, "pxe-optional": { type: "boolean" },
      unknown: { type: "string" }, "pxe-http-port": { type: "string" }, "ipxe-dir": { type: "string" },
      role: { type: "string" }, site: { type: "string" }, ca: { type: "string" }, "enroll-secret-file": { type: "string" }, "poll-seconds": { type: "string" },
    });
    const role = (values.role as string | undefined) ?? "site";
    if (role !== "site" && role !== "distribution") throw new CliError("--role is site (the default) or distribution", ExitCode.USAGE);
    if (role === "distribution") {
      const dp = await import("./distribution-up.ts");
      if (values.help) {
        process.stdout.write(dp.DISTRIBUTION_USAGE);
        return ExitCode.OK;
      }
      return dp.upDistributionPoint(values);
    }
    for (const o of ["site", "ca", "enroll-secret-file", "poll-seconds"]) {
      if (values[o] !== undefined) throw new CliError(`--${o} is for --role distribution`, ExitCode.USAGE);
    }
    if (values.help) {
      process.stdout.write(`Usage: slipway up [--data DIR] [--listen HOST:PORT] [--mp-listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [--public-name NAME]...
                  [--pxe-interface IF]... [--pxe-optional] [--pxe-mode proxy|dhcp] [--dhcp-range FIRST-LAST] [--dhcp-relay ADDR]... [--unknown deny|approve|allow] [--pxe-http-port N]
  The admin API listens on ${DEFAULT_LISTEN} and the management point (mutual TLS, for machines) on ${DEFAULT_MP_LISTEN} by default;
  with --pxe-interface the management point listens on all addresses (0.0.0.0:8444) unless --mp-listen says otherwise.
  PXE answers only on the interfaces named: ProxyDHCP beside your DHCP server (default), or full DHCP with --pxe-mode dhcp
  and --dhcp-range. Unknown computers: deny (default), approve (recorded as pending, boot once approved) or allow.
  Relayed requests (giaddr set) are answered only from the relay agents named with --dhcp-relay; others are ignored and audited.
  A PXE interface that does not exist stops up (unless --pxe-optional: then it is skipped, with a warning); one with no IPv4
  address yet is waited for; one without carrier is served at once and answers machines when it comes up.
  A distribution point on another host: slipway up --role distribution --help\n`);
      return ExitCode.OK;
    }
    const dataDir = dataOption(values.data as string | undefined);
    const listen = parseListen((values.listen as string | undefined) ?? process.env.SLIPWAY_LISTEN ?? DEFAULT_LISTEN);
    const pxeInterfaces = (values["pxe-interface"] as string[] | undefined) ?? [];
    const mpListen = parseListen((values["mp-listen"] as string | undefined) ?? process.env.SLIPWAY_MP_LISTEN ?? (pxeInterfaces.length ? "0.0.0.0:8444" : DEFAULT_MP_LISTEN));
    const pxeMode = (values["pxe-mode"] as string | undefined) ?? "proxy";
    if (pxeMode !== "proxy" && pxeMode !== "dhcp") throw new CliError("--pxe-mode is proxy or dhcp", ExitCode.USAGE);
    const unknownPolicy = (values.unknown as string | undefined) ?? "deny";
    if (!unknownPolicies.includes(unknownPolicy as UnknownPolicy)) throw new CliError("--unknown is deny, approve or allow", ExitCode.USAGE);
    let ranges: IpRange[];
    try {
      ranges = ((values["dhcp-range"] as string[] | undefined) ?? []).map(parseRange);
    } catch (err) {
      throw new CliError((err as Error).message, ExitCode.USAGE);
    }
    if (pxeMode === "dhcp" && !ranges.length) throw new CliError("--pxe-mode dhcp needs --dhcp-range FIRST-LAST (one per PXE link)", ExitCode.USAGE);
    const dhcpRelays = (values["dhcp-relay"] as string[] | undefined) ?? [];
    for (const r of dhcpRelays) if (!isIPv4(r)) throw new CliError(`--dhcp-relay takes a relay agent's IPv4 address, not "${r}"`, ExitCode.USAGE);
    const httpPort = Number((values["pxe-http-port"] as string | undefined) ?? "8080");
    if (!Number.isInteger(httpPort) || httpPort < 0 || httpPort > 65535) throw new CliError("--pxe-http-port must be a port number", ExitCode.USAGE);
    // PXE links first: their addresses go into the server certificate machines check.
    let pxeLinks: PxeLink[] = [];
    try {
      pxeLinks = await waitForLinks(pxeInterfaces, { optional: values["pxe-optional"] === true, say: (line) => process.stderr.write(`${line}\n`) });
    } catch (err) {
      if (err instanceof NoSuchLinkError) throw new CliError(`${err.message}; check --pxe-interface, or add --pxe-optional to start without it`, ExitCode.USAGE);
      throw err;
    }
    await runInit(dataDir, true, process.stderr);
    const site = await openSite(siteOptions(dataDir));
    let tls: { certPem: string; keyPem: string };
    if (values["tls-cert"] || values["tls-key"]) {
      if (!values["tls-cert"] || !values["tls-key"]) throw new CliError("--tls-cert and --tls-key go together", ExitCode.USAGE);
      tls = { certPem: fs.readFileSync(values["tls-cert"] as string, "utf8"), keyPem: fs.readFileSync(values["tls-key"] as string, "utf8") };
    } else {
      const names = ["localhost", "127.0.0.1", "::1", ...((values["public-name"] as string[] | undefined) ?? [])];
      for (const l of [listen, mpListen]) if (!["0.0.0.0", "::"].includes(l.host)) names.push(l.host);
      // Boot scripts send agents to https://<PXE link address>: the certificate must name it.
      for (const l of pxeLinks) names.push(l.address);
      // Before the certificate names it: a name a distribution point holds stays its own.
      const held = await heldByDistributionPoint(site, names);
      if (held) {
        await site.close();
        throw new CliError(`Cannot start the site as "${held.name}": distribution point "${held.dp}" holds that name and a certificate for it; ` +
          `remove it first (slipway dp remove ${held.dp}) or choose another --public-name`, ExitCode.CONFLICT);
      }
      tls = await ensureServerCertificate(site.keys, dataDir, [...new Set(names)]);
    }
    const server = await startSiteServer({ site, host: listen.host, port: listen.port, tls });
    const mp = await startManagementPoint({ site, host: mpListen.host, port: mpListen.port, tls });
    const boot = pxeLinks.length
      ? await startNetworkBoot({ site, interfaces: pxeLinks.map((l) => l.name), mode: pxeMode, unknown: unknownPolicy as UnknownPolicy, ranges, httpPort, relays: dhcpRelays,
        managementPointPort: mp.port, loaderDir: values["ipxe-dir"] as string | undefined })
      : null;
    // The site's names — its certificate's, --public-name, PXE link addresses — are never a distribution point's.
    await recordSiteHostNames(site, [...certificateHostNames(tls.certPem), ...((values["public-name"] as string[] | undefined) ?? []),
      ...(boot?.links.map((l) => l.address) ?? [])]);
    // Tells local CLI invocations where the server is; holds nothing secret.
    const connectHost = ["0.0.0.0", "::"].includes(listen.host) ? "127.0.0.1" : server.host;
    const url = `https://${connectHost.includes(":") ? `[${connectHost}]` : connectHost}:${server.port}`;
    // Where this host serves PXE, for the posture `slipway site` shows (replaces what it announced before).
    await (boot ? announcePxeService(site, { links: boot.links, mode: pxeMode, unknown: unknownPolicy }) : withdrawPxeService(site));
    fs.writeFileSync(path.join(dataDir, "server.json"), JSON.stringify({ url, managementPoint: mp.url, pid: process.pid }) + "\n");
    process.stderr.write(`Slipway is listening on ${server.url} (data in ${dataDir}, database ${site.db.dialect}); management point on ${mp.url}\n`);
    if (boot) process.stderr.write(`PXE (${pxeMode}, unknown computers: ${unknownPolicy}) on ${boot.links.map((l) => `${l.name} ${l.address}`).join(", ")}; boot scripts on port ${boot.http.port}\n`);
    // What is unprotected is said at start (posture: slipway site).
    if (boot) for (const w of (await sitePosture(site)).warnings) process.stderr.write(`${w}\n`);
    const stop = async () => {
      await boot?.close();
      if (boot) await withdrawPxeService(site);
      await mp.close();
      await server.close();
      await site.close();
      process.exit(0);
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    return ExitCode.RUNNING;
  },
};

const auditVerify: Command = {
  summary: "Verify the audit log offline: the hash chain, signatures and head checkpoint",
  async run(args) {
    const { values, positionals } = parse(args, { data: { type: "string" }, json: { type: "boolean" }, expect: { type: "string", multiple: true } });
    if (values.help || positionals[0] !== "verify") {
      throw new CliError("Usage: slipway audit verify [--data DIR] [--expect SEQ:HASH]... [--json]  (slipway audit list talks to the server)", ExitCode.USAGE);
    }
    // Checkpoints kept elsewhere ("#SEQ HASH" as an earlier verify printed it): the one thing
    // that shows a rollback of the database and the data folder together.
    const expected = ((values.expect as string[] | undefined) ?? []).map((e) => {
      const m = /^#?(\d{1,15})[: ]([0-9a-f]{64})$/.exec(e.trim());
      if (!m) throw new CliError(`--expect must be SEQ:HASH as verify prints it (e.g. 42:3fa9…, 64 hex digits), not "${e}"`, ExitCode.USAGE);
      return { seq: Number(m[1]), hash: m[2] };
    });
    const dataDir = dataOption(values.data as string | undefined);
    if (!siteExists(dataDir)) throw new CliError(`No site in ${dataDir}`, ExitCode.NOT_FOUND);
    const site = await openSite({ ...siteOptions(dataDir), maintain: false, log: createLogger({ level: "warn", write: (l) => process.stderr.write(l + "\n") }) });
    try {
      let r = await verifyAuditLog(site.db, site.keys.verifyKey, { head: readHead(dataDir) });
      for (const x of r.ok ? expected : []) {
        const e = await entryAt(site.db, x.seq);
        if (!e || e.hash !== x.hash) {
          r = { ok: false, seq: x.seq, checked: r.ok ? r.count : 0,
            reason: e ? `the entry kept elsewhere as ${x.hash} now has hash ${e.hash}` : "the entry kept elsewhere is missing: the log was cut back" };
          break;
        }
      }
      if (values.json) process.stdout.write(JSON.stringify(r) + "\n");
      else if (r.ok) {
        process.stdout.write(`Audit log intact: ${r.count} entries checked, last #${r.lastSeq} (hash ${r.lastHash})\n`);
        if (r.head) process.stdout.write(`Head checkpoint: #${r.head.seq}, signed, written ${r.head.writtenAt}\n`);
        if (r.uncovered > 0) {
          process.stdout.write(`Note: the last ${r.uncovered} entries come after this folder's checkpoint, which does not vouch for them ` +
            `(written by a process with another data folder, or just before a crash — or the log was cut back to an older checkpoint)\n`);
        }
        // Only a copy kept elsewhere can show a later rollback of the database and the data folder together.
        process.stdout.write(`Keep "#${r.lastSeq} ${r.lastHash}" somewhere else: a later verify must still find that entry\n`);
      } else process.stdout.write(`Audit log TAMPERED at entry #${r.seq}: ${r.reason} (${r.checked} entries checked before it)\n`);
      return r.ok ? ExitCode.OK : ExitCode.VERIFY_FAILED;
    } finally {
      await site.close();
    }
  },
};

const BOOTIMAGE_USAGE = `Usage: slipway bootimage add --name NAME --kernel FILE --initrd FILE [--cmdline ARGS] [--default] [--data DIR] [--json]
       slipway bootimage build [--name deploy] [--default] [--cmdline ARGS] [--kernel-version ABI] [--cache DIR] [--data DIR] [--json]
       slipway bootimage list [--data DIR] [--json]
  The first image added becomes the default.
  build makes the deploy environment: Debian's kernel (apt-get download, nothing is installed), busybox, Node.js,
  the agent, disk tools and boot loader files from this machine, and the site's CA certificate and public signing
  key. It needs the Debian packages busybox-static fdisk e2fsprogs dosfstools extlinux syslinux-common
  systemd-boot-efi zstd (binutils to strip Node). Downloads and the stripped Node are kept in --cache
  (default DIR/cache, or SLIPWAY_CACHE_DIR). Command line default: "${DEFAULT_CMDLINE}".
`;

/** A boot image's name: what boot scripts and `--name` refer to. */
function checkBootImageName(name: string | undefined): string {
  if (!name || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new CliError("--name must be 1-64 letters, digits, . _ -", ExitCode.USAGE);
  return name;
}

function checkCmdline(cmdline: string): string {
  // Boot scripts are public and travel in the clear: a command line is no place for a secret.
  if (cmdline.length > 1024 || /[\u0000-\u001f\u007f]/.test(cmdline)) throw new CliError("--cmdline must be one line of at most 1024 characters", ExitCode.INVALID);
  if (/slipway\.(token|mac|mp)=/.test(cmdline)) throw new CliError("--cmdline must not set slipway.token, slipway.mac or slipway.mp; Slipway adds them", ExitCode.INVALID);
  return cmdline;
}

/**
 * Imports a kernel and initrd into the content store and registers them as a boot image, with
 * its audit entry in the same transaction (`bootimage add` and `bootimage build` alike).
 */
async function registerBootImage(site: Site, dataDir: string, r: {
  name: string; kernel: string; initrd: string; cmdline: string; makeDefault: boolean;
  action: "bootimage.add" | "bootimage.build"; details?: Record<string, unknown>;
}) {
  const blobs = new BlobStore(dataDir);
  const k = await blobs.importFile(r.kernel);
  const i = await blobs.importFile(r.initrd);
  const isDefault = r.makeDefault || (await stores(site.db).bootImages.list()).length === 0;
  const who = `local:${os.userInfo().username}`;
  return site.db.transaction(async (tx) => {
    const img = await stores(tx).bootImages.put({ name: r.name, kernelSha256: k.sha256, kernelSize: k.size, initrdSha256: i.sha256, initrdSize: i.size,
      cmdline: r.cmdline, isDefault, createdBy: who, createdAt: site.now().toISOString() });
    await site.audit.append({ actor: who, action: r.action, object: `bootimage:${r.name}`,
      details: { kernel: k.sha256, initrd: i.sha256, cmdline: r.cmdline, isDefault, ...r.details } }, tx);
    return img;
  });
}

const bootimage: Command = {
  summary: "Build the deploy environment (build), register a kernel and initrd PXE boot scripts boot (add), or list them — on the server's data folder",
  async run(args) {
    const { values, positionals } = parse(args, {
      data: { type: "string" }, name: { type: "string" }, kernel: { type: "string" }, initrd: { type: "string" },
      cmdline: { type: "string" }, default: { type: "boolean" }, json: { type: "boolean" },
      cache: { type: "string" }, "kernel-version": { type: "string" },
    });
    const action = positionals[0];
    if (values.help || (action !== "add" && action !== "list" && action !== "build")) {
      process.stdout.write(BOOTIMAGE_USAGE);
      return values.help ? ExitCode.OK : ExitCode.USAGE;
    }
    const dataDir = dataOption(values.data as string | undefined);
    if (!siteExists(dataDir)) throw new CliError(`No site in ${dataDir}`, ExitCode.NOT_FOUND);
    const site = await openSite({ ...siteOptions(dataDir), log: createLogger({ level: "warn", write: (l) => process.stderr.write(l + "\n") }) });
    try {
      if (action === "list") {
        const list = await stores(site.db).bootImages.list();
        process.stdout.write(values.json ? JSON.stringify(list) + "\n" : list.map((i) => `${i.isDefault ? "*" : " "} ${i.name}  kernel ${i.kernelSha256.slice(0, 12)} (${i.kernelSize} B)  initrd ${i.initrdSha256.slice(0, 12)} (${i.initrdSize} B)  ${i.cmdline}`).join("\n") + "\n");
        return ExitCode.OK;
      }
      if (action === "build") return await buildAndRegister(site, dataDir, values);
      const name = checkBootImageName(values.name as string | undefined);
      const kernel = values.kernel as string | undefined;
      const initrd = values.initrd as string | undefined;
      if (!kernel || !initrd) throw new CliError("--kernel FILE and --initrd FILE are required", ExitCode.USAGE);
      for (const f of [kernel, initrd]) if (!fs.existsSync(f) || !fs.statSync(f).isFile()) throw new CliError(`Cannot read ${f}: not a file`, ExitCode.NOT_FOUND);
      const cmdline = checkCmdline((values.cmdline as string | undefined) ?? "");
      const img = await registerBootImage(site, dataDir, { name, kernel, initrd, cmdline, makeDefault: Boolean(values.default), action: "bootimage.add" });
      process.stdout.write(values.json ? JSON.stringify(img) + "\n" : `Registered boot image "${name}"${img.isDefault ? " (default)" : ""}: kernel sha256:${img.kernelSha256}, initrd sha256:${img.initrdSha256}\n`);
      return ExitCode.OK;
    } finally {
      await site.close();
    }
  },
};

/** `bootimage build`: the deploy environment with this site's trust pinned, registered like `add`. */
async function buildAndRegister(site: Site, dataDir: string, values: ParsedArgs["values"]): Promise<number> {
  const name = checkBootImageName((values.name as string | undefined) ?? "deploy");
  const cmdline = checkCmdline((values.cmdline as string | undefined) ?? DEFAULT_CMDLINE);
  const kernelVersion = values["kernel-version"] as string | undefined;
  if (kernelVersion !== undefined && !/^\d[\w.+-]*-amd64$/.test(kernelVersion)) throw new CliError("--kernel-version must be a Debian kernel ABI such as 6.1.0-56-amd64", ExitCode.USAGE);
  const cacheDir = path.resolve((values.cache as string | undefined) ?? (process.env.SLIPWAY_CACHE_DIR || path.join(dataDir, "cache")));
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  const outDir = fs.mkdtempSync(path.join(cacheDir, ".build-"));
  const started = Date.now();
  try {
    let image: BootImage;
    try {
      image = await buildBootImage({
        cacheDir, outDir, kernelVersion,
        caCertPem: site.keys.ca.certPem,
        signingPublicKeyPem: site.keys.verifyKey.export({ type: "spki", format: "pem" }) as string,
        onProgress: (line) => process.stderr.write(`[bootimage] ${line}\n`),
      });
    } catch (err) {
      throw new CliError(`Cannot build boot image "${name}": ${(err as Error).message}`, ExitCode.FAILURE);
    }
    const m = image.manifest;
    const img = await registerBootImage(site, dataDir, {
      name, kernel: image.kernel, initrd: image.initrd, cmdline, makeDefault: Boolean(values.default), action: "bootimage.build",
      details: { kernelVersion: m.kernel.version, kernelPackage: `${m.kernel.package} ${m.kernel.packageVersion}`, kernelPackageSha256: m.kernel.debSha256,
        node: m.node, agent: m.agent.sha256, trust: m.trust },
    });
    process.stderr.write(`[bootimage] built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    process.stdout.write(values.json ? JSON.stringify({ ...img, kernelVersion: m.kernel.version, manifest: m }) + "\n"
      : `Built and registered boot image "${name}"${img.isDefault ? " (default)" : ""}: kernel ${m.kernel.version} sha256:${img.kernelSha256}, initrd sha256:${img.initrdSha256} (${img.initrdSize} B)\n`);
    return ExitCode.OK;
  } finally {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
}

export const serverCommands: Record<string, Command> = { init, up, bootimage, "audit-verify": auditVerify };
