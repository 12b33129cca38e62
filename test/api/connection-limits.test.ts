/**
 * Found by the outside attack on issue #10's fixes: plain TCP connections that never start
 * TLS, opened from two addresses, held every file descriptor of the site process and refused
 * every other client. One address may now hold only so many connections at once.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { startTestSite, httpsRequest, type TestSite } from "../support/site.ts";
import { request } from "../support/device.ts";
import { MAX_CONNECTIONS_PER_ADDRESS } from "../../src/roles/pipeline.ts";

function connect(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, localAddress }, () => resolve(s));
    s.once("error", reject);
  });
}

/** Resolves true when the server closes the socket within a moment of its opening. */
function closedByServer(s: net.Socket): Promise<boolean> {
  return new Promise((resolve) => {
    s.once("close", () => resolve(true));
    s.once("error", () => resolve(true));
    // A socket the server keeps stays open until the TLS handshake timeout (10 s); the server
    // closes one over the limit at once, so a second suffices even on a loaded machine.
    setTimeout(() => resolve(s.destroyed), 2_000).unref();
  });
}

describe("connection limits", () => {
  let t: TestSite;
  const held: net.Socket[] = [];
  before(async () => {
    t = await startTestSite();
  });
  after(async () => {
    for (const s of held) s.destroy();
    await t.close();
  });

  for (const which of ["site", "management point"] as const) {
    it(`one address cannot hold every connection of the ${which}; others are still served`, async () => {
      const port = which === "site" ? t.server.port : t.mp.port;
      for (let i = 0; i < MAX_CONNECTIONS_PER_ADDRESS; i++) held.push(await connect(port, "127.0.0.3"));
      const over = await connect(port, "127.0.0.3");
      assert.ok(await closedByServer(over), "a connection over the limit is closed at once");
      const other = which === "site" ? await httpsRequest(t.url, t.ca, "GET", "/api/v1/health")
        : await request(t.mp.url, { method: "GET", path: "/mp/v1/crl", ca: t.ca });
      assert.equal(other.status, 200, "another address is served");
      assert.ok(t.logLines.some((l) => l.includes("too many open connections from one address") && l.includes("127.0.0.3")), "the refusal is logged");
      for (const s of held.splice(0)) s.destroy();
    });
  }
});
