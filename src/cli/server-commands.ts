/** Commands that act on a site's data folder: init, up, audit verify. */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { initSite, openSite, siteExists, type OpenSiteOptions } from "../roles/site/site.ts";
import { startSiteServer } from "../roles/site/server.ts";
import { startManagementPoint } from "../roles/management/server.ts";
import { startNetworkBoot } from "../roles/distribution/network-boot.ts";
import { unknownPolicies, type UnknownPolicy } from "../domain/pxe.ts";
import { parseRange, type IpRange } from "../domain/ip-pool.ts";
import { ensureServerCertificate } from "../security/site-keys.ts";
import { readHead, verifyAuditLog } from "../storage/audit-store.ts";
import { createLogger } from "../log.ts";
import os from "node:os";
import { stores } from "../storage/stores.ts";
import { BlobStore } from "../storage/blob-store.ts";
import { CliError, ExitCode, type Command } from "./command.ts";

export const DEFAULT_LISTEN = "127.0.0.1:8443";
export const DEFAULT_MP_LISTEN = "127.0.0.1:8444";

function dataOption(v: string | undefined): string {
  return path.resolve(v ?? process.env.SLIPWAY_DATA ?? "./var");
}

function siteOptions(dataDir: string): OpenSiteOptions {
  return { dataDir, databaseUrl: process.env.SLIPWAY_DATABASE_URL || undefined, log: createLogger({ level: (process.env.SLIPWAY_LOG_LEVEL as never) ?? "info" }) };
}

type Options = Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>;
type Parsed = { values: Record<string, string | boolean | string[] | boolean[] | undefined>; positionals: string[] };

export function parse(args: string[], options: Options): Parsed {
  try {
    return parseArgs({ args, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals: true, strict: true }) as Parsed;
  } catch (err) {
    throw new CliError((err as Error).message, ExitCode.USAGE);
  }
}

