/**
 * Checks that the Debian packages the lab harness relies on are installed. The harness never
 * installs anything itself: `scripts/setup.sh --test` does. A missing package fails with an
 * error that names it.
 */
import { execFileSync } from "node:child_process";
import { accessSync, constants } from "node:fs";

/** What the harness needs, by Debian package, with one file that proves each is there. */
export const LAB_PACKAGES = {
  "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
  "ipxe-qemu": "/usr/lib/ipxe/qemu/efi-e1000.rom",
  ipxe: "/usr/lib/ipxe/undionly.kpxe",
  ovmf: "/usr/share/OVMF/OVMF_CODE_4M.fd",
  "busybox-static": "/bin/busybox",
  "dnsmasq-base": "/usr/sbin/dnsmasq",
  tshark: "/usr/bin/dumpcap",
  iproute2: "/usr/bin/ip",
} as const;

export type LabPackage = keyof typeof LAB_PACKAGES;

const checked = new Set<string>();

function installedPackages(names: string[]): Set<string> {
  let out = "";
  try {
    out = execFileSync("dpkg-query", ["-W", "-f=${Package} ${db:Status-Status}\\n", ...names], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    });
  } catch (e) {
    // dpkg-query exits 1 when a name is unknown but still prints the others.
    out = String((e as { stdout?: string }).stdout ?? "");
  }
  const ok = new Set<string>();
  for (const line of out.split("\n")) {
    const [pkg, status] = line.trim().split(" ");
    if (pkg && status === "installed") ok.add(pkg.replace(/:.*$/, ""));
  }
  return ok;
}

/** Throws naming every missing package (and how to install them) unless all are installed. */
export function requirePackages(...names: LabPackage[]): void {
  const todo = names.filter((n) => !checked.has(n));
  if (todo.length === 0) return;
  const installed = installedPackages(todo);
  const missing: string[] = [];
  for (const name of todo) {
    let present = installed.has(name);
    if (present) {
      try {
        accessSync(LAB_PACKAGES[name], constants.R_OK);
      } catch {
        present = false;
      }
    }
    if (present) checked.add(name);
    else missing.push(`${name} (provides ${LAB_PACKAGES[name]})`);
  }
  if (missing.length > 0) {
    throw new Error(
      `the lab harness needs Debian package(s) not installed: ${missing.join(", ")}; ` +
        `run scripts/setup.sh --test (or apt-get install ${missing.map((m) => m.split(" ")[0]).join(" ")})`,
    );
  }
}
