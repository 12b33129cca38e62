import { after, afterEach, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { TftpErrorCode, decodeTftp, type TftpPacket } from "../../src/protocol/tftp.ts";
import { DataPacketCache } from "../../src/roles/distribution/tftp-files.ts";
import { createTftpServer, fileFromBuffer, fileFromPath, type TftpFile, type TftpServer, type TftpTransferEvent } from "../../src/roles/distribution/tftp-server.ts";
import { TftpTestClient } from "./tftp-client.ts";

const run = promisify(execFile);
const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

const BLK = 1468;
const sources: Record<string, Buffer> = {
  "ipxe.efi": randomBytes(300_000),
  "empty.bin": Buffer.alloc(0),
  "one.bin": randomBytes(1),
  "exact.bin": randomBytes(4 * BLK), // a whole number of 1468-byte blocks
  "exact512.bin": randomBytes(4 * 512),
  "short.bin": randomBytes(BLK - 1),
  "over.bin": randomBytes(BLK + 1),
  // 70,000 blocks of 8 bytes, then the closing empty block: block numbers wrap past 65535.
  "wrap.bin": randomBytes(8 * 70_000),
  "text.txt": Buffer.from("line one\nline two\r\nbare\rend"),
};

/** Every client a test opens, closed after each test even when it failed half-way. */
const openClients: TftpTestClient[] = [];
async function client(address?: string): Promise<TftpTestClient> {
  const c = await TftpTestClient.open(address);
  openClients.push(c);
  return c;
}
/** Servers a test starts for itself, closed after it even when it failed. */
const openServers: TftpServer[] = [];
async function startServer(options: Parameters<typeof createTftpServer>[0]): Promise<TftpServer> {
  const server = await createTftpServer(options);
  openServers.push(server);
  return server;
}
afterEach(async () => {
  await Promise.all(openClients.splice(0).map((c) => c.close()));
  await Promise.all(openServers.splice(0).map((s) => s.close()));
});

/** Polls until `check` holds; the server reports a transfer only once the final ACK is in. */
async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 250 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(check(), what);
}

function errorOf(r: { packet: TftpPacket }): { code: number; message: string } {
  assert.equal(r.packet.op, "ERROR", `expected an ERROR, got ${r.packet.op}`);
  return r.packet as { op: "ERROR"; code: number; message: string };
}

