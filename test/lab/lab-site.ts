/**
 * A Slipway site serving PXE on a lab link, set up the way the README says, for the end-to-end
 * deployment tests: a namespace with a bridge (router advertisements on, so iPXE does not wait
 * for IPv6), an admin link from the host, `slipway init`, `bootimage build` (the kernel package
 * cached with the lab's), `image import` of the given images, `slipway up` with PXE in lab DHCP
 * mode on the bridge, and an administrator session whose one-time password is changed.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import type { ChildProcess } from "node:child_process";
import { createLab, run, waitForOutput, type Lab, type Link } from "./netns.ts";
import { httpsRequest, tempDir } from "../support/site.ts";

const root = path.resolve(import.meta.dirname, "../..");
export const SLIPWAY_BIN = path.join(root, "bin/slipway");

export type LabSite = {
  lab: Lab; link: Link; dataDir: string; api: string; ca: string; token: string;
  /** What `slipway up` printed so far. */
  log(): string;
  admin(method: string, p: string, body?: unknown): Promise<{ status: number; body: any; text: string }>;
  close(): Promise<void>;
};

export async function startLabSite(opts: {
  /** The namespace's name part, and the data folder's prefix. */
  name: string;
  /** The lab link's /24, e.g. "10.82.0" (the site is .1, lab DHCP hands out .100–.150). */
  subnet: string;
  /** The first two octets of the admin link's /30s, e.g. "10.81". */
  adminPrefix: string;
  password: string;
  images: [name: string, file: string][];
}): Promise<LabSite> {
  const lab = await createLab({ name: opts.name });
  let server: ChildProcess | undefined;
  let dataDir = "";
  let log = "";
  const close = async () => {
    if (server) await lab.stop(server);
    await lab.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const link = await lab.addLink("br0", { cidr: `${opts.subnet}.1/24` });
    await lab.startRouterAdvertisements(link);
    const adminNet = `${opts.adminPrefix}.${randomBytes(1)[0] % 250}`;
    const up = `sl${opts.name.slice(0, 2)}${randomBytes(3).toString("hex")}`;
    await run("ip", ["link", "add", up, "type", "veth", "peer", "name", "adm0", "netns", lab.name]);
    await run("ip", ["addr", "add", `${adminNet}.1/30`, "dev", up]);
    await run("ip", ["link", "set", up, "up"]);
    await lab.exec("ip", ["addr", "add", `${adminNet}.2/30`, "dev", "adm0"]);
    await lab.exec("ip", ["link", "set", "adm0", "up"]);

    dataDir = tempDir(`slipway-${opts.name}-`);
    const env = { ...process.env, SLIPWAY_ADMIN_PASSWORD: opts.password, SLIPWAY_DATABASE_URL: "", SLIPWAY_CACHE_DIR: path.join(root, ".cache/lab") };
    // The documented order: initialise, build the deploy environment, import images, then serve.
    await run(SLIPWAY_BIN, ["init", "--data", dataDir], { env });
    const built = await run(SLIPWAY_BIN, ["bootimage", "build", "--data", dataDir, "--name", "deploy", "--default"], { env, timeoutMs: 900_000 });
    if (!/deploy/.test(built.stdout + built.stderr)) throw new Error(`bootimage build said nothing of "deploy": ${built.stdout}${built.stderr}`);
    for (const [name, file] of opts.images) {
      const r = await run(SLIPWAY_BIN, ["image", "import", file, "--name", name, "--data", dataDir], { env, timeoutMs: 300_000 });
      if (!/sha256:[0-9a-f]{64}/.test(r.stdout)) throw new Error(`image import ${name} printed no digest: ${r.stdout}`);
    }
    server = lab.spawn(SLIPWAY_BIN, ["up", "--data", dataDir, "--listen", `${adminNet}.2:8443`, "--mp-listen", "0.0.0.0:8444",
      "--pxe-interface", "br0", "--pxe-mode", "dhcp", "--dhcp-range", `${opts.subnet}.100-${opts.subnet}.150`, "--unknown", "deny"], { env });
    server.stdout?.on("data", (d) => (log += d));
    server.stderr?.on("data", (d) => (log += d));
    await waitForOutput(server, /PXE \(dhcp/, 60_000, "slipway up");
    const api = `https://${adminNet}.2:8443`;
    const ca = fs.readFileSync(path.join(dataDir, "keys/ca.crt"), "utf8");
    const session = await httpsRequest(api, ca, "POST", "/api/v1/sessions", { body: { username: "admin", password: opts.password } });
    const token = session.body?.token as string;
    const changed = await httpsRequest(api, ca, "POST", "/api/v1/me/password", { token, body: { currentPassword: opts.password, newPassword: `${opts.password}-2` } });
    if (changed.status !== 204) throw new Error(`changing the one-time password answered ${changed.status} ${changed.text}`);
    return {
      lab, link, dataDir, api, ca, token, log: () => log, close,
      admin: (method, p, body) => httpsRequest(api, ca, method, p, { token, body }),
    };
  } catch (err) {
    await close();
    throw err;
  }
}
