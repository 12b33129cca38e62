/**
 * Writes the host name and network settings into the applied system, from variables:
 * /etc/hostname, /etc/hosts, and an ifupdown stanza in /etc/network/interfaces.d/slipway.
 */
import { mkdirSync, readFileSync, existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { isIPv4 } from "node:net";
import type { StepModule } from "../engine.ts";

type Network =
  | { mode: "dhcp"; interface?: string }
  | { mode: "static"; interface?: string; address: string; gateway?: string; dns?: string[] };

/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. */
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IFACE = /^[A-Za-z0-9_.-]{1,15}$/;

export const configureOs: StepModule = {
  type: "configure-os",
  async run(params: { hostname?: string; network?: Network }, ctx) {
    const root = ctx.state.target;
    if (!root) return { status: "failed", message: "Cannot configure the system: apply an image first (no applied system is mounted)" };
    const done: string[] = [];
    if (params.hostname !== undefined) {
      const name = ctx.expand(params.hostname);
      if (!HOSTNAME.test(name)) return { status: "failed", message: `Cannot set the host name to "${name}": use letters, digits and hyphens (RFC 1123)` };
      mkdirSync(path.join(root, "etc"), { recursive: true });
      writeFileSync(path.join(root, "etc/hostname"), name + "\n");
      const hostsFile = path.join(root, "etc/hosts");
      const short = name.split(".")[0];
      const others = existsSync(hostsFile) ? readFileSync(hostsFile, "utf8").split("\n").filter((l) => l.trim() && !/^127\.0\.1\.1\s/.test(l)) : ["127.0.0.1\tlocalhost"];
      writeFileSync(hostsFile, [...others, `127.0.1.1\t${name}${short !== name ? `\t${short}` : ""}`, ""].join("\n"));
      done.push(`host name ${name}`);
    }
    if (params.network) {
      const n = params.network;
      const iface = ctx.expand(n.interface ?? "eth0");
      if (!IFACE.test(iface)) return { status: "failed", message: `Cannot configure interface "${iface}": not an interface name` };
      const lines = [`auto ${iface}`];
      if (n.mode === "dhcp") {
        lines.push(`iface ${iface} inet dhcp`);
      } else {
        const address = ctx.expand(n.address);
        const [ip, prefix] = address.split("/");
        if (!isIPv4(ip) || !/^\d{1,2}$/.test(prefix ?? "") || Number(prefix) > 32) return { status: "failed", message: `Cannot configure ${iface}: "${address}" is not an IPv4 address with a prefix such as 10.0.0.5/24` };
        lines.push(`iface ${iface} inet static`, `    address ${address}`);
        if (n.gateway) {
          const gw = ctx.expand(n.gateway);
          if (!isIPv4(gw)) return { status: "failed", message: `Cannot configure ${iface}: gateway "${gw}" is not an IPv4 address` };
          lines.push(`    gateway ${gw}`);
        }
        const dns = (n.dns ?? []).map((d) => ctx.expand(d));
        for (const d of dns) if (!isIPv4(d)) return { status: "failed", message: `Cannot configure ${iface}: DNS server "${d}" is not an IPv4 address` };
        if (dns.length) lines.push(`    dns-nameservers ${dns.join(" ")}`);
      }
      mkdirSync(path.join(root, "etc/network/interfaces.d"), { recursive: true });
      writeFileSync(path.join(root, "etc/network/interfaces.d/slipway"), lines.join("\n") + "\n");
      done.push(`${iface} ${n.mode}`);
    }
    return { status: "succeeded", message: done.join(", ") || "nothing to change" };
  },
};