/** `HOST:PORT`, `[v6]:PORT` or `:PORT`. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new CliError(`--listen must be HOST:PORT, not "${text}"`, ExitCode.USAGE);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
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
  summary: "Start the site server (initializes an empty data folder first)",
  async run(args) {
    const { values } = parse(args, {
      data: { type: "string" }, listen: { type: "string" }, "mp-listen": { type: "string" }, "tls-cert": { type: "string" }, "tls-key": { type: "string" },
      "public-name": { type: "string", multiple: true },
      "pxe-interface": { type: "string", multiple: true }, "pxe-mode": { type: "string" }, "dhcp-range": { type: "string", multiple: true },
      unknown: { type: "string" }, "pxe-http-port": { type: "string" }, "ipxe-dir": { type: "string" },
    });
    if (values.help) {
      process.stdout.write(`Usage: slipway up [--data DIR] [--listen HOST:PORT] [--mp-listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [--public-name NAME]...
                  [--pxe-interface IF]... [--pxe-mode proxy|dhcp] [--dhcp-range FIRST-LAST] [--unknown deny|approve|allow] [--pxe-http-port N]
  The admin API listens on ${DEFAULT_LISTEN} and the management point (mutual TLS, for machines) on ${DEFAULT_MP_LISTEN} by default;
  with --pxe-interface the management point listens on all addresses (0.0.0.0:8444) unless --mp-listen says otherwise.
  PXE answers only on the interfaces named: ProxyDHCP beside your DHCP server (default), or full DHCP with --pxe-mode dhcp
  and --dhcp-range. Unknown computers: deny (default), approve (recorded as pending, boot once approved) or allow.\n`);
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
    const httpPort = Number((values["pxe-http-port"] as string | undefined) ?? "8080");
    if (!Number.isInteger(httpPort) || httpPort < 0 || httpPort > 65535) throw new CliError("--pxe-http-port must be a port number", ExitCode.USAGE);
    await runInit(dataDir, true, process.stderr);
    const site = await openSite(siteOptions(dataDir));
    let tls: { certPem: string; keyPem: string };
    if (values["tls-cert"] || values["tls-key"]) {
      if (!values["tls-cert"] || !values["tls-key"]) throw new CliError("--tls-cert and --tls-key go together", ExitCode.USAGE);
      tls = { certPem: fs.readFileSync(values["tls-cert"] as string, "utf8"), keyPem: fs.readFileSync(values["tls-key"] as string, "utf8") };
    } else {
      const names = ["localhost", "127.0.0.1", "::1", ...((values["public-name"] as string[] | undefined) ?? [])];
      for (const l of [listen, mpListen]) if (!["0.0.0.0", "::"].includes(l.host)) names.push(l.host);
      tls = await ensureServerCertificate(site.keys, dataDir, [...new Set(names)]);
    }
    const server = await startSiteServer({ site, host: listen.host, port: listen.port, tls });
    const mp = await startManagementPoint({ site, host: mpListen.host, port: mpListen.port, tls });
    const boot = pxeInterfaces.length
      ? await startNetworkBoot({ site, interfaces: pxeInterfaces, mode: pxeMode, unknown: unknownPolicy as UnknownPolicy, ranges, httpPort,
        managementPointPort: mp.port, loaderDir: values["ipxe-dir"] as string | undefined })
      : null;
    // Tells local CLI invocations where the server is; holds nothing secret.
    const connectHost = ["0.0.0.0", "::"].includes(listen.host) ? "127.0.0.1" : server.host;
    const url = `https://${connectHost.includes(":") ? `[${connectHost}]` : connectHost}:${server.port}`;
    fs.writeFileSync(path.join(dataDir, "server.json"), JSON.stringify({ url, managementPoint: mp.url, pid: process.pid }) + "\n");
    process.stderr.write(`Slipway is listening on ${server.url} (data in ${dataDir}, database ${site.db.dialect}); management point on ${mp.url}\n`);
    if (boot) process.stderr.write(`PXE (${pxeMode}, unknown computers: ${unknownPolicy}) on ${boot.links.map((l) => `${l.name} ${l.address}`).join(", ")}; boot scripts on port ${boot.http.port}\n`);
    const stop = async () => {
      await boot?.close();
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
    const { values, positionals } = parse(args, { data: { type: "string" }, json: { type: "boolean" } });
    if (values.help || positionals[0] !== "verify") {
      throw new CliError("Usage: slipway audit verify [--data DIR] [--json]  (slipway audit list talks to the server)", ExitCode.USAGE);
    }
    const dataDir = dataOption(values.data as string | undefined);
    if (!siteExists(dataDir)) throw new CliError(`No site in ${dataDir}`, ExitCode.NOT_FOUND);
    const site = await openSite({ ...siteOptions(dataDir), maintain: false, log: createLogger({ level: "warn", write: (l) => process.stderr.write(l + "\n") }) });
    try {
      const r = await verifyAuditLog(site.db, site.keys.verifyKey, readHead(dataDir));
      if (values.json) process.stdout.write(JSON.stringify(r) + "\n");
      else if (r.ok) process.stdout.write(`Audit log intact: ${r.count} entries, last #${r.lastSeq}\n`);
      else process.stdout.write(`Audit log TAMPERED at entry #${r.seq}: ${r.reason}\n`);
      return r.ok ? ExitCode.OK : ExitCode.VERIFY_FAILED;
    } finally {
      await site.close();
    }
  },
};

const bootimage: Command = {
  summary: "Register the kernel and initrd PXE boot scripts boot (add), or list them — on the server's data folder",
  async run(args) {
    const { values, positionals } = parse(args, {
      data: { type: "string" }, name: { type: "string" }, kernel: { type: "string" }, initrd: { type: "string" },
      cmdline: { type: "string" }, default: { type: "boolean" }, json: { type: "boolean" },
    });
    const action = positionals[0];
    if (values.help || (action !== "add" && action !== "list")) {
      process.stdout.write("Usage: slipway bootimage add --name NAME --kernel FILE --initrd FILE [--cmdline ARGS] [--default] [--data DIR]\n       slipway bootimage list [--data DIR] [--json]\n  The first image added becomes the default.\n");
      return values.help ? ExitCode.OK : ExitCode.USAGE;
    }
    const dataDir = dataOption(values.data as string | undefined);
    if (!siteExists(dataDir)) throw new CliError(`No site in ${dataDir}`, ExitCode.NOT_FOUND);
    const site = await openSite({ ...siteOptions(dataDir), log: createLogger({ level: "warn", write: (l) => process.stderr.write(l + "\n") }) });
    try {
      const images = stores(site.db).bootImages;
      if (action === "list") {
        const list = await images.list();
        process.stdout.write(values.json ? JSON.stringify(list) + "\n" : list.map((i) => `${i.isDefault ? "*" : " "} ${i.name}  kernel ${i.kernelSha256.slice(0, 12)} (${i.kernelSize} B)  initrd ${i.initrdSha256.slice(0, 12)} (${i.initrdSize} B)  ${i.cmdline}`).join("\n") + "\n");
        return ExitCode.OK;
      }
      const name = values.name as string | undefined;
      const kernel = values.kernel as string | undefined;
      const initrd = values.initrd as string | undefined;
      if (!name || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) throw new CliError("--name must be 1-64 letters, digits, . _ -", ExitCode.USAGE);
      if (!kernel || !initrd) throw new CliError("--kernel FILE and --initrd FILE are required", ExitCode.USAGE);
      for (const f of [kernel, initrd]) if (!fs.existsSync(f) || !fs.statSync(f).isFile()) throw new CliError(`Cannot read ${f}: not a file`, ExitCode.NOT_FOUND);
      const cmdline = (values.cmdline as string | undefined) ?? "";
      // Boot scripts are public and travel in the clear: a command line is no place for a secret.
      if (cmdline.length > 1024 || /[\u0000-\u001f\u007f]/.test(cmdline)) throw new CliError("--cmdline must be one line of at most 1024 characters", ExitCode.INVALID);
      if (/slipway\.(token|mac|mp)=/.test(cmdline)) throw new CliError("--cmdline must not set slipway.token, slipway.mac or slipway.mp; Slipway adds them", ExitCode.INVALID);
      const blobs = new BlobStore(dataDir);
      const k = await blobs.importFile(kernel);
      const i = await blobs.importFile(initrd);
      const isDefault = Boolean(values.default) || (await images.list()).length === 0;
      const who = `local:${os.userInfo().username}`;
      const img = await site.db.transaction(async (tx) => {
        const r = await stores(tx).bootImages.put({ name, kernelSha256: k.sha256, kernelSize: k.size, initrdSha256: i.sha256, initrdSize: i.size,
          cmdline, isDefault, createdBy: who, createdAt: site.now().toISOString() });
        await site.audit.append({ actor: who, action: "bootimage.add", object: `bootimage:${name}`, details: { kernel: k.sha256, initrd: i.sha256, cmdline, isDefault } }, tx);
        return r;
      });
      process.stdout.write(values.json ? JSON.stringify(img) + "\n" : `Registered boot image "${name}"${img.isDefault ? " (default)" : ""}: kernel sha256:${k.sha256}, initrd sha256:${i.sha256}\n`);
      return ExitCode.OK;
    } finally {
      await site.close();
    }
  },
};

export const serverCommands: Record<string, Command> = { init, up, bootimage, "audit-verify": auditVerify };