describe("TFTP server on loopback", { timeout: 120_000 }, () => {
  let server: TftpServer;
  let dir: string;
  const events: TftpTransferEvent[] = [];
  const asked: string[] = [];
  const logLines: string[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "slipway-tftp-"));
    const onDisk = path.join(dir, "disk.bin");
    await writeFile(onDisk, sources["ipxe.efi"]);
    const files = new Map<string, TftpFile>(Object.entries(sources).map(([n, b]) => [n, fileFromBuffer(b)]));
    files.set("boot/disk.bin", fileFromPath(onDisk, { memoryLimit: 0 })); // read per chunk, not held in memory
    files.set("boot/cached.bin", fileFromPath(onDisk));
    server = await createTftpServer({
      files: (name) => {
        asked.push(name);
        return files.get(name);
      },
      interfaces: null,
      address: "127.0.0.1",
      port: 0,
      // Long enough that no retransmission ever mixes into the precise tests below.
      timeoutMs: 5000,
      onTransfer: (e) => events.push(e),
      log: { debug() {}, info: (msg, f) => logLines.push(`${msg} ${JSON.stringify(f)}`), warn() {}, error: (msg) => logLines.push(`ERROR ${msg}`) },
    });
  });
  after(async () => {
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function curl(name: string, blksize = BLK): Promise<Buffer> {
    const out = path.join(dir, `curl-${randomBytes(4).toString("hex")}`);
    await run("curl", ["-sS", "--max-time", "30", `tftp://127.0.0.1:${server.port}/${name}`, "--tftp-blksize", String(blksize), "-o", out]);
    const bytes = await readFile(out);
    await rm(out);
    return bytes;
  }

  test("curl downloads files of every awkward size intact", async () => {
    // Not empty.bin: curl 7.88 fails every 0-byte TFTP download (getpeername, errno 107), from
    // tftpd-hpa too; the hand-driven client covers it below.
    for (const name of ["ipxe.efi", "one.bin", "exact.bin", "short.bin", "over.bin"]) {
      assert.equal(sha256(await curl(name)), sha256(sources[name]), name);
    }
    assert.equal(sha256(await curl("ipxe.efi", 512)), sha256(sources["ipxe.efi"]));
    // Read from disk through fileFromPath, and asked for with a leading slash.
    assert.equal(sha256(await curl("/boot/disk.bin")), sha256(sources["ipxe.efi"]));
    assert.equal(sha256(await curl("boot/cached.bin", 512)), sha256(sources["ipxe.efi"]));
  });

  test("atftp downloads with windowsize 16 (RFC 7440) intact", async () => {
    const out = path.join(dir, "atftp.out");
    const { stderr } = await run("atftp", ["--option", "windowsize 16", "--option", "blksize 1468", "-g", "-r", "ipxe.efi", "-l", out, "127.0.0.1", String(server.port)], { timeout: 30_000 });
    assert.equal(sha256(await readFile(out)), sha256(sources["ipxe.efi"]), stderr);
    await run("atftp", ["--option", "windowsize 16", "--option", "blksize 1468", "-g", "-r", "exact.bin", "-l", out, "127.0.0.1", String(server.port)], { timeout: 30_000 });
    assert.equal(sha256(await readFile(out)), sha256(sources["exact.bin"]));
  });

  test("busybox tftp downloads intact", async () => {
    const out = path.join(dir, "busybox.out");
    await run("busybox", ["tftp", "-g", "-r", "ipxe.efi", "-l", out, "-b", "1468", "127.0.0.1", String(server.port)], { timeout: 30_000 });
    assert.equal(sha256(await readFile(out)), sha256(sources["ipxe.efi"]));
  });

  test("a file of whole blocks ends with an empty DATA block", async () => {
    const c = await client();
    const got = await c.download(server.port, "exact512.bin");
    assert.deepEqual(got.blocks, [1, 2, 3, 4, 5]);
    assert.equal(sha256(got.bytes), sha256(sources["exact512.bin"]));
    await c.close();
  });

  test("a 0-byte file is one empty DATA block", async () => {
    const c = await client();
    const got = await c.download(server.port, "empty.bin", [["tsize", "0"]]);
    assert.deepEqual(got.blocks, [1]);
    assert.equal(got.bytes.length, 0);
    assert.equal(got.oack?.get("tsize"), "0");
    await c.close();
  });

  test("block numbers wrap from 65535 to 0 on files of more than 65535 blocks", async () => {
    for (const windowsize of ["1", "64"]) {
      const c = await client();
      const got = await c.download(server.port, "wrap.bin", [["blksize", "8"], ["windowsize", windowsize]]);
      assert.equal(sha256(got.bytes), sha256(sources["wrap.bin"]), `windowsize ${windowsize}`);
      assert.equal(got.blocks.length, 70_001);
      assert.deepEqual(got.blocks.slice(65_533, 65_539), [65_534, 65_535, 0, 1, 2, 3]);
      assert.equal(got.blocks.at(-1), 70_001 - 65_536);
      await c.close();
    }
  });

  test("a duplicate ACK is never answered with data (Sorcerer's Apprentice)", async () => {
    for (const windowsize of [1, 4]) {
      const c = await client();
      c.send({ op: "RRQ", filename: "ipxe.efi", mode: "octet", options: [["blksize", "512"], ["windowsize", String(windowsize)]] }, server.port);
      const oack = await c.next();
      assert.equal(oack.packet.op, "OACK");
      const tid = oack.port;
      c.send({ op: "ACK", block: 0 }, tid);
      for (let b = 1; b <= windowsize; b++) assert.deepEqual(((await c.next()).packet as { block: number }).block, b);
      c.send({ op: "ACK", block: windowsize }, tid);
      for (let b = windowsize + 1; b <= 2 * windowsize; b++) assert.deepEqual(((await c.next()).packet as { block: number }).block, b);
      // The same ACK again, twice: nothing may come back for it. The next ACK's window is then
      // the very next thing received, with no duplicate window in front of it.
      c.send({ op: "ACK", block: windowsize }, tid);
      c.send({ op: "ACK", block: windowsize }, tid);
      c.send({ op: "ACK", block: 2 * windowsize }, tid);
      for (let b = 2 * windowsize + 1; b <= 3 * windowsize; b++) {
        const r = await c.next();
        assert.equal(r.packet.op, "DATA");
        assert.equal((r.packet as { block: number }).block, b, `windowsize ${windowsize}`);
      }
      c.send({ op: "ERROR", code: TftpErrorCode.NotDefined, message: "enough" }, tid);
      await c.close();
    }
  });

  test("an ACK inside the window restarts the window after it (RFC 7440)", async () => {
    const c = await client();
    c.send({ op: "RRQ", filename: "ipxe.efi", mode: "octet", options: [["blksize", "512"], ["windowsize", "8"]] }, server.port);
    const tid = (await c.next()).port;
    c.send({ op: "ACK", block: 0 }, tid);
    for (let b = 1; b <= 8; b++) await c.next();
    c.send({ op: "ACK", block: 5 }, tid); // blocks 6..8 "lost"
    const again: number[] = [];
    for (let i = 0; i < 8; i++) again.push(((await c.next()).packet as { block: number }).block);
    assert.deepEqual(again, [6, 7, 8, 9, 10, 11, 12, 13]);
    c.send({ op: "ERROR", code: TftpErrorCode.NotDefined, message: "enough" }, tid);
    await c.close();
  });

  test("firmware's tsize probe: OACK, ERROR 8 ends the session quietly, the next request transfers", async () => {
    const before = events.length;
    const c = await client();
    // What OVMF sends (LAB-NOTES): tsize=0, blksize=1468, windowsize=4.
    const options: [string, string][] = [["tsize", "0"], ["blksize", "1468"], ["windowsize", "4"]];
    c.send({ op: "RRQ", filename: "ipxe.efi", mode: "octet", options }, server.port);
    const oack = await c.next();
    assert.deepEqual(oack.packet, { op: "OACK", options: [["tsize", "300000"], ["blksize", "1468"], ["windowsize", "4"]] });
    c.send({ op: "ERROR", code: TftpErrorCode.OptionsRefused, message: "" }, oack.port);
    // The same client port asks again, as the firmware does, and gets the whole file.
    const got = await c.download(server.port, "ipxe.efi", options);
    assert.equal(sha256(got.bytes), sha256(sources["ipxe.efi"]));
    const mine = (): TftpTransferEvent[] => events.slice(before).filter((e) => e.client === `127.0.0.1:${c.port}`);
    await eventually(() => mine().length === 2, "both sessions reported");
    assert.deepEqual(mine().map((e) => [e.ok, e.bytes]), [[false, 0], [true, 300_000]]);
    assert.match(mine()[0].reason ?? "", /tsize probe/);
    await c.close();
  });

  test("write requests are refused: the server is read-only", async () => {
    const c = await client();
    c.send({ op: "WRQ", filename: "ipxe.efi", mode: "octet", options: [] }, server.port);
    assert.equal(errorOf(await c.next()).code, TftpErrorCode.AccessViolation);
    c.send({ op: "RRQ", filename: "missing.bin", mode: "octet", options: [] }, server.port);
    assert.equal(errorOf(await c.next()).code, TftpErrorCode.FileNotFound);
    await c.close();
  });

  test("traversal spellings and hostile names get an ERROR; the server keeps serving", async () => {
    const c = await client();
    const names = ["../etc/passwd", "..\\x", "/../x", "C:\\boot.ini", "a/../../etc/passwd", "....//ipxe.efi", "..", "/", "\\..\\..\\ipxe.efi", "%2e%2e/ipxe.efi", ". ./x"];
    for (const filename of names) {
      c.send({ op: "RRQ", filename, mode: "octet", options: [] }, server.port);
      const e = errorOf(await c.next());
      assert.ok(e.code === TftpErrorCode.AccessViolation || e.code === TftpErrorCode.FileNotFound, `${filename}: ERROR ${e.code}`);
    }
    const raw = (s: string): Buffer => Buffer.concat([Buffer.of(0, 1), Buffer.from(s, "latin1")]);
    const hostile = [
      raw("ipxe.efi\0../../etc/passwd\0octet\0"), // a NUL inside the name
      raw(`${"A".repeat(4096)}\0octet\0`), // 4 KB name
      raw(`${"../".repeat(1300)}etc/passwd\0octet\0`),
      raw("ipxe.efi\0octet"), // mode without its NUL
      raw("\0octet\0"), // empty name
      raw("ipx\u00e9.efi\0octet\0"), // not ASCII
    ];
    for (const bytes of hostile) {
      c.sendRaw(bytes, server.port);
      const e = errorOf(await c.next());
      assert.ok([TftpErrorCode.IllegalOperation, TftpErrorCode.AccessViolation, TftpErrorCode.FileNotFound].includes(e.code as 1 | 2 | 4));
    }
    for (const name of asked) assert.ok(!name.split("/").includes("..") && !name.includes("\\") && !name.startsWith("/"), name);
    const got = await c.download(server.port, "ipxe.efi");
    assert.equal(sha256(got.bytes), sha256(sources["ipxe.efi"]));
    await c.close();
  });

  test("malformed datagrams are counted and never answered with data or crash the server", async () => {
    const before = server.stats().refused.malformed ?? 0;
    const c = await client();
    for (const bytes of [Buffer.alloc(0), Buffer.of(0), Buffer.of(0, 9), Buffer.of(0, 3, 0), Buffer.of(0, 4, 0, 1, 2), Buffer.concat([Buffer.of(0xff), randomBytes(600)])]) {
      c.sendRaw(bytes, server.port);
    }
    // Opcodes other than RRQ and WRQ get no reply (the server must not be a reflector); a
    // request after them is answered first.
    const got = await c.download(server.port, "one.bin");
    assert.equal(sha256(got.bytes), sha256(sources["one.bin"]));
    assert.ok((server.stats().refused.malformed ?? 0) - before >= 4);
    await c.close();
  });

  test("an ACK from another port gets ERROR 5 and the transfer goes on", async () => {
    const c = await client();
    const stray = await client();
    c.send({ op: "RRQ", filename: "over.bin", mode: "octet", options: [["blksize", "1468"]] }, server.port);
    const oack = await c.next();
    stray.send({ op: "ACK", block: 0 }, oack.port);
    assert.equal(errorOf(await stray.next()).code, TftpErrorCode.UnknownTransferId);
    c.send({ op: "ACK", block: 0 }, oack.port);
    const d1 = await c.next();
    assert.equal((d1.packet as { block: number }).block, 1);
    c.send({ op: "ACK", block: 1 }, oack.port);
    const d2 = await c.next();
    assert.deepEqual([(d2.packet as { block: number }).block, (d2.packet as { data: Uint8Array }).data.length], [2, 1]);
    c.send({ op: "ACK", block: 2 }, oack.port);
    await c.close();
    await stray.close();
  });

  test("a request repeated before any ACK is answered afresh; repeated mid-transfer it is ignored", async () => {
    const c = await client();
    const request: TftpPacket = { op: "RRQ", filename: "over.bin", mode: "octet", options: [["blksize", "1468"]] };
    c.send(request, server.port);
    const first = await c.next();
    c.send(request, server.port); // as if the first OACK were lost
    const second = await c.next();
    assert.deepEqual([first.packet.op, second.packet.op], ["OACK", "OACK"]);
    assert.notEqual(second.port, first.port);
    c.send({ op: "ACK", block: 0 }, second.port);
    const d1 = await c.next();
    assert.deepEqual([d1.packet.op, (d1.packet as { block: number }).block, d1.port], ["DATA", 1, second.port]);
    const duplicates = server.stats().refused.duplicate ?? 0;
    c.send(request, server.port); // a stale copy arriving late: the transfer carries on
    await eventually(() => (server.stats().refused.duplicate ?? 0) === duplicates + 1, "duplicate counted");
    c.send({ op: "ACK", block: 1 }, second.port);
    const d2 = await c.next();
    assert.deepEqual([d2.packet.op, (d2.packet as { block: number }).block, d2.port], ["DATA", 2, second.port]);
    c.send({ op: "ACK", block: 2 }, second.port);
  });

  test("netascii requests get LF as CR LF and CR as CR NUL (RFC 764)", async () => {
    const c = await client();
    c.send({ op: "RRQ", filename: "text.txt", mode: "netascii", options: [] }, server.port);
    const r = await c.next();
    assert.equal(Buffer.from((r.packet as { data: Uint8Array }).data).toString("latin1"), "line one\r\nline two\r\0\r\nbare\r\0end");
    c.send({ op: "ACK", block: 1 }, r.port);
    await c.close();
  });

  test("every finished session is logged and reported", () => {
    const ok = events.filter((e) => e.ok);
    assert.ok(ok.length >= 10);
    for (const e of ok) assert.ok(e.bytes >= 0 && e.ms >= 0 && /^127\.0\.0\.1:\d+$/.test(e.client));
    assert.equal(logLines.filter((l) => l.startsWith("TFTP transfer")).length, events.length);
    assert.ok(!logLines.some((l) => l.startsWith("ERROR")));
  });
});

