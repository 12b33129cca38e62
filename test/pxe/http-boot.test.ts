/**
 * UEFI HTTP boot end to end, in network namespaces this test makes: OVMF's own HTTP boot
 * client (a ROM-less virtio-net: no iPXE ROM, no PXE, no TFTP) asks `slipway up` for a boot
 * file, gets the URL of ipxe.efi (option 60 `HTTPClient`), downloads it over plain HTTP, and
 * iPXE then asks again, gets the machine's script and boots the deploy environment, whose
 * one-time token enrolls the machine. Once with Slipway as the link's DHCP server, once as
 * ProxyDHCP beside the site's own DHCP server (dnsmasq).
 *
 * OVMF tries PXEv4 and PXEv6 on a NIC before HTTPv4, and Slipway answers PXE as well, so the
 * machine has PXE switched off in its firmware (`nic: "virtio-http"` in test/lab/qemu.ts),
 * as a real machine set to HTTP boot has in its setup menu.
 */
import { describe, it, before } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { createLab, run, waitForOutput, type Lab, type Link } from "../lab/netns.ts";
import { ensureLabArtifacts, type LabArtifacts } from "../lab/artifacts.ts";
import { startVm } from "../lab/qemu.ts";
import { httpsRequest, tempDir } from "../support/site.ts";
import { request as mpRequest } from "../support/device.ts";
import { createKeyAndCsr } from "../../src/security/csr.ts";
import { deployToEveryone } from "../support/deployment.ts";

if (process.getuid?.() !== 0) throw new Error("the HTTP boot tests need root (network namespaces): run scripts/test.sh as root");

const root = path.resolve(import.meta.dirname, "../..");
const bin = path.join(root, "bin/slipway");
const PASSWORD = "Http-Boot-Test-Passphrase-1";
const BOOT_TIMEOUT_MS = 180_000;
const HTTP_PORT = 8080;

type Api = (method: string, p: string, body?: unknown) => Promise<{ status: number; body: any; text: string }>;

/** A running `slipway up` in `lab`, PXE on `link`, its APIs reached from here over a veth. */
type Slipway = { admin: Api; mpUrl: string; ca: string; log(): string };

/** Starts Slipway in `lab`; `up` names the host end of the veth to its admin API and management point. */
async function startSlipway(lab: Lab, link: Link, up: string, mode: "dhcp" | "proxy", dhcpRange: string): Promise<Slipway> {
  // The host end's /30 lives in the shared routing table: a random one keeps parallel runs apart.
  const adminNet = `10.85.${randomBytes(1)[0] % 250}`;
  await run("ip", ["link", "add", up, "type", "veth", "peer", "name", "adm0", "netns", lab.name]);
  await run("ip", ["addr", "add", `${adminNet}.1/30`, "dev", up]);
  await run("ip", ["link", "set", up, "up"]);
  await lab.exec("ip", ["addr", "add", `${adminNet}.2/30`, "dev", "adm0"]);
  await lab.exec("ip", ["link", "set", "adm0", "up"]);

  const dataDir = tempDir("slipway-http-boot-");
  const args = ["up", "--data", dataDir, "--listen", `${adminNet}.2:8443`, "--mp-listen", "0.0.0.0:8444",
    "--pxe-interface", link.name, "--pxe-mode", mode, "--pxe-http-port", String(HTTP_PORT), "--unknown", "deny"];
  if (mode === "dhcp") args.push("--dhcp-range", dhcpRange);
  const server = lab.spawn(bin, args, { env: { ...process.env, SLIPWAY_ADMIN_PASSWORD: PASSWORD, SLIPWAY_DATABASE_URL: "", SLIPWAY_LOG_LEVEL: "info" } });
  let log = "";
  server.stdout?.on("data", (d) => (log += d));
  server.stderr?.on("data", (d) => (log += d));
  server.once("exit", () => fs.rmSync(dataDir, { recursive: true, force: true }));
  await waitForOutput(server, /PXE \((dhcp|proxy)/, 60_000, "slipway up");

  const api = `https://${adminNet}.2:8443`;
  const ca = fs.readFileSync(path.join(dataDir, "keys/ca.crt"), "utf8");
  const session = await httpsRequest(api, ca, "POST", "/api/v1/sessions", { body: { username: "admin", password: PASSWORD } });
  const token = session.body.token;
  const admin: Api = (method, p, body) => httpsRequest(api, ca, method, p, { token, body });
  const changed = await admin("POST", "/api/v1/me/password", { currentPassword: PASSWORD, newPassword: PASSWORD + "-2" });
  assert.equal(changed.status, 204, changed.text);
  const art = await ensureLabArtifacts();
  await run(bin, ["bootimage", "add", "--data", dataDir, "--name", "marker", "--kernel", art.kernel, "--initrd", art.initrd, "--cmdline", "console=ttyS0"]);
  // A machine no deployment targets is sent to its disk; this one must get the boot image.
  await deployToEveryone(admin);
  return { admin, mpUrl: `https://${adminNet}.2:8444`, ca, log: () => log };
}

/** The site's own DHCP server, addresses only, for Slipway's ProxyDHCP to stand beside. */
async function startSiteDhcp(lab: Lab, link: Link, first: string, last: string): Promise<void> {
  const child = lab.spawn("/usr/sbin/dnsmasq", [
    "--no-daemon", "--conf-file=/dev/null", "--port=0", `--interface=${link.name}`, "--bind-interfaces",
    `--dhcp-range=${first},${last},1h`, "--no-ping", "--user=root", "--group=root",
    `--pid-file=${path.join(lab.dir, "site-dhcp.pid")}`, `--dhcp-leasefile=${path.join(lab.dir, "site-dhcp.leases")}`, "--log-facility=-",
  ]);
  await waitForOutput(child, /started, version/, 10_000, "dnsmasq (the site's DHCP server)");
}

/** Fields of the packets in `pcap` matching a display filter, decoded by tshark (not by Slipway's codec). */
async function packets(pcap: string, filter: string, fields: string[]): Promise<Record<string, string>[]> {
  const r = await run("tshark", ["-r", pcap, "-d", `tcp.port==${HTTP_PORT},http`, "-Y", filter, "-T", "fields", "-E", "separator=\t", ...fields.flatMap((f) => ["-e", f])]);
  return r.stdout.split("\n").filter(Boolean).map((line) => {
    const values = line.split("\t");
    return Object.fromEntries(fields.map((f, i) => [f, values[i] ?? ""]));
  });
}

const plain = (serial: string) => serial.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "");

