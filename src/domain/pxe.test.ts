import { describe, it, test } from "node:test";
import assert from "node:assert/strict";
import { bootScript, decideBoot, firmwareOf, localBootScript, startScript, waitScript } from "./pxe.ts";
import { chooseAddress, parseRange, intToIp, ipToInt } from "./ip-pool.ts";
import type { Device } from "./device.ts";

const device = (state: Device["state"]): Device => ({ id: "d1", name: "pc", macs: ["52:54:00:00:00:01"], smbiosUuid: null, serial: null, state, attributes: {}, lastSeenAt: null, createdAt: "", updatedAt: "" });

describe("boot decisions", () => {
  it("boots approved devices, never blocked ones, and follows the unknown-computer policy", () => {
    for (const policy of ["deny", "approve", "allow"] as const) {
      assert.equal(decideBoot(device("approved"), policy), "boot");
      assert.equal(decideBoot(device("blocked"), policy), "ignore");
    }
    assert.deepEqual([decideBoot(undefined, "deny"), decideBoot(undefined, "approve"), decideBoot(undefined, "allow")], ["ignore", "record-pending", "record-approved"]);
    assert.deepEqual([decideBoot(device("pending"), "deny"), decideBoot(device("pending"), "approve")], ["ignore", "wait"]);
  });

  it("picks the loader by RFC 4578 architecture", () => {
    assert.equal(firmwareOf([0], false), "bios");
    assert.equal(firmwareOf([7], false), "uefi");
    assert.equal(firmwareOf([9], false), "uefi");
    assert.equal(firmwareOf([16], true), "uefi-http");
    assert.equal(firmwareOf([11], false), "unsupported");
    assert.equal(firmwareOf(undefined, false), "bios");
  });

  it("scripts carry the token and nothing secret, and the start script names the machine by iPXE settings", () => {
    const s = bootScript({ image: { kernelUrl: "http://10.0.0.1:8080/k", initrdUrl: "http://10.0.0.1:8080/i", cmdline: "console=ttyS0" }, token: "swb_abc", mac: "52:54:00:00:00:01", managementPoint: "https://10.0.0.1:8444", deviceName: "pc; shell" });
    assert.match(s, /^#!ipxe\n/);
    assert.match(s, /kernel http:\/\/10\.0\.0\.1:8080\/k initrd=initrd slipway\.token=swb_abc slipway\.mac=52:54:00:00:00:01 slipway\.mp=https:\/\/10\.0\.0\.1:8444 console=ttyS0/);
    assert.ok(!s.includes(";"), "device names cannot inject iPXE commands");
    assert.match(startScript("http://h:1"), /\$\{net0\/mac\}.*\$\{uuid\}/);
    assert.match(waitScript({ pollUrl: "http://h:1/x", mac: "m" }), /sleep 10\nchain --replace http:\/\/h:1\/x/);
  });
});

describe("lab DHCP pool", () => {
  it("parses ranges and refuses bad ones", () => {
    assert.deepEqual(parseRange("10.0.0.10-10.0.0.20"), { first: ipToInt("10.0.0.10"), last: ipToInt("10.0.0.20") });
    for (const bad of ["10.0.0.20-10.0.0.10", "10.0.0.1", "10.0.0.300-10.0.0.301", "10.0.0.0-10.2.0.0"]) assert.throws(() => parseRange(bad), TypeError, bad);
    assert.equal(intToIp(ipToInt("192.168.7.254")), "192.168.7.254");
  });

  it("keeps a client's lease, honours a free requested address, never hands one out twice", () => {
    const r = parseRange("10.0.0.10-10.0.0.12");
    assert.equal(chooseAddress(r, { taken: new Set() }, "10.0.0.11"), "10.0.0.11");
    assert.equal(chooseAddress(r, { taken: new Set(["10.0.0.10"]) }, undefined, "10.0.0.12"), "10.0.0.12");
    assert.equal(chooseAddress(r, { taken: new Set(["10.0.0.10"]) }, undefined, "10.0.0.10"), "10.0.0.11");
    assert.equal(chooseAddress(r, { taken: new Set(["10.0.0.10", "10.0.0.11", "10.0.0.12"]) }), undefined);
  });
});

test("the nothing-to-deploy script exits with an error, so UEFI firmware tries its next boot option", () => {
  const s = localBootScript("lab-1");
  assert.match(s, /^#!ipxe\n/);
  assert.match(s, /\nexit [1-9]\d*\n$/);
});