describe("TFTP server timeouts and limits", { timeout: 60_000 }, () => {
  test("a lost ACK makes the server resend the block; a silent client is dropped", async () => {
    const events: TftpTransferEvent[] = [];
    const server = await startServer({
      files: () => fileFromBuffer(randomBytes(10_000)),
      interfaces: null,
      address: "127.0.0.1",
      port: 0,
      timeoutMs: 100,
      retries: 3,
      onTransfer: (e) => events.push(e),
    });
    const c = await client();
    c.send({ op: "RRQ", filename: "ipxe.efi", mode: "octet", options: [] }, server.port);
    const first = await c.next();
    assert.deepEqual([first.packet.op, (first.packet as { block: number }).block], ["DATA", 1]);
    // No ACK: the same block comes again after the timeout, from the same TID.
    const resent = await c.next();
    assert.deepEqual([resent.packet.op, (resent.packet as { block: number }).block, resent.port], ["DATA", 1, first.port]);
    // The ACK comes late: the transfer goes on, and the next lost ACK is resent after the timeout again.
    c.send({ op: "ACK", block: 1 }, first.port);
    const second = await c.next();
    assert.deepEqual([second.packet.op, (second.packet as { block: number }).block], ["DATA", 2]);
    const secondAgain = await c.next();
    assert.deepEqual([secondAgain.packet.op, (secondAgain.packet as { block: number }).block], ["DATA", 2]);
    // Stay silent: 3 retransmissions in all, then an ERROR and the session is gone.
    const seen: string[] = [];
    for (;;) {
      const r = await c.next();
      seen.push(r.packet.op);
      if (r.packet.op === "ERROR") break;
    }
    assert.deepEqual(seen, ["DATA", "DATA", "ERROR"]);
    // The transfer ran on a transfer thread: its end reaches the server just after its ERROR.
    await eventually(() => events.length === 1, "the dropped session reported");
    assert.equal(events.length, 1);
    assert.equal(events[0].ok, false);
    assert.match(events[0].reason ?? "", /timed out/);
    assert.equal(server.stats().sessions, 0);
    await c.close();
    await server.close();
  });

  test("sessions over the total or per-client limit are refused with 'server busy'", async () => {
    const server = await startServer({
      files: () => fileFromBuffer(randomBytes(10_000)),
      interfaces: null,
      address: "127.0.0.1",
      port: 0,
      timeoutMs: 10_000,
      maxSessions: 2,
      maxSessionsPerClient: 1,
    });
    const clients = await Promise.all(["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.3"].map((a) => client(a)));
    const ask = async (c: TftpTestClient) => {
      c.send({ op: "RRQ", filename: "f", mode: "octet", options: [] }, server.port);
      return c.next();
    };
    assert.equal((await ask(clients[0])).packet.op, "DATA");
    const perClient = errorOf(await ask(clients[1])); // same IP as the first
    assert.equal(perClient.code, TftpErrorCode.NotDefined);
    assert.equal((await ask(clients[2])).packet.op, "DATA");
    const total = errorOf(await ask(clients[3]));
    assert.match(total.message, /busy/i);
    assert.deepEqual(server.stats(), { sessions: 2, refused: { clientBusy: 1, busy: 1 }, transfers: 0 });
    await server.close();
    assert.equal(server.stats().sessions, 0);
    for (const c of clients) await c.close();
  });

  test("a file that shrinks under a transfer ends it with an ERROR, not short data", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "slipway-tftp-"));
    const p = path.join(dir, "f.bin");
    await writeFile(p, randomBytes(200_000));
    const file = fileFromPath(p, { memoryLimit: 0 });
    const events: TftpTransferEvent[] = [];
    const server = await startServer({ files: () => file, interfaces: null, address: "127.0.0.1", port: 0, onTransfer: (e) => events.push(e) });
    await truncate(p, 1000);
    const c = await client();
    await assert.rejects(c.download(server.port, "f.bin"), /ERROR 0/);
    assert.equal(events[0]?.ok, false);
    await c.close();
    await server.close();
    file.close();
    await rm(dir, { recursive: true });
  });

  test("options are validated at start-up", async () => {
    await assert.rejects(createTftpServer({ files: () => undefined, interfaces: null, port: 0, maxBlksize: 70_000 }), RangeError);
    await assert.rejects(createTftpServer({ files: () => undefined, interfaces: null, port: 0, maxWindowsize: 0 }), RangeError);
  });
});

