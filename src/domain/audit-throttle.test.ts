import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { AuditThrottle } from "./audit-throttle.ts";

describe("audit throttle", () => {
  const t0 = Date.now();

  it("lets one entry per key through in each window, and the next as soon as the window is over", () => {
    const th = new AuditThrottle({ everyMs: 300_000, maxKeys: 100 });
    assert.equal(th.due("52:54:00:00:00:01:ignore", t0), true);
    assert.equal(th.due("52:54:00:00:00:01:ignore", t0 + 1), false);
    assert.equal(th.due("52:54:00:00:00:02:ignore", t0 + 1), true, "another machine is its own key");
    assert.equal(th.due("52:54:00:00:00:01:ignore", t0 + 299_999), false);
    assert.equal(th.due("52:54:00:00:00:01:ignore", t0 + 300_000), true);
  });

  it("a suppressed request does not push the next entry back: a machine asking every minute is audited every window", () => {
    const th = new AuditThrottle({ everyMs: 300_000, maxKeys: 100 });
    const audited = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10].filter((m) => th.due("k", t0 + m * 60_000));
    assert.deepEqual(audited, [0, 5, 10]);
  });

  it("a flood of keys keeps memory bounded; the key let through longest ago is forgotten first", () => {
    const th = new AuditThrottle({ everyMs: 300_000, maxKeys: 3 });
    for (const k of ["a", "b", "c", "d"]) assert.equal(th.due(k, t0), true);
    assert.equal(th.size, 3);
    assert.equal(th.due("b", t0 + 1), false, "still remembered");
    assert.equal(th.due("a", t0 + 1), true, "forgotten under the flood, so audited again");
    for (let i = 0; i < 10_000; i++) th.due(`flood-${i}`, t0 + 2);
    assert.equal(th.size, 3);
  });

  it("with room for every key, an entry is let through exactly when none of its key was in the last window (any sequence)", () => {
    fc.assert(fc.property(fc.array(fc.record({ key: fc.constantFrom("a", "b", "c"), step: fc.nat(200_000) }), { maxLength: 60 }), (ops) => {
      const th = new AuditThrottle({ everyMs: 300_000, maxKeys: 3 });
      const last = new Map<string, number>();
      let now = t0;
      for (const { key, step } of ops) {
        now += step;
        const expected = !last.has(key) || now - last.get(key)! >= 300_000;
        if (expected) last.set(key, now);
        assert.equal(th.due(key, now), expected, `${key} at +${now - t0}`);
      }
    }));
  });
});
