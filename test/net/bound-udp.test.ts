import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { interfaceIPv4, openBoundUdpSocket } from "../../src/net/bound-udp.ts";
import { createTwoLinkLab, PEER_A, SERVER_A, SERVER_B, type Agent, type TwoLinkLab } from "./netns.ts";

type Message = { text: string; from: string; port: number };
const texts = (r: Record<string, unknown>): string[] => (r.messages as Message[]).map((m) => m.text).sort();

describe("interface-bound UDP sockets in a two-link lab", { timeout: 60_000 }, () => {
  let lab: TwoLinkLab;
  let server: Agent;
  let peerA: Agent;
  let peerB: Agent;

  before(async () => {
    lab = await createTwoLinkLab();
    [server, peerA, peerB] = await Promise.all([lab.agent(lab.server), lab.agent(lab.a), lab.agent(lab.b)]);
  });
  after(async () => {
    await lab?.close();
  });

  test("a socket bound to one interface receives broadcasts from its own link only", async () => {
    // Three sockets share port 6767 in the server namespace: one per link and a plain one that
    // hears every link (the control: it proves both broadcasts reached the server).
    await server.call("open", { name: "on-a", interface: "veth-a0", port: 6767, reuseAddr: true });
    await server.call("open", { name: "on-b", interface: "veth-b0", port: 6767, reuseAddr: true });
    await server.call("open", { name: "any", interface: null, port: 6767, reuseAddr: true });
    await peerA.call("open", { name: "c", interface: "veth-a1", port: 6868, broadcast: true });
    await peerB.call("open", { name: "c", interface: "veth-b1", port: 6868, broadcast: true });

    await peerA.call("send", { name: "c", host: "255.255.255.255", port: 6767, text: "from link A" });
    await peerB.call("send", { name: "c", host: "255.255.255.255", port: 6767, text: "from link B" });

    assert.deepEqual(texts(await server.call("wait", { name: "any", count: 2, timeoutMs: 5000 })), ["from link A", "from link B"]);
    // The kernel queues a broadcast to every matching socket at once: once the plain socket
    // has both, the bound ones have had their chance.
    assert.deepEqual(texts(await server.call("wait", { name: "on-a", count: 2, timeoutMs: 300 })), ["from link A"]);
    assert.deepEqual(texts(await server.call("wait", { name: "on-b", count: 2, timeoutMs: 300 })), ["from link B"]);
    const [fromA] = (await server.call("wait", { name: "on-a", count: 1, timeoutMs: 0 })).messages as Message[];
    assert.equal(fromA.from, PEER_A);

    for (const name of ["on-a", "on-b", "any"]) await server.call("close", { name });
    await peerA.call("close", { name: "c" });
    await peerB.call("close", { name: "c" });
  });

  test("unicast for this link's address arriving on another link is not delivered", async () => {
    await server.call("open", { name: "on-a", interface: "veth-a0", port: 6767 });
    await peerA.call("open", { name: "c", interface: null, port: 0 });
    await peerB.call("open", { name: "c", interface: null, port: 0 });
    const noPortsBefore = await lab.udpNoPorts();

    // B routes to link A's address through the server: it arrives on veth-b0, addressed to an
    // address the server owns. A socket on 0.0.0.0 without a device would take it.
    await peerB.call("send", { name: "c", host: SERVER_A, port: 6767, text: "from link B" });
    await peerA.call("send", { name: "c", host: SERVER_A, port: 6767, text: "from link A" });

    assert.deepEqual(texts(await server.call("wait", { name: "on-a", count: 1, timeoutMs: 5000 })), ["from link A"]);
    // B's datagram reached the server namespace and found no socket: counted, not delivered.
    let noPorts = await lab.udpNoPorts();
    for (let i = 0; i < 50 && noPorts === noPortsBefore; i++) {
      await new Promise((r) => setTimeout(r, 20));
      noPorts = await lab.udpNoPorts();
    }
    assert.equal(noPorts - noPortsBefore, 1);
    assert.deepEqual(texts(await server.call("wait", { name: "on-a", count: 2, timeoutMs: 200 })), ["from link A"]);

    await server.call("close", { name: "on-a" });
    await peerA.call("close", { name: "c" });
    await peerB.call("close", { name: "c" });
  });

  test("a bound socket sends limited broadcasts out of its own interface only", async () => {
    await server.call("open", { name: "on-a", interface: "veth-a0", port: 6767, broadcast: true });
    await server.call("open", { name: "on-b", interface: "veth-b0", port: 6767, broadcast: true });
    await peerA.call("open", { name: "c", interface: "veth-a1", port: 6868 });
    await peerB.call("open", { name: "c", interface: "veth-b1", port: 6868 });

    // No route for 255.255.255.255 exists in the server namespace: the device binding alone
    // picks the way out.
    await server.call("send", { name: "on-a", host: "255.255.255.255", port: 6868, text: "offer on A" });
    await server.call("send", { name: "on-b", host: "255.255.255.255", port: 6868, text: "offer on B" });

    const gotA = (await peerA.call("wait", { name: "c", count: 1, timeoutMs: 5000 })).messages as Message[];
    assert.deepEqual(gotA.map((m) => [m.text, m.from, m.port]), [["offer on A", SERVER_A, 6767]]);
    const gotB = (await peerB.call("wait", { name: "c", count: 1, timeoutMs: 5000 })).messages as Message[];
    assert.deepEqual(gotB.map((m) => [m.text, m.from, m.port]), [["offer on B", SERVER_B, 6767]]);
    // Each peer heard its own link's broadcast; give the other one time to show up if it leaked.
    assert.deepEqual(texts(await peerA.call("wait", { name: "c", count: 2, timeoutMs: 200 })), ["offer on A"]);
    assert.deepEqual(texts(await peerB.call("wait", { name: "c", count: 2, timeoutMs: 200 })), ["offer on B"]);

    await server.call("close", { name: "on-a" });
    await server.call("close", { name: "on-b" });
    await peerA.call("close", { name: "c" });
    await peerB.call("close", { name: "c" });
  });

  test("sockets on different interfaces share a port; a second one on the same interface is refused", async () => {
    await server.call("open", { name: "a1", interface: "veth-a0", port: 6969 });
    await server.call("open", { name: "b1", interface: "veth-b0", port: 6969 });
    await assert.rejects(server.call("open", { name: "a2", interface: "veth-a0", port: 6969 }), { code: "EADDRINUSE" });
    // Without SO_REUSEADDR a socket on every interface would take the port from them, too.
    await assert.rejects(server.call("open", { name: "any", interface: null, port: 6969 }), { code: "EADDRINUSE" });
    await server.call("close", { name: "a1" });
    await server.call("close", { name: "b1" });
  });

  test("an interface that does not exist is refused with ENODEV", async () => {
    await assert.rejects(server.call("open", { name: "x", interface: "veth-zz", port: 0 }), { code: "ENODEV" });
  });
});

