import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createTwoLinkLab, SERVER_A, SERVER_B, type Agent, type TwoLinkLab } from "./netns.ts";

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
const RRQ = "\u0000\u0001ipxe.efi\u0000octet\u0000"; // RFC 1350 read request, as latin1 text

describe("TFTP server bound to one link", { timeout: 90_000 }, () => {
  let lab: TwoLinkLab;
  let dir: string;
  let server: Agent;
  let peerB: Agent;
  const content = randomBytes(200_000);

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "slipway-tftp-links-"));
    await writeFile(path.join(dir, "ipxe.efi"), content);
    lab = await createTwoLinkLab();
    [server, peerB] = await Promise.all([lab.agent(lab.server), lab.agent(lab.b)]);
    await server.call("tftp", { interfaces: ["veth-a0"], port: 69, files: { "ipxe.efi": path.join(dir, "ipxe.efi") } });
  });
  after(async () => {
    await lab?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("a client on the chosen link downloads the file", async () => {
    const out = path.join(dir, "from-a.bin");
    const r = await lab.exec(lab.a, "curl", ["-sS", "--max-time", "20", `tftp://${SERVER_A}/ipxe.efi`, "--tftp-blksize", "1468", "-o", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(await readFile(out)), sha256(content));
  });

  test("windows reach a client on a link whose MTU is below the block: the kernel refuses GSO there and the server sends datagram by datagram", async () => {
    // With UDP GSO each segment must fit the device's MTU (the kernel says EMSGSIZE or EINVAL);
    // without it a 1,500-byte datagram is sent in IP fragments. The transfer must fall back, not fail.
    try {
      for (const mtu of ["1500", "1400"]) {
        const set = await lab.exec(lab.server, "ip", ["link", "set", "veth-a0", "mtu", mtu]);
        assert.equal(set.code, 0, set.stderr);
        const out = path.join(dir, `window-mtu-${mtu}.bin`);
        const r = await lab.exec(lab.a, "atftp", ["--option", "windowsize 16", "--option", "blksize 1468", "-g", "-r", "ipxe.efi", "-l", out, SERVER_A, "69"]);
        assert.equal(r.code, 0, `MTU ${mtu}: ${r.stderr}`);
        assert.equal(sha256(await readFile(out)), sha256(content), `MTU ${mtu}`);
      }
    } finally {
      await lab.exec(lab.server, "ip", ["link", "set", "veth-a0", "mtu", "1500"]);
    }
  });

  test("a client on the other link gets no answer, whichever server address it asks", async () => {
    const before = await lab.udpNoPorts();
    const statsBefore = (await server.call("tftpStats")).stats as { transfers: number; sessions: number; refused: Record<string, number> };
    await peerB.call("open", { name: "c", interface: null, port: 0 });
    // Link A's address, reached through link B, and link B's own address.
    await peerB.call("send", { name: "c", host: SERVER_A, port: 69, text: RRQ });
    await peerB.call("send", { name: "c", host: SERVER_B, port: 69, text: RRQ });

    // Both requests reached the server namespace and found no socket there: counted by the
    // kernel, never seen by the server, never answered.
    let noPorts = await lab.udpNoPorts();
    for (let i = 0; i < 100 && noPorts - before < 2; i++) {
      await new Promise((r) => setTimeout(r, 20));
      noPorts = await lab.udpNoPorts();
    }
    assert.equal(noPorts - before, 2);
    const got = await peerB.call("wait", { name: "c", count: 1, timeoutMs: 500 });
    assert.deepEqual(got.messages, []);
    assert.deepEqual((await server.call("tftpStats")).stats, statsBefore);
    await peerB.call("close", { name: "c" });
  });

  test("control: a server on every interface does answer link B (the check above can fail)", async () => {
    const control = await lab.agent(lab.server);
    const { port } = await control.call("tftp", { interfaces: null, port: 1069, files: { "ipxe.efi": path.join(dir, "ipxe.efi") } });
    await peerB.call("open", { name: "c2", interface: null, port: 0 });
    await peerB.call("send", { name: "c2", host: SERVER_A, port, text: RRQ });
    const got = (await peerB.call("wait", { name: "c2", count: 1, timeoutMs: 5000 })).messages as { text: string; from: string }[];
    assert.equal(got.length, 1);
    assert.equal(got[0].text.charCodeAt(1), 3); // DATA block 1
    await peerB.call("close", { name: "c2" });
    await control.call("tftpClose");
  });
});
