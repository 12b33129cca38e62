/**
 * Proves the lab harness itself, before Slipway is put in front of it: a VM boots a kernel
 * directly to the initramfs marker, and a BIOS machine network-boots through the e1000's iPXE
 * ROM against a reference responder (dnsmasq as DHCP + TFTP, inside the lab namespace) to the
 * same marker and a DHCP lease of its own. VMs run one after another (TCG, 2 cores).
 */
import assert from "node:assert/strict";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ensureLabArtifacts, type LabArtifacts } from "./artifacts.ts";
import { countPackets, countPcapRecords, createLab, waitForOutput, type Lab, type Link, type Tap } from "./netns.ts";
import { requirePackages } from "./packages.ts";
import { startVm, type Vm } from "./qemu.ts";

// Network namespaces and taps need root; fail loudly rather than pass without running.
if (process.getuid?.() !== 0) throw new Error("the lab tests need root (network namespaces, taps): run scripts/test.sh as root");

const BOOT_TIMEOUT_MS = 180_000;

describe("lab harness", () => {
  let art: LabArtifacts;
  let lab: Lab;
  let link: Link;
  let tap: Tap;
  let quiet: Link;
  let vm: Vm | undefined;

  before(async () => {
    art = await ensureLabArtifacts();
    lab = await createLab({ name: "harness" });
    link = await link0(lab);
    tap = await link.addTap("tap0");
    quiet = await lab.addLink("br1", { cidr: "10.78.0.1/24" });
  });

  after(async () => {
    await vm?.kill();
    await lab?.close();
  });

  test("a direct -kernel/-initrd boot prints the marker with the given command line", { timeout: BOOT_TIMEOUT_MS }, async (t) => {
    const token = `tok-${Date.now().toString(36)}`;
    vm = await startVm(lab, {
      tap,
      mac: "52:54:00:77:00:01",
      uuid: "6f1f4a52-1c9b-4f7e-9d7e-000000000001",
      firmware: "bios",
      kernel: { kernel: art.kernel, initrd: art.initrd, append: `console=ttyS0 slipway.token=${token}` },
    });
    const m = await vm.waitForSerial(/SLIPWAY-MARKER cmdline=([^\r\n]*)/, { timeoutMs: BOOT_TIMEOUT_MS });
    const seconds = vm.elapsedMs() / 1000;
    assert.match(m[1], new RegExp(`(^| )slipway\\.token=${token}( |$)`));
    assert.doesNotMatch(vm.serial(), /SLIPWAY-MODULE-FAILED/);
    t.diagnostic(`direct boot: QEMU start -> SLIPWAY-MARKER in ${seconds.toFixed(1)} s`);
    const exit = await vm.waitForExit({ timeoutMs: 60_000 });
    assert.equal(exit.code, 0, "the initramfs powers the machine off");
    vm = undefined;
  });

  test("a BIOS machine network-boots through the e1000's iPXE ROM to the marker and a lease", { timeout: BOOT_TIMEOUT_MS }, async (t) => {
    requirePackages("dnsmasq-base");
    const token = `tok-${Date.now().toString(36)}`;
    const root = path.join(lab.dir, "tftp");
    await mkdir(root);
    await symlink(art.kernel, path.join(root, "vmlinuz"));
    await symlink(art.initrd, path.join(root, "initrd.gz"));
    await writeFile(
      path.join(root, "boot.ipxe"),
      [
        "#!ipxe",
        `kernel tftp://${link.address}/vmlinuz initrd=initrd.gz console=ttyS0 slipway.marker.net=1 slipway.token=${token}`,
        `initrd tftp://${link.address}/initrd.gz`,
        "boot",
        "",
      ].join("\n"),
    );

    await lab.startRouterAdvertisements(link);
    const dnsmasq = lab.spawn("/usr/sbin/dnsmasq", [
      "--no-daemon",
      "--conf-file=/dev/null",
      "--port=0",
      `--interface=${link.name}`,
      "--bind-interfaces",
      "--user=root",
      "--group=root",
      `--pid-file=${path.join(lab.dir, "dhcp.pid")}`,
      `--dhcp-leasefile=${path.join(lab.dir, "dhcp.leases")}`,
      "--dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,10m",
      // dnsmasq otherwise pings a new address and holds the offer ~3 s.
      "--no-ping",
      // The e1000 ROM already is iPXE (user class "iPXE"): hand it the script straight away.
      "--dhcp-userclass=set:ipxe,iPXE",
      "--dhcp-boot=tag:ipxe,boot.ipxe",
      "--dhcp-boot=tag:!ipxe,undionly.kpxe",
      // ipxe.no-pxedhcp: do not wait for ProxyDHCP offers.
      "--dhcp-option=encap:175,176,1b",
      "--enable-tftp",
      `--tftp-root=${root}`,
      "--log-dhcp",
      "--log-facility=-",
    ]);
    let log = "";
    dnsmasq.stdout?.on("data", (d: Buffer) => (log += d.toString()));
    dnsmasq.stderr?.on("data", (d: Buffer) => (log += d.toString()));
    await waitForOutput(dnsmasq, /started, version/, 10_000, "dnsmasq (DHCP + TFTP)");

    const dhcpOnTap = await countPackets(tap, "udp port 67 or udp port 68");
    const dhcpElsewhere = await countPackets(quiet, "udp port 67 or udp port 68");
    vm = await startVm(lab, {
      tap,
      mac: "52:54:00:77:00:02",
      uuid: "6f1f4a52-1c9b-4f7e-9d7e-000000000002",
      firmware: "bios",
      nic: "e1000",
    });
    let m: RegExpExecArray;
    try {
      m = await vm.waitForSerial(/SLIPWAY-MARKER cmdline=([^\r\n]*)/, { timeoutMs: BOOT_TIMEOUT_MS });
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- dnsmasq ---\n${log.slice(-3000)}`);
    }
    const markerSeconds = vm.elapsedMs() / 1000;
    assert.match(m[1], new RegExp(`(^| )slipway\\.token=${token}( |$)`));
    const net = await vm.waitForSerial(/SLIPWAY-NET ip=(\d+\.\d+\.\d+\.\d+)/, { timeoutMs: 120_000 });
    const netSeconds = vm.elapsedMs() / 1000;
    assert.match(net[1], /^10\.77\.0\.1\d\d$/);
    assert.match(vm.serial(), /iPXE/, "booted through iPXE");
    t.diagnostic(`BIOS iPXE network boot: QEMU start -> SLIPWAY-MARKER in ${markerSeconds.toFixed(1)} s, SLIPWAY-NET in ${netSeconds.toFixed(1)} s`);
    await vm.waitForExit({ timeoutMs: 60_000 });
    vm = undefined;
    await lab.stop(dnsmasq);
    // iPXE and udhcpc each DISCOVER/OFFER/REQUEST/ACK on the machine's tap; nothing on the other link.
    assert.ok((await dhcpOnTap.stop()) >= 8);
    assert.equal(await dhcpElsewhere.stop(), 0);
  });
});

test("countPcapRecords counts the records of a classic pcap file", () => {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  const record = (len: number) => {
    const r = Buffer.alloc(16 + len);
    r.writeUInt32LE(len, 8);
    r.writeUInt32LE(len, 12);
    return r;
  };
  assert.equal(countPcapRecords(Buffer.alloc(0)), 0);
  assert.equal(countPcapRecords(header), 0);
  assert.equal(countPcapRecords(Buffer.concat([header, record(60), record(342)])), 2);
  // A record cut short (capture stopped mid-write) is not counted.
  assert.equal(countPcapRecords(Buffer.concat([header, record(60), record(342).subarray(0, 100)])), 1);
});

function link0(lab: Lab): Promise<Link> {
  return lab.addLink("br0", { cidr: "10.77.0.1/24" });
}