describe("plain and local behaviour", () => {
  test("interface null gives an ordinary socket that sends and receives", async () => {
    const a = await openBoundUdpSocket({ interface: null, port: 0, address: "127.0.0.1" });
    const b = await openBoundUdpSocket({ interface: null, port: 0, address: "127.0.0.1" });
    const got = new Promise<string>((resolve) => b.once("message", (m) => resolve(m.toString())));
    a.send("ping", b.address().port, "127.0.0.1");
    assert.equal(await got, "ping");
    a.close();
    b.close();
  });

  test("a socket bound to lo hears loopback traffic through dgram's usual API", async () => {
    const a = await openBoundUdpSocket({ interface: "lo", port: 0, address: "127.0.0.1" });
    assert.equal(a.address().address, "127.0.0.1");
    const b = await openBoundUdpSocket({ interface: null, port: 0, address: "127.0.0.1" });
    const got = new Promise<[string, number]>((resolve) => a.once("message", (m, r) => resolve([m.toString(), r.port])));
    b.send("hello", a.address().port, "127.0.0.1");
    assert.deepEqual(await got, ["hello", b.address().port]);
    a.close();
    b.close();
  });

  test("bad names and addresses are refused before any socket is made", async () => {
    await assert.rejects(openBoundUdpSocket({ interface: "a-name-longer-than-15", port: 0 }), RangeError);
    await assert.rejects(openBoundUdpSocket({ interface: "", port: 0 }), RangeError);
    await assert.rejects(openBoundUdpSocket({ interface: null, port: 70000 }), RangeError);
    await assert.rejects(openBoundUdpSocket({ interface: null, port: 0, address: "::1" }), RangeError);
  });

  test("interfaceIPv4 reads the loopback address and knows no missing interface", () => {
    assert.deepEqual(interfaceIPv4("lo"), { address: "127.0.0.1", netmask: "255.0.0.0", cidr: "127.0.0.1/8" });
    assert.equal(interfaceIPv4("no-such-if0"), undefined);
  });
});