const setups = [
  { mode: "dhcp", label: "Slipway as the link's DHCP server" },
  { mode: "proxy", label: "Slipway as ProxyDHCP beside the site's DHCP server" },
] as const;

describe("UEFI HTTP boot", () => {
  let art: LabArtifacts;

  before(async () => {
    art = await ensureLabArtifacts();
  });

  setups.forEach((s, i) => {
    it(`with ${s.label}, the firmware fetches ipxe.efi over HTTP and boots the deploy environment, whose one-time token enrolls it`, { timeout: BOOT_TIMEOUT_MS + 60_000 }, async (t) => {
      const lab = await createLab({ name: "http-boot" });
      const hostEnd = `slwh${randomBytes(3).toString("hex")}`;
      try {
        const net = `10.84.${i + 1}`;
        const link = await lab.addLink("br0", { cidr: `${net}.1/24` });
        await lab.startRouterAdvertisements(link); // else iPXE waits ~15 s for IPv6
        if (s.mode === "proxy") await startSiteDhcp(lab, link, `${net}.50`, `${net}.90`);
        const slipway = await startSlipway(lab, link, hostEnd, s.mode, `${net}.100-${net}.150`);
        const mac = `52:54:00:33:00:0${i + 1}`;
        const uuid = `6f1f4a52-1c9b-4f7e-9d7e-00000000020${i + 1}`;
        const created = await slipway.admin("POST", "/api/v1/devices", { name: `http-${i + 1}`, macs: [mac], smbiosUuid: uuid, state: "approved" });
        assert.equal(created.status, 201, created.text);
        const loaderUrl = `http://${link.address}:${HTTP_PORT}/ipxe/loaders/ipxe.efi`;
        const loaderSize = String(fs.statSync(art.ipxe.ipxeEfi).size);

        const tap = await link.addTap("tap0");
        // Everything the machine sent and got: DHCP, any TFTP, the HTTP downloads.
        const capture = await lab.capture(tap);
        const vm = await startVm(lab, { tap, mac, uuid, firmware: "uefi", nic: "virtio-http" });
        try {
          await vm.waitForSerial(/>>Start HTTP Boot over IPv4/, { timeoutMs: BOOT_TIMEOUT_MS, partialLines: true });
          const httpBootAt = vm.elapsedMs();
          // Checked after the boot on the plain text: firmware console lines carry escape codes.
          await vm.waitForSerial(/SLIPWAY-MARKER cmdline=/, { timeoutMs: BOOT_TIMEOUT_MS });
          t.diagnostic(`${s.mode}: QEMU start -> HTTP boot ${(httpBootAt / 1000).toFixed(1)} s -> deploy environment ${(vm.elapsedMs() / 1000).toFixed(1)} s`);
        } finally {
          await vm.kill();
        }
        await capture.stop();

        // What the console shows before ipxe.efi takes it over: HTTP boot, the URL Slipway gave, no PXE.
        const serial = plain(vm.serial());
        const firmware = serial.slice(0, serial.includes("iPXE initialising") ? serial.indexOf("iPXE initialising") : undefined);
        assert.match(firmware, new RegExp(`URI: ${loaderUrl.replace(/[.]/g, "\\.")}\\n`));
        assert.match(firmware, new RegExp(`File Size: ${loaderSize} Bytes`));
        assert.doesNotMatch(serial, />>Start PXE over/);
        assert.match(firmware, /BdsDxe: starting Boot\d+ "UEFI HTTPv4/, `the firmware started its HTTPv4 boot option:\n${firmware.slice(-3000)}`);

        // On the wire: the firmware asked as an HTTP client (arch 16) and was offered the URL...
        const dhcp = await packets(capture.file, "dhcp", ["dhcp.type", "dhcp.option.dhcp", "dhcp.option.vendor_class_id", "dhcp.option.client_system_architecture", "dhcp.option.user_class.text", "dhcp.option.bootfile_name"]);
        const requests = dhcp.filter((p) => p["dhcp.type"] === "1");
        assert.ok(requests.length >= 2, `the machine asked twice (firmware, then iPXE): ${JSON.stringify(dhcp)}`);
        assert.match(requests[0]["dhcp.option.vendor_class_id"], /^HTTPClient:Arch:00016:/);
        assert.equal(requests[0]["dhcp.option.client_system_architecture"], "16");
        for (const r of requests) {
          assert.ok(r["dhcp.option.vendor_class_id"].startsWith("HTTPClient") || r["dhcp.option.user_class.text"] === "iPXE",
            `every request came from the firmware's HTTP boot or from iPXE, none from a PXE client: ${JSON.stringify(r)}`);
        }
        const httpOffers = dhcp.filter((p) => p["dhcp.type"] === "2" && p["dhcp.option.vendor_class_id"] === "HTTPClient");
        assert.ok(httpOffers.some((p) => p["dhcp.option.dhcp"] === "2"), "an OFFER saying HTTPClient");
        for (const o of httpOffers) assert.equal(o["dhcp.option.bootfile_name"], loaderUrl);
        // ...fetched the loader itself over HTTP (iPXE would say iPXE/…), and nothing over TFTP.
        const http = await packets(capture.file, "http", ["http.request.method", "http.request.uri", "http.user_agent", "http.response.code", "http.response_for.uri", "http.content_length_header"]);
        const loaderGet = http.find((p) => p["http.request.method"] === "GET" && p["http.request.uri"] === "/ipxe/loaders/ipxe.efi");
        assert.ok(loaderGet, `the loader was fetched over HTTP: ${JSON.stringify(http.slice(0, 6))}`);
        assert.match(loaderGet["http.user_agent"], /^UefiHttpBoot\//);
        const loaderReplies = http.filter((p) => p["http.response_for.uri"].endsWith("/ipxe/loaders/ipxe.efi"));
        assert.ok(loaderReplies.length > 0, "Slipway answered the loader requests");
        for (const r of loaderReplies) assert.deepEqual([r["http.response.code"], r["http.content_length_header"]], ["200", loaderSize]);
        assert.deepEqual(await packets(capture.file, "udp.port == 69 or tftp", ["frame.number"]), [], "no TFTP packet at all");

        // What an administrator reads in the audit log: the offer, to which firmware, of what.
        const offers = (await slipway.admin("GET", "/api/v1/audit?action=pxe.offer&limit=1000")).body
          .filter((e: { details: { mac?: string } }) => e.details?.mac === mac);
        assert.ok(offers.length > 0, slipway.log().slice(-2000));
        assert.equal(offers[0].details.firmware, "uefi-http");
        assert.equal(offers[0].details.bootfile, loaderUrl);

        // And the boot reached the deploy environment with a token that enrolls the machine once.
        // /init powers off right after its marker, at times before the console has sent the
        // whole line (seen cut at "slipway.mac="); the kernel's own copy, printed at start, is whole.
        const cmdline = /Command line: ([^\r\n]*)/.exec(serial)?.[1] ?? "";
        const bootToken = /slipway\.token=(\S+)/.exec(cmdline)?.[1];
        assert.ok(bootToken, cmdline);
        assert.match(cmdline, new RegExp(`slipway\\.mac=${mac} `));
        const { csrPem } = await createKeyAndCsr();
        const enroll = () => mpRequest(slipway.mpUrl, { method: "POST", path: "/mp/v1/enroll", ca: slipway.ca,
          body: { credential: { kind: "boot-token", token: bootToken }, csr: csrPem, inventory: { macs: [mac], smbiosUuid: uuid, firmware: "uefi" } } });
        const enrolled = await enroll();
        assert.equal(enrolled.status, 201, enrolled.text);
        assert.equal((await enroll()).status, 401, "the token was single use");
        assert.doesNotMatch(slipway.log(), /"level":"error"/, "no request failed");
      } finally {
        await lab.close();
        // Orphaned TCP sockets of the killed server keep the namespace, and so this veth, for
        // a few minutes after close(): unplug it from the host now.
        await run("ip", ["link", "del", hostEnd], { allowFailure: true });
      }
    });
  });
});
