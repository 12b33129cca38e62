import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { chooseAddress, intToIp, parseRange, poolStateFor, rangeForSubnet, unapprovedShareFull, type PoolLease } from "./ip-pool.ts";

describe("lab DHCP pool", () => {
  const r = parseRange("10.0.0.10-10.0.0.13");

  it("never offers an address another client holds, has declined, or the server uses — not even as the client's own", () => {
    assert.equal(chooseAddress(r, { taken: new Set(["10.0.0.11"]) }, "10.0.0.11"), "10.0.0.10", "a current binding that is now taken is not offered");
    assert.equal(chooseAddress(r, { taken: new Set(["10.0.0.12"]) }, undefined, "10.0.0.12"), "10.0.0.10");
  });

  it("keeps an address released by another client for that client while anything else is free (RFC 2131 §4.3.1)", () => {
    const remembered = new Set(["10.0.0.10", "10.0.0.11"]);
    assert.equal(chooseAddress(r, { taken: new Set(), remembered }), "10.0.0.12");
    assert.equal(chooseAddress(r, { taken: new Set(), remembered }, undefined, "10.0.0.10"), "10.0.0.12", "not even when asked for by name");
    assert.equal(chooseAddress(r, { taken: new Set(), remembered }, "10.0.0.10"), "10.0.0.10", "its own client gets it back");
    assert.equal(chooseAddress(r, { taken: new Set(["10.0.0.12", "10.0.0.13"]), remembered }), "10.0.0.10", "the last resort");
  });

  it("the chosen address is in the range and free, or there is none free", () => {
    fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 8, max: 15 })), fc.uniqueArray(fc.integer({ min: 8, max: 15 })),
      fc.option(fc.integer({ min: 8, max: 15 })), fc.option(fc.integer({ min: 8, max: 15 })), (t, m, cur, req) => {
        const ip = (n: number) => intToIp(0x0a000000 + n);
        const taken = new Set(t.map(ip));
        const ipOut = chooseAddress(r, { taken, remembered: new Set(m.map(ip)) }, cur === null ? undefined : ip(cur), req === null ? undefined : ip(req));
        const free = [10, 11, 12, 13].map(ip).filter((a) => !taken.has(a));
        if (ipOut === undefined) assert.equal(free.length, 0);
        else assert.ok(free.includes(ipOut), ipOut);
      }));
  });

  it("a link is served by the pool lying wholly in its subnet, never by one that only starts or ends there", () => {
    const lab = parseRange("10.0.0.100-10.0.0.199");
    const other = parseRange("10.0.1.100-10.0.1.199");
    const straddling = parseRange("10.0.0.250-10.0.1.5");
    assert.equal(rangeForSubnet([other, lab], "10.0.0.1", "255.255.255.0"), lab);
    assert.equal(rangeForSubnet([other, lab], "10.0.2.1", "255.255.255.0"), undefined);
    assert.equal(rangeForSubnet([straddling], "10.0.0.1", "255.255.255.0"), undefined);
    assert.equal(rangeForSubnet([straddling], "10.0.1.1", "255.255.255.0"), undefined);
    assert.equal(rangeForSubnet([straddling], "10.0.0.1", "255.255.0.0"), straddling, "a wider subnet holds both ends");
  });

  it("as a client finds the pool: others' leases, offers, declined and the server's addresses taken; others' released ones remembered; its own neither", () => {
    const leases: PoolLease[] = [
      { mac: "a", ip: "10.0.0.10", state: "bound" },
      { mac: "b", ip: "10.0.0.11", state: "offered" },
      { mac: "c", ip: "10.0.0.12", state: "released" },
      { mac: "me", ip: "10.0.0.13", state: "bound" },
    ];
    const { taken, remembered } = poolStateFor("me", leases, ["10.0.0.20"], ["10.0.0.1", "10.0.0.2"]);
    assert.deepEqual([...taken].sort(), ["10.0.0.1", "10.0.0.10", "10.0.0.11", "10.0.0.2", "10.0.0.20"]);
    assert.deepEqual([...remembered], ["10.0.0.12"]);
    const forC = poolStateFor("c", leases, [], []);
    assert.ok(!forC.remembered.has("10.0.0.12") && !forC.taken.has("10.0.0.12"), "a client's own released address is free for it");
  });

  it("unapproved devices fill their share at half the pool (rounded down), counting only addresses in this pool", () => {
    const five = parseRange("10.0.0.10-10.0.0.14");
    assert.equal(unapprovedShareFull(five, ["10.0.0.10"]), false);
    assert.equal(unapprovedShareFull(five, ["10.0.0.10", "10.0.0.11"]), true);
    assert.equal(unapprovedShareFull(five, ["10.0.0.10", "10.0.9.11", "10.0.9.12"]), false, "addresses of another pool do not count");
  });
});
