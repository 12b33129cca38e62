import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { chooseAddress, intToIp, parseRange } from "./ip-pool.ts";

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
});
