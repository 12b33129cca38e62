import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { matchesPending, sinceTime } from "./pending.ts";

describe("pending devices: the filter of a bulk decision", () => {
  const now = new Date(Date.now());
  it("since is a duration back from the site's clock, or an ISO time with an offset; anything else is refused", () => {
    assert.equal(sinceTime("10m", now), new Date(now.getTime() - 600_000).toISOString());
    assert.equal(sinceTime("90s", now), new Date(now.getTime() - 90_000).toISOString());
    assert.equal(sinceTime("2h", now), new Date(now.getTime() - 7_200_000).toISOString());
    assert.equal(sinceTime("1d", now), new Date(now.getTime() - 86_400_000).toISOString());
    const iso = new Date(now.getTime() - 5000).toISOString();
    assert.equal(sinceTime(iso, now), iso);
    for (const bad of ["yesterday", "10", "m", "-5m", "10 minutes", "2026-13-45", "1e3s", ""]) assert.equal(sinceTime(bad, now), null, bad);
  });

  it("matches only pending devices first seen on the link and within the window", () => {
    const at = (ms: number) => new Date(now.getTime() + ms).toISOString();
    const d = (state: "pending" | "approved", link: string | undefined, createdAt: string) =>
      ({ state, attributes: (link ? { firstSeenLink: link } : {}) as Record<string, string>, createdAt });
    const since = at(-600_000);
    assert.equal(matchesPending(d("pending", "lab0", at(-1000)), { link: "lab0", since }), true);
    assert.equal(matchesPending(d("pending", "lab0", since), { link: "lab0", since }), true, "the window's start is in it");
    assert.equal(matchesPending(d("pending", "lab0", at(-600_001)), { link: "lab0", since }), false);
    assert.equal(matchesPending(d("pending", "lab1", at(-1000)), { link: "lab0" }), false);
    assert.equal(matchesPending(d("pending", undefined, at(-1000)), { link: "lab0" }), false, "a device recorded by hand has no link");
    assert.equal(matchesPending(d("approved", "lab0", at(-1000)), { link: "lab0" }), false);
    assert.equal(matchesPending(d("pending", undefined, at(-1000)), {}), true);
  });
});
