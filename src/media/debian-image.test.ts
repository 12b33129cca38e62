/**
 * The parts of `slipway image build debian` that decide before mmdebstrap runs: which input is
 * refused, which Debian archive is used, which suites are added. (The build itself runs in
 * test/readme-deploy.test.ts, from the README, and the image it makes is deployed and booted.)
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildDebianImage, cacheDirProblem, debianImageProblems, debianSources, hostDebianMirror } from "./debian-image.ts";

describe("Debian image options", () => {
  it("refuses suites, packages and mirrors that are not what they claim, naming each", () => {
    assert.deepEqual(debianImageProblems({ suite: "bookworm", packages: ["openssh-server", "libstdc++6", "g++-12"] }), []);
    assert.deepEqual(debianImageProblems({ suite: "trixie", packages: [], mirror: "https://mirror.example.org/debian/" }), []);
    assert.deepEqual(debianImageProblems({ suite: "bookworm", packages: [], mirror: "file:///srv/mirror/debian" }), []);
    const bad = debianImageProblems({ suite: "../x", packages: ["Vim", "a", "x;rm -rf /", "--option"], mirror: "http://u:p@m.example/debian?x=1" });
    assert.equal(bad.length, 6, bad.join("\n"));
    assert.match(bad[0], /suite "\.\.\/x"/);
    for (const p of ["Vim", "a", "x;rm -rf /", "--option"]) assert.ok(bad.some((b) => b.includes(`"${p}" is not a Debian package name`)), p);
    assert.match(bad[5], /without credentials or query/);
    assert.equal(debianImageProblems({ suite: "bookworm", packages: [], mirror: "gopher://m/debian" }).length, 1);
    // The URL parser would drop a newline (and encode a space): a second sources line with
    // [trusted=yes] must not ride in on the mirror's text.
    for (const m of ["http://deb.debian.org/debian bookworm main\ndeb [trusted=yes] http://127.0.0.1:1 bookworm main\ndeb http://deb.debian.org/debian",
      "http://deb.debian.org/debian\tx", "http://deb.debian.org/de bian", "http://deb.debian.org/debian\u00e9"]) {
      assert.match(debianImageProblems({ suite: "bookworm", packages: [], mirror: m })[0] ?? "", /give one plain URL/, JSON.stringify(m));
    }
    // apt reads a trailing "-" as "remove" (and "+" as "install", harmless): no removals by name.
    assert.equal(debianImageProblems({ suite: "bookworm", packages: ["linux-image-amd64-", "dbus.", "g++"] }).length, 2);
    assert.equal(debianImageProblems({ suite: "bookworm", packages: [], mirror: "not a url" }).length, 1);
  });

  it("a package cache others can write is refused before anything runs: they could swap packages or the build's hook", async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-cache-"));
    try {
      assert.equal(cacheDirProblem(base), undefined, "a fresh 0700 folder under the sticky /tmp");
      fs.chmodSync(base, 0o777);
      assert.match(cacheDirProblem(base) ?? "", /others may write to .* \(mode 777\)/);
      fs.chmodSync(base, 0o700);
      const open = path.join(base, "open");
      fs.mkdirSync(path.join(open, "cache"), { recursive: true });
      fs.chmodSync(open, 0o777); // a non-sticky folder on the way: the cache could be renamed away
      assert.match(cacheDirProblem(path.join(open, "cache")) ?? "", /others may write to .*open /);
      fs.chmodSync(open, 0o700);
      fs.symlinkSync(path.join(open, "cache"), path.join(base, "link"));
      assert.equal(cacheDirProblem(path.join(base, "link")), undefined, "a link is followed to the folder it names");
      fs.chmodSync(base, 0o777);
      const out = path.join(base, "out.tar.zst");
      await assert.rejects(buildDebianImage({ suite: "bookworm", packages: [], cacheDir: base, output: out }), /Cannot build from this package cache: others may write/);
      assert.ok(!fs.existsSync(out), "nothing was written");
      assert.deepEqual(fs.readdirSync(base).filter((f) => f !== "open" && f !== "link"), [], "nothing made in it: no hook file, no package folder");
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it("a release gets its -updates and -security archives; a rolling suite does not", () => {
    assert.deepEqual(debianSources("bookworm", "http://deb.debian.org/debian"), [
      { uri: "http://deb.debian.org/debian", suite: "bookworm" },
      { uri: "http://deb.debian.org/debian", suite: "bookworm-updates" },
      { uri: "http://deb.debian.org/debian-security", suite: "bookworm-security" },
    ]);
    assert.deepEqual(debianSources("sid", "http://deb.debian.org/debian"), [{ uri: "http://deb.debian.org/debian", suite: "sid" }]);
    // A mirror not laid out like Debian's (no /debian): only the suite itself, nothing guessed.
    assert.deepEqual(debianSources("bookworm", "http://apt.internal/mirror"), [{ uri: "http://apt.internal/mirror", suite: "bookworm" }]);
  });

  it("uses the host's own Debian archive from one-line and deb822 sources, never its security archive", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "slipway-apt-"));
    try {
      assert.equal(hostDebianMirror(dir), undefined, "no sources at all");
      fs.mkdirSync(path.join(dir, "sources.list.d"));
      fs.writeFileSync(path.join(dir, "sources.list.d", "debian.sources"),
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example.net/debian/\nSuites: bookworm\n");
      assert.equal(hostDebianMirror(dir), "http://mirror.example.net/debian");
      fs.writeFileSync(path.join(dir, "sources.list"), "# deb http://commented.example/debian bookworm main\ndeb [signed-by=/k.gpg] https://local.example/debian bookworm main\n");
      assert.equal(hostDebianMirror(dir), "https://local.example/debian", "sources.list first");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
