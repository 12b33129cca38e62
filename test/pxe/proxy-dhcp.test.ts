/**
 * ProxyDHCP beside a separate DHCP server, the default mode: dnsmasq hands out addresses only
 * (no boot options), Slipway answers PXE clients with boot information only, and a BIOS
 * machine boots to the deploy environment with its one-time token.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import type { ChildProcess } from "node:child_process";
import { createLab, waitForOutput, type Lab, type Link } from "../lab/netns.ts";
import { ensureLabArtifacts } from "../lab/artifacts.ts";
import { startVm } from "../lab/qemu.ts";
import { tempDir } from "../support/site.ts";

if (process.getuid?.() !== 0) throw new Error("the network boot tests need root (network namespaces): run scripts/test.sh as root");

const bin = path.resolve(import.meta.dirname, "../../bin/slipway");
const PASSWORD = "Proxy-Dhcp-Test-Passphrase-1";

describe("ProxyDHCP beside the site's DHCP server", () => {
  let lab: Lab;
  let link: Link;
  let slipway: ChildProcess;
  let dataDir = "";
  let log = "";
  before(async () => {
    const art = await ensureLabArtifacts();
    lab = await createLab({ name: "proxy" });
    link = await lab.addLink("br0", { cidr: "10.78.20.1/24" });
    await lab.startRouterAdvertisements(link);
    // The site's DHCP server: addresses only, knows nothing of PXE.
    const dhcp = lab.spawn("/usr/sbin/dnsmasq", ["--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=br0", "--bind-interfaces",
      "--dhcp-range=10.78.20.100,10.78.20.150,1h", "--no-ping", "--user=root", "--group=root", "--log-facility=-",
      `--dhcp-leasefile=${path.join(lab.dir, "site-dhcp.leases")}`, `--pid-file=${path.join(lab.dir, "site-dhcp.pid")}`]);
    await waitForOutput(dhcp, /started, version/, 10_000, "site DHCP server");
    dataDir = tempDir("slipway-proxy-");
    // Set up the site before starting it: an approved machine and the boot image.
    const init = await lab.exec(bin, ["init", "--data", dataDir], { env: { ...process.env, SLIPWAY_ADMIN_PASSWORD: PASSWORD, SLIPWAY_DATABASE_URL: "" } });
    assert.equal(init.code, 0);
    const added = await lab.exec(bin, ["bootimage", "add", "--data", dataDir, "--name", "marker", "--kernel", art.kernel, "--initrd", art.initrd, "--cmdline", "console=ttyS0"]);
    assert.equal(added.code, 0);
    slipway = lab.spawn(bin, ["up", "--data", dataDir, "--listen", "127.0.0.1:8443", "--pxe-interface", "br0", "--unknown", "allow"],
      { env: { ...process.env, SLIPWAY_DATABASE_URL: "" } });
    slipway.stdout?.on("data", (d) => (log += d));
    slipway.stderr?.on("data", (d) => (log += d));
    await waitForOutput(slipway, /PXE \(proxy/, 60_000, "slipway up");
    // A machine no deployment targets is sent to its disk; this one must get the boot image.
    // The API listens inside the namespace only, so the set-up runs there too.
    const setup = await lab.exec(process.execPath, ["--disable-warning=ExperimentalWarning", path.resolve(import.meta.dirname, "../support/deploy-to-everyone.ts"),
      "https://127.0.0.1:8443", path.join(dataDir, "keys/ca.crt"), PASSWORD], { allowFailure: true });
    assert.equal(setup.code, 0, setup.stderr);
  });
  after(async () => {
    if (slipway) await lab.stop(slipway);
    await lab?.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("a BIOS machine gets its address from the site's server and its boot from Slipway", { timeout: 240_000 }, async (t) => {
    const tap = await link.addTap("tap0");
    const vm = await startVm(lab, { tap, mac: "52:54:00:33:00:01", uuid: "6f1f4a52-1c9b-4f7e-9d7e-000000000201", firmware: "bios" });
    try {
      const m = await vm.waitForSerial(/SLIPWAY-MARKER cmdline=([^\r\n]*)/, { timeoutMs: 180_000 });
      t.diagnostic(`ProxyDHCP BIOS boot: QEMU start -> deploy environment in ${(vm.elapsedMs() / 1000).toFixed(1)} s`);
      assert.match(m[1], /slipway\.token=swb_/);
      // The address came from the site's DHCP server's range, the boot file from Slipway.
      assert.match(vm.serial(), /10\.78\.20\.1[0-4]\d/, "iPXE shows the address dnsmasq gave");
      assert.match(log, /pxe responder listening/);
    } finally {
      await vm.kill();
    }
  });
});
