/**
 * `slipway up --role distribution`: a distribution point on its own host. It needs the
 * management point's URL, the site CA to pin, its own data folder, and — the first time only —
 * the one-time enrollment secret from `slipway dp add`, read from a file.
 */
import fs from "node:fs";
import path from "node:path";
import { siteExists } from "../site/site.ts";
import { DEFAULT_POLL_SECONDS, readSecretFile, startDistributionPoint } from "../roles/distribution/distribution-point.ts";
import { createLogger } from "../log.ts";
import { dataOption, integer, parseListen, type ParsedArgs } from "./arguments.ts";
import { DP_MAX_POLL_SECONDS, DP_SILENT_AFTER_MS } from "../domain/distribution-point.ts";
import { CliError, ExitCode } from "./command.ts";

export const DISTRIBUTION_USAGE = `Usage: slipway up --role distribution --site MP_URL --ca CA_FILE --data DIR [--listen HOST:PORT]
                  [--public-name NAME]... [--enroll-secret-file FILE] [--poll-seconds N]
  Runs a distribution point: it enrolls with the one-time secret from "slipway dp add" (first start only;
  keys and certificates stay in DIR, mode 0600), replicates the content assigned to it from the site
  (every chunk verified against the signed manifest) and serves it to devices over mutual TLS.
  --site is the management point (https://HOST:8444), --ca the site CA certificate it pins.
  --listen defaults to 0.0.0.0 and the port of the URL it was registered with; --public-name limits
  its server certificate to some of the registered host names; --poll-seconds defaults to ${DEFAULT_POLL_SECONDS}
  (at most ${DP_MAX_POLL_SECONDS}); a distribution point the site has not heard from for ${DP_SILENT_AFTER_MS / 60_000} minutes is
  left out of policies' content sources until it polls again.
`;

export async function upDistributionPoint(values: ParsedArgs["values"]): Promise<number> {
  for (const o of ["mp-listen", "tls-cert", "tls-key", "pxe-interface", "pxe-mode", "dhcp-range", "unknown", "pxe-http-port", "ipxe-dir"]) {
    if (values[o] !== undefined) throw new CliError(`--${o} is for the site role, not --role distribution`, ExitCode.USAGE);
  }
  const siteUrl = values.site as string | undefined;
  const caFile = values.ca as string | undefined;
  if (!siteUrl || !caFile) throw new CliError("--role distribution needs --site MP_URL and --ca CA_FILE (see slipway up --help)", ExitCode.USAGE);
  let site: URL;
  try {
    site = new URL(siteUrl);
  } catch {
    throw new CliError(`--site must be the management point's https URL, not "${siteUrl}"`, ExitCode.USAGE);
  }
  if (site.protocol !== "https:") throw new CliError("--site must use https", ExitCode.USAGE);
  let caPem: string;
  try {
    caPem = fs.readFileSync(caFile, "utf8");
  } catch (err) {
    throw new CliError(`Cannot read the site CA ${caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.USAGE);
  }
  const dataDir = dataOption(values.data as string | undefined);
  if (siteExists(dataDir)) throw new CliError(`${dataDir} holds a site; a distribution point needs a data folder of its own`, ExitCode.USAGE);
  const listen = values.listen ? parseListen(values.listen as string) : undefined;
  const pollSeconds = values["poll-seconds"] ? integer(values["poll-seconds"] as string, "--poll-seconds", 1, DP_MAX_POLL_SECONDS) : DEFAULT_POLL_SECONDS;
  const secretFile = values["enroll-secret-file"] as string | undefined;
  let enrollSecret: string | undefined;
  if (secretFile) {
    try {
      enrollSecret = readSecretFile(secretFile);
    } catch (err) {
      throw new CliError((err as Error).message, ExitCode.USAGE);
    }
  }
  const log = createLogger({ level: (process.env.SLIPWAY_LOG_LEVEL as never) ?? "info", base: { role: "distribution" } });
  let dp;
  try {
    dp = await startDistributionPoint({
      dataDir: path.resolve(dataDir), siteUrl: site.origin, caPem, host: listen?.host ?? "0.0.0.0", port: listen?.port,
      publicNames: (values["public-name"] as string[] | undefined) ?? [], enrollSecret, pollSeconds, log,
    });
  } catch (err) {
    throw new CliError(`Cannot start the distribution point: ${(err as Error).message}`, ExitCode.FAILURE);
  }
  process.stderr.write(`Slipway distribution point "${dp.identity.name}" is listening on ${dp.url} (devices reach it at ${dp.identity.url}; data in ${dataDir}); site ${site.origin}, polling every ${pollSeconds} s\n`);
  const stop = async () => {
    await dp.close();
    process.exit(0);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return ExitCode.RUNNING;
}