describe("TFTP packets built once and shared", { timeout: 60_000 }, () => {
  test("a file's packets are built once per block size, shared, and dropped beyond the memory given", () => {
    const bytes = randomBytes(3000);
    const file = fileFromBuffer(bytes);
    const cache = new DataPacketCache(8000);
    const set = cache.packets(file, 1468);
    assert.ok(set);
    assert.equal(cache.packets(file, 1468), set, "the same packets again, not a copy");
    // Laid out back to back: DATA 1 and 2 whole, DATA 3 the last 64 bytes.
    const stride = 4 + 1468;
    const packets = [0, 1, 2].map((j) => decodeTftp(set.packets.subarray(j * stride, Math.min((j + 1) * stride, set.packets.length))));
    assert.deepEqual(packets.map((p) => [p.op, (p as { block: number }).block, (p as { data: Uint8Array }).data.length]), [["DATA", 1, 1468], ["DATA", 2, 1468], ["DATA", 3, 64]]);
    assert.equal(sha256(Buffer.concat(packets.map((p) => (p as { data: Uint8Array }).data))), sha256(bytes));
    const small = cache.packets(file, 512);
    assert.equal(small?.packets.length, 3000 + 4 * 6);
    // A third set does not fit beside the other two (3,012 + 3,024 + 3,016 > 8,000): the one
    // used least recently (1468) is dropped, and asked for again it is built anew.
    assert.ok(cache.packets(fileFromBuffer(randomBytes(3000)), 1000));
    assert.equal(cache.packets(file, 512), small);
    const again = cache.packets(file, 1468);
    assert.notEqual(again, set);
    assert.deepEqual(again?.packets, set.packets);
    // Nor is a file kept whose packets alone exceed the memory given; without bytes in memory, none.
    assert.equal(cache.packets(fileFromBuffer(randomBytes(9000)), 1468), undefined);
    assert.equal(cache.packets({ size: 10, read: () => new Uint8Array(10) }, 1468), undefined);
  });

  test("a loader changed on disk is served with its new content once opened again, never mid-way", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "slipway-tftp-"));
    const p = path.join(dir, "loader.efi");
    const original = randomBytes(100_000);
    const changed = randomBytes(100_000); // the same size: only the content tells them apart
    await writeFile(p, original);
    let current = fileFromPath(p);
    const server = await startServer({ files: () => current, interfaces: null, address: "127.0.0.1", port: 0 });
    const c = await client();
    const fetch = async (): Promise<string> => sha256((await c.download(server.port, "loader.efi", [["blksize", "1468"]])).bytes);
    // Twice: the second transfer is served from the packets the first one built.
    assert.equal(await fetch(), sha256(original));
    assert.equal(await fetch(), sha256(original));
    await writeFile(p, changed);
    // The file as it was opened (see fileFromPath): a machine never gets half of each version.
    assert.equal(await fetch(), sha256(original));
    current.close();
    current = fileFromPath(p);
    assert.equal(await fetch(), sha256(changed));
    current.close();
    await rm(dir, { recursive: true });
  });

  test("with transfer threads off, in-memory files are served from the main thread alike", async () => {
    const server = await startServer({ files: () => fileFromBuffer(sources["ipxe.efi"]), interfaces: null, address: "127.0.0.1", port: 0, threads: 0 });
    const c = await client();
    for (const windowsize of ["1", "16"]) {
      const got = await c.download(server.port, "ipxe.efi", [["blksize", "1468"], ["windowsize", windowsize]]);
      assert.equal(sha256(got.bytes), sha256(sources["ipxe.efi"]), `windowsize ${windowsize}`);
    }
    await eventually(() => server.stats().transfers === 2, "both transfers reported");
  });

  test("a process whose transfer threads served a download still exits when it ends without closing the server", async () => {
    // Transfer threads sleep in epoll_wait(2); Node ends a worker only when it runs JavaScript again,
    // and joins every worker at exit. A thread asleep for good would hold the process forever.
    const script = [
      `import { createTftpServer, fileFromBuffer } from ${JSON.stringify(new URL("../../src/roles/distribution/tftp-server.ts", import.meta.url).href)};`,
      `import { execFile } from "node:child_process";`,
      `import { promisify } from "node:util";`,
      `const server = await createTftpServer({ files: () => fileFromBuffer(Buffer.alloc(100000, 7)), interfaces: null, address: "127.0.0.1", port: 0 });`,
      `await promisify(execFile)("curl", ["-sS", "--max-time", "20", "tftp://127.0.0.1:" + server.port + "/x", "--tftp-blksize", "1468", "-o", "/dev/null"]);`,
      `for (let i = 0; i < 500 && server.stats().transfers < 1; i++) await new Promise((r) => setTimeout(r, 20));`,
      `console.log("served", JSON.stringify(server.stats()));`,
      `process.exit(0);`,
    ].join("\n");
    const { stdout } = await run(process.execPath, ["--disable-warning=ExperimentalWarning", "--input-type=module", "-e", script], { timeout: 60_000 });
    assert.match(stdout, /^served \{"sessions":0,.*"transfers":1\}/);
  });
});
