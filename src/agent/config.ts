/**
 * What the agent starts from: the kernel command line the boot script wrote (boot token, MAC,
 * management point) and the trust pinned in its boot image (the site CA and the site's public
 * signing key). Nothing here is secret: the boot token is single-use and bound to this machine.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";

export type AgentConfig = {
  managementPoint: string;
  token: string | null;
  mac: string | null;
  bootPath: "pxe" | "media";
  /** A deployment to run when the policy offers several (`slipway.deployment=ID`). */
  deployment: string | null;
  caPem: string;
  signingKey: KeyObject;
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** `key=value` words of a kernel command line (the last one of a key wins, as the kernel does). */
export function parseCmdline(cmdline: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const word of cmdline.trim().split(/\s+/)) {
    const eq = word.indexOf("=");
    if (eq > 0) out.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return out;
}

export function loadConfig(opts: { configDir: string; cmdline: string }): AgentConfig {
  const args = parseCmdline(opts.cmdline);
  const mp = args.get("slipway.mp");
  if (!mp) throw new ConfigError("Cannot start: the kernel command line has no slipway.mp= (boot this image through Slipway)");
  let url: URL;
  try {
    url = new URL(mp);
  } catch {
    throw new ConfigError(`Cannot start: slipway.mp=${mp} is not a URL`);
  }
  if (url.protocol !== "https:") throw new ConfigError(`Cannot start: the management point must be https://, not ${url.protocol}`);
  const read = (name: string) => {
    try {
      return readFileSync(path.join(opts.configDir, name), "utf8");
    } catch {
      throw new ConfigError(`Cannot start: the boot image has no ${path.join(opts.configDir, name)}`);
    }
  };
  const bootPath = args.get("slipway.boot") === "media" ? "media" : "pxe";
  return {
    managementPoint: url.origin,
    token: args.get("slipway.token") ?? null,
    mac: args.get("slipway.mac")?.toLowerCase() ?? null,
    bootPath,
    deployment: args.get("slipway.deployment") ?? null,
    caPem: read("ca.pem"),
    signingKey: createPublicKey(read("signing-key.pub.pem")),
  };
}
