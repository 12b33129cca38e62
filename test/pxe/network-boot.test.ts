/**
 * Network boot end to end in network namespaces this test makes: `slipway up` runs inside a
 * server namespace with three links — PXE on two, not on the third — and real clients talk to
 * it: busybox udhcpc and curl from a client namespace, a scripted DHCP relay, and QEMU
 * machines booting Debian's iPXE to the deploy environment's marker with a one-time token that
 * the management point then redeems.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { createHash, randomBytes } from "node:crypto";
import type { ChildProcess } from "node:child_process";
import { createLab, run, waitForOutput, type Lab, type Link } from "../lab/netns.ts";
import { ensureLabArtifacts, type LabArtifacts } from "../lab/artifacts.ts";
import { startVm } from "../lab/qemu.ts";
import { httpsRequest, tempDir } from "../support/site.ts";
import { request as mpRequest } from "../support/device.ts";
import { createKeyAndCsr } from "../../src/security/csr.ts";
import { deployToEveryone } from "../support/deployment.ts";

if (process.getuid?.() !== 0) throw new Error("the network boot tests need root (network namespaces): run scripts/test.sh as root");

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin/slipway");
const node = process.execPath;
const PASSWORD = "Network-Boot-Test-Passphrase-1";
const BOOT_TIMEOUT_MS = 180_000;
// Anything the server's programs send from its link addresses (TFTP answers from ephemeral
// ports, HTTP with a payload); the kernel's ICMP and TCP resets for closed ports are not answers.
const FROM_SERVER = "(udp or (tcp and tcp[tcpflags] & tcp-push != 0)) and (src host 10.78.10.1 or src host 10.78.11.1 or src host 10.78.12.1)";

describe("network boot", () => {
  let art: LabArtifacts;
  let srv: Lab;
  let cli: Lab;
  let br0: Link, br1: Link, br2: Link;
  let server: ChildProcess;
  let dataDir = "";
  let api = "";
  let mpUrl = "";
  let ca = "";
  let token = "";
  let serverLog = "";
  const adminNet = `10.79.${randomBytes(1)[0] % 250}`;
  const admin = (method: string, p: string, body?: unknown) => httpsRequest(api, ca, method, p, { token, body });

  /** A veth from the client namespace into one of the server's bridges, with its own MAC. */
  async function plug(name: string, link: Link, mac: string): Promise<void> {
    await run("ip", ["link", "add", name, "netns", cli.name, "type", "veth", "peer", "name", `${name}p`, "netns", srv.name]);
    await srv.exec("ip", ["link", "set", `${name}p`, "master", link.name, "up"]);
    await cli.exec("ip", ["link", "set", name, "address", mac, "up"]);
    // Raw-socket DHCP clients drop replies whose UDP checksum was left to offload (LAB-NOTES).
    for (const [lab, ifname] of [[srv, `${name}p`], [srv, link.name], [cli, name]] as const) await lab.exec("ethtool", ["-K", ifname, "tx", "off"], { allowFailure: true });
  }

  /** busybox udhcpc as a PXE ROM would ask; returns the lease it printed, or null. */
  async function udhcpc(ifname: string): Promise<Record<string, string> | null> {
    const script = path.join(cli.dir, "udhcpc.sh");
    fs.writeFileSync(script, `#!/bin/sh\n[ "$1" = bound ] || exit 0\nip addr add "$ip/$mask" dev "$interface"\necho "LEASE ip=$ip siaddr=$siaddr boot_file=$boot_file serverid=$serverid"\n`, { mode: 0o755 });
    const r = await cli.exec("busybox", ["udhcpc", "-i", ifname, "-f", "-q", "-n", "-t", "3", "-T", "1", "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-s", script], { allowFailure: true, timeoutMs: 30_000 });
    const m = /LEASE (.*)/.exec(r.stdout);
    if (!m) return null;
    return Object.fromEntries(m[1].split(" ").map((kv) => kv.split("=") as [string, string]));
  }

  before(async () => {
    art = await ensureLabArtifacts();
    srv = await createLab({ name: "pxe-srv" });
    cli = await createLab({ name: "pxe-cli" });
    br0 = await srv.addLink("br0", { cidr: "10.78.10.1/24" });
    br1 = await srv.addLink("br1", { cidr: "10.78.11.1/24" });
    br2 = await srv.addLink("br2", { cidr: "10.78.12.1/24" });
    await srv.startRouterAdvertisements(br0);
    // The test reaches the admin API and the management point over a veth of its own.
    const up = `slwa${randomBytes(3).toString("hex")}`;
    await run("ip", ["link", "add", up, "type", "veth", "peer", "name", "adm0", "netns", srv.name]);
    await run("ip", ["addr", "add", `${adminNet}.1/30`, "dev", up]);
    await run("ip", ["link", "set", up, "up"]);
    await srv.exec("ip", ["addr", "add", `${adminNet}.2/30`, "dev", "adm0"]);
    await srv.exec("ip", ["link", "set", "adm0", "up"]);

    dataDir = tempDir("slipway-pxe-");
    server = srv.spawn(bin, ["up", "--data", dataDir, "--listen", `${adminNet}.2:8443`, "--mp-listen", "0.0.0.0:8444",
      "--pxe-interface", "br0", "--pxe-interface", "br1", "--pxe-mode", "dhcp",
      "--dhcp-range", "10.78.10.100-10.78.10.150", "--dhcp-range", "10.78.11.100-10.78.11.150", "--dhcp-relay", "10.78.11.2", "--unknown", "approve"], {
      env: { ...process.env, SLIPWAY_ADMIN_PASSWORD: PASSWORD, SLIPWAY_DATABASE_URL: "", SLIPWAY_LOG_LEVEL: "info" },
    });
    server.stdout?.on("data", (d) => (serverLog += d));
    server.stderr?.on("data", (d) => (serverLog += d));
    await waitForOutput(server, /PXE \(dhcp/, 60_000, "slipway up");
    api = `https://${adminNet}.2:8443`;
    mpUrl = `https://${adminNet}.2:8444`;
    ca = fs.readFileSync(path.join(dataDir, "keys/ca.crt"), "utf8");
    let r = await httpsRequest(api, ca, "POST", "/api/v1/sessions", { body: { username: "admin", password: PASSWORD } });
    token = r.body.token;
    r = await admin("POST", "/api/v1/me/password", { currentPassword: PASSWORD, newPassword: PASSWORD + "-2" });
    assert.equal(r.status, 204, r.text);
    const added = await run(bin, ["bootimage", "add", "--data", dataDir, "--name", "marker", "--kernel", art.kernel, "--initrd", art.initrd, "--cmdline", "console=ttyS0"]);
    assert.match(added.stdout, /default/);
    // A machine no deployment targets is sent to its disk; these must get the boot image.
    await deployToEveryone(admin);
  });

  after(async () => {
    if (server) await srv.stop(server);
    await cli?.close();
    await srv?.close();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("a known machine on a PXE link gets a lease, the loader over TFTP and a boot script with a one-time token", async () => {
    const mac = "52:54:00:31:00:01";
    assert.equal((await admin("POST", "/api/v1/devices", { name: "lab-1", macs: [mac], state: "approved" })).status, 201);
    await plug("c0", br0, mac);
    // The same capture the unlisted-link test relies on, seeing the answers here.
    const capture = await srv.capture("c0p", FROM_SERVER);
    const lease = await udhcpc("c0");
    assert.ok(lease, `no lease; server said:\n${serverLog.slice(-2000)}`);
    assert.match(lease.ip, /^10\.78\.10\.(1[0-4]\d|150)$/);
    assert.equal(lease.siaddr, "10.78.10.1");
    assert.equal(lease.boot_file, "undionly.kpxe");
    const out = path.join(cli.dir, "undionly.kpxe");
    await cli.exec("curl", ["-sS", "--tftp-blksize", "1468", "-o", out, "tftp://10.78.10.1/undionly.kpxe"]);
    const sha = (f: string) => createHash("sha256").update(fs.readFileSync(f)).digest("hex");
    assert.equal(sha(out), sha("/usr/lib/ipxe/undionly.kpxe"));
    const script = (await cli.exec("curl", ["-sS", `http://10.78.10.1:8080/ipxe/machine?mac=${mac}`])).stdout;
    assert.match(script, /^#!ipxe\n[\s\S]*slipway\.token=swb_[A-Za-z0-9_-]{43}/);
    assert.match(script, /slipway\.mp=https:\/\/10\.78\.10\.1:8444/);
    const seen = await capture.stop();
    assert.ok(seen >= 4, `offer, ack, TFTP data and the script were seen on the link (${seen} packets)`);
  });

  it("nothing answers on the link that is not listed: no DHCP, no TFTP, no boot script", async () => {
    const mac = "52:54:00:31:00:02";
    await admin("POST", "/api/v1/devices", { name: "lab-2", macs: [mac], state: "approved" });
    await plug("c2", br2, mac);
    const capture = await srv.capture("c2p", FROM_SERVER);
    assert.equal(await udhcpc("c2"), null, "no lease on an unlisted link");
    await cli.exec("ip", ["addr", "add", "10.78.12.50/24", "dev", "c2"]);
    // Reach br0's address through br2: the weak-host case a device-bound socket must refuse.
    await cli.exec("ip", ["addr", "flush", "dev", "c0"], { allowFailure: true });
    await cli.exec("ip", ["route", "replace", "10.78.10.0/24", "via", "10.78.12.1"]);
    const tftp = await cli.exec("curl", ["-sS", "--max-time", "5", "-o", "/dev/null", "tftp://10.78.12.1/undionly.kpxe"], { allowFailure: true });
    assert.notEqual(tftp.code, 0);
    const viaOther = await cli.exec("curl", ["-sS", "--max-time", "5", "-o", "/dev/null", "tftp://10.78.10.1/undionly.kpxe"], { allowFailure: true });
    assert.notEqual(viaOther.code, 0, "the TFTP server bound to br0 does not answer a request that arrived on br2");
    const http = await cli.exec("curl", ["-sS", "--max-time", "5", "http://10.78.10.1:8080/ipxe/start"], { allowFailure: true });
    assert.notEqual(http.code, 0, `the boot script server answered through br2: ${http.stdout}`);
    assert.equal(await capture.stop(), 0, "the server sent no DHCP, TFTP or HTTP payload on the unlisted link");
    await cli.exec("ip", ["route", "del", "10.78.10.0/24", "via", "10.78.12.1"]);
  });

  it("a relayed request is answered through the relay, from the link it arrived on", async () => {
    await plug("c1", br1, "52:54:00:31:00:03");
    await cli.exec("ip", ["addr", "add", "10.78.11.2/24", "dev", "c1"]);
    await admin("POST", "/api/v1/devices", { name: "remote-1", macs: ["52:54:00:31:00:99"], state: "approved" });
    const r = await cli.exec(node, ["--disable-warning=ExperimentalWarning", path.join(root, "test/pxe/dhcp-client.ts"), "relay", "10.78.11.2", "10.78.11.1", "52:54:00:31:00:99"]);
    const answer = JSON.parse(r.stdout);
    assert.equal(answer.answered, true, serverLog.slice(-1500));
    assert.equal(answer.type, 2, "an OFFER");
    assert.equal(answer.giaddr, "10.78.11.2");
    assert.equal(answer.siaddr, "10.78.11.1");
    assert.match(answer.yiaddr, /^10\.78\.11\./);
  });

  it("machines requesting the same address at once: one gets it, the others a NAK, and nothing fails", async () => {
    const macs = ["52:54:00:31:01:01", "52:54:00:31:01:02", "52:54:00:31:01:03", "52:54:00:31:01:04"];
    for (const [i, mac] of macs.entries()) assert.equal((await admin("POST", "/api/v1/devices", { name: `race-${i}`, macs: [mac], state: "approved" })).status, 201);
    const r = await cli.exec(node, ["--disable-warning=ExperimentalWarning", path.join(root, "test/pxe/dhcp-client.ts"), "race", "10.78.11.2", "10.78.11.1", ["10.78.11.140", ...macs].join(",")]);
    const answers = JSON.parse(r.stdout);
    assert.equal(answers.ack.length, 1, `exactly one ACK for the address: ${r.stdout}`);
    assert.equal(answers.nak.length, macs.length - 1, `the others are told no: ${r.stdout}`);
    assert.doesNotMatch(serverLog, /"level":"error"/, "no request failed");
  });

  it("an unknown machine is recorded as pending, waits, and gets its token once approved; a blocked one gets nothing", async () => {
    const mac = "52:54:00:31:00:04";
    await plug("c4", br0, mac);
    const lease = await udhcpc("c4");
    assert.ok(lease, "approve policy: an unknown PXE client still gets its loader, then the waiting script");
    const dev = (await admin("GET", `/api/v1/devices?mac=${mac}`)).body[0];
    assert.equal(dev.state, "pending");
    assert.equal(dev.attributes.firmware, "bios");
    const wait = (await cli.exec("curl", ["-sS", `http://10.78.10.1:8080/ipxe/machine?mac=${mac}`])).stdout;
    assert.match(wait, /waiting for an administrator's approval/);
    assert.equal((await admin("POST", `/api/v1/devices/${dev.id}/approve`)).status, 200);
    const boot = (await cli.exec("curl", ["-sS", `http://10.78.10.1:8080/ipxe/machine?mac=${mac}`])).stdout;
    assert.match(boot, /slipway\.token=swb_/);
    await admin("POST", `/api/v1/devices/${dev.id}/block`);
    await cli.exec("ip", ["addr", "flush", "dev", "c4"]);
    assert.equal(await udhcpc("c4"), null, "a blocked device gets nothing");
    const refused = (await admin("GET", "/api/v1/audit?action=pxe.refused&limit=1000")).body;
    assert.ok(refused.some((e: { details: { mac: string; reason: string } }) => e.details.mac === mac && e.details.reason === "blocked"));
  });

  it("malformed datagrams on the DHCP and TFTP ports change nothing and the server keeps answering", async () => {
    const client = path.join(root, "test/pxe/dhcp-client.ts");
    for (const port of ["67", "69"]) {
      const r = await cli.exec(node, ["--disable-warning=ExperimentalWarning", client, "garbage", "10.78.11.2", "10.78.11.1", port], { timeoutMs: 60_000 });
      assert.ok(JSON.parse(r.stdout).sent > 300);
    }
    const answer = JSON.parse((await cli.exec(node, ["--disable-warning=ExperimentalWarning", client, "relay", "10.78.11.2", "10.78.11.1", "52:54:00:31:00:99"])).stdout);
    assert.equal(answer.answered, true, "still answering after the garbage");
    assert.equal(server.exitCode, null, "still running");
    assert.doesNotMatch(serverLog, /"level":"error"/, "no request failed");
  });

  it("an unknown machine waits at the approval script and boots as soon as an administrator approves it", { timeout: BOOT_TIMEOUT_MS + 60_000 }, async (t) => {
    const mac = "52:54:00:32:00:09";
    const uuid = "6f1f4a52-1c9b-4f7e-9d7e-000000000109";
    const tap = await br0.addTap("tap9");
    const vm = await startVm(srv, { tap, mac, uuid, firmware: "bios" });
    try {
      await vm.waitForSerial(/is waiting for an administrator/, { timeoutMs: BOOT_TIMEOUT_MS });
      const dev = (await admin("GET", `/api/v1/devices?mac=${mac}`)).body[0];
      assert.equal(dev?.state, "pending");
      assert.equal(dev.smbiosUuid, uuid, "recorded with the UUID the firmware sent (option 97)");
      assert.ok(!/SLIPWAY-MARKER/.test(vm.serial()));
      assert.equal((await admin("POST", `/api/v1/devices/${dev.id}/approve`)).status, 200);
      const approvedAt = vm.elapsedMs();
      const marker = await vm.waitForSerial(/SLIPWAY-MARKER cmdline=([^\r\n]*)/, { timeoutMs: BOOT_TIMEOUT_MS });
      t.diagnostic(`approval -> deploy environment in ${((vm.elapsedMs() - approvedAt) / 1000).toFixed(1)} s`);
      assert.match(marker[1], /slipway\.token=swb_/);
    } finally {
      await vm.kill();
    }
  });

  const machines = [
    { label: "BIOS with the NIC's iPXE", firmware: "bios", nic: "e1000" },
    { label: "UEFI with the NIC's iPXE", firmware: "uefi", nic: "e1000" },
    { label: "UEFI with the firmware's own PXE client (loader over TFTP)", firmware: "uefi", nic: "virtio-pxe" },
  ] as const;
  machines.forEach((m, i) => {
    it(`a ${m.label} boots the deploy environment, whose one-time token enrolls it`, { timeout: BOOT_TIMEOUT_MS + 60_000 }, async (t) => {
      const mac = `52:54:00:32:00:0${i + 1}`;
      const uuid = `6f1f4a52-1c9b-4f7e-9d7e-00000000010${i + 1}`;
      assert.equal((await admin("POST", "/api/v1/devices", { name: `vm-${i + 1}`, macs: [mac], smbiosUuid: uuid, state: "approved" })).status, 201);
      const tap = await br0.addTap(`tap${i + 1}`);
      const vm = await startVm(srv, { tap, mac, uuid, firmware: m.firmware, nic: m.nic });
      try {
        const marker = await vm.waitForSerial(/SLIPWAY-MARKER cmdline=([^\r\n]*)/, { timeoutMs: BOOT_TIMEOUT_MS });
        t.diagnostic(`${m.label}: QEMU start -> deploy environment in ${(vm.elapsedMs() / 1000).toFixed(1)} s`);
        const bootToken = /slipway\.token=(\S+)/.exec(marker[1])?.[1];
        assert.ok(bootToken, marker[1]);
        assert.match(marker[1], new RegExp(`slipway\\.mac=${mac}`));
        const { csrPem } = await createKeyAndCsr();
        const enrolled = await mpRequest(mpUrl, { method: "POST", path: "/mp/v1/enroll", ca,
          body: { credential: { kind: "boot-token", token: bootToken }, csr: csrPem, inventory: { macs: [mac], smbiosUuid: uuid, firmware: m.firmware } } });
        assert.equal(enrolled.status, 201, enrolled.text);
        const again = await mpRequest(mpUrl, { method: "POST", path: "/mp/v1/enroll", ca,
          body: { credential: { kind: "boot-token", token: bootToken }, csr: csrPem, inventory: { macs: [mac], smbiosUuid: uuid } } });
        assert.equal(again.status, 401, "the token was single use");
      } finally {
        await vm.kill();
      }
    });
  });

  // Last: the flood uses up this minute's allowance for recording unknown machines.
  it("a flood of DISCOVERs from random MACs records a bounded number and a known machine still gets its offer", async () => {
    const before = (await admin("GET", "/api/v1/devices")).body.length;
    const flood = await cli.exec(node, ["--disable-warning=ExperimentalWarning", path.join(root, "test/pxe/dhcp-client.ts"), "flood", "10.78.11.2", "10.78.11.1", "3000"], { timeoutMs: 60_000 });
    assert.equal(JSON.parse(flood.stdout).sent, 3000);
    const r = await cli.exec(node, ["--disable-warning=ExperimentalWarning", path.join(root, "test/pxe/dhcp-client.ts"), "relay", "10.78.11.2", "10.78.11.1", "52:54:00:31:00:99"]);
    assert.equal(JSON.parse(r.stdout).answered, true, "the known machine is still answered");
    const recorded = (await admin("GET", "/api/v1/devices")).body.length - before;
    assert.ok(recorded <= 30, `recorded ${recorded} unknown machines in a minute; the limit is 30`);
    assert.equal((await httpsRequest(api, ca, "GET", "/api/v1/health")).status, 200);
  });
});
