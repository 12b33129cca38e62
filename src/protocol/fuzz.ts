/**
 * Fuzzer for the wire decoders. Feeds random bytes, structured near-valid packets and
 * mutations of a seed corpus to decodeDhcp and decodeTftp, and fails when anything other
 * than DecodeError comes out — or when a packet that decodes does not encode back to the same
 * bytes, or the accessors and helpers a server runs on it throw anything but DecodeError.
 *
 *   node src/protocol/fuzz.ts [iterations per decoder = 100000] [seed]
 *
 * exits 1 and prints the failing inputs as hex when something breaks.
 */

import {
  DhcpMessageType,
  buildReply,
  clientArch,
  clientUuid,
  decodeDhcp,
  encodeDhcp,
  ipxeFeatures,
  isHttpClient,
  isIpxe,
  isPxeClient,
  messageType,
  optionData,
  pxeBootItem,
  userClass,
  vendorClass,
} from "./dhcp.ts";
import { DecodeError } from "./reader.ts";
import { decodeTftp, encodeTftp, negotiateOptions, normalizeTftpPath } from "./tftp.ts";

export type FuzzFailure = { decoder: "dhcp" | "tftp"; input: string; error: string };

export type FuzzReport = {
  /** Inputs run through each decoder. */
  iterations: number;
  seed: number;
  /** Inputs each decoder accepted (and that then round-tripped). */
  decoded: { dhcp: number; tftp: number };
  failures: FuzzFailure[];
  elapsedMs: number;
};

export type FuzzCorpus = { dhcp: Uint8Array[]; tftp: Uint8Array[] };

/** Runs `iterations` inputs through each decoder; the same seed gives the same inputs. */
export function fuzzDecoders(iterations: number, seed: number, corpus: FuzzCorpus = builtInCorpus()): FuzzReport {
  const rand = mulberry32(seed);
  const report: FuzzReport = { iterations, seed, decoded: { dhcp: 0, tftp: 0 }, failures: [], elapsedMs: 0 };
  const started = performance.now();
  for (let i = 0; i < iterations; i++) {
    const dhcp = dhcpInput(rand, corpus.dhcp);
    const dhcpProblem = checkDhcp(dhcp);
    if (dhcpProblem === "decoded") report.decoded.dhcp++;
    else if (dhcpProblem !== "refused") report.failures.push({ decoder: "dhcp", input: hex(dhcp), error: dhcpProblem });

    const tftp = tftpInput(rand, corpus.tftp);
    const tftpProblem = checkTftp(tftp);
    if (tftpProblem === "decoded") report.decoded.tftp++;
    else if (tftpProblem !== "refused") report.failures.push({ decoder: "tftp", input: hex(tftp), error: tftpProblem });
  }
  report.elapsedMs = performance.now() - started;
  return report;
}

/** A few valid packets built with the encoders, for when no fixtures are at hand. */
export function builtInCorpus(): FuzzCorpus {
  const request = decodeDhcp(
    encodeDhcp({
      op: 1,
      htype: 1,
      hlen: 6,
      hops: 0,
      xid: 0x01020304,
      secs: 0,
      flags: 0x8000,
      ciaddr: "0.0.0.0",
      yiaddr: "0.0.0.0",
      siaddr: "0.0.0.0",
      giaddr: "0.0.0.0",
      chaddr: Uint8Array.of(0x52, 0x54, 0, 0x12, 0x34, 0x56),
      sname: "",
      file: "",
      options: [
        { code: 53, data: Uint8Array.of(1) },
        { code: 93, data: Uint8Array.of(0, 7) },
        { code: 60, data: new TextEncoder().encode("PXEClient:Arch:00007:UNDI:003000") },
        { code: 77, data: new TextEncoder().encode("iPXE") },
        { code: 97, data: new Uint8Array(17) },
        { code: 175, data: Uint8Array.of(0xb1, 5, 1, 0x80, 0x86, 0x10, 0x0e) },
      ],
      padding: new Uint8Array(20),
    }),
  );
  const reply = buildReply(request, { messageType: DhcpMessageType.Offer, serverId: "10.0.0.1", bootfile: "ipxe.efi", ipxeNoProxyDhcp: true });
  const tftp = [
    encodeTftp({ op: "RRQ", filename: "boot/ipxe.efi", mode: "octet", options: [["tsize", "0"], ["blksize", "1468"], ["windowsize", "4"]] }),
    encodeTftp({ op: "WRQ", filename: "x", mode: "netascii", options: [] }),
    encodeTftp({ op: "DATA", block: 1, data: new Uint8Array(32) }),
    encodeTftp({ op: "ACK", block: 65535 }),
    encodeTftp({ op: "ERROR", code: 8, message: "User aborted the transfer" }),
    encodeTftp({ op: "OACK", options: [["blksize", "1468"], ["tsize", "123456"]] }),
  ];
  return { dhcp: [encodeDhcp(request), encodeDhcp(reply)], tftp };
}

// ---------------------------------------------------------------------------------------

type Rand = () => number; // uniform in [0, 2^32)

function checkDhcp(input: Uint8Array): string {
  let msg;
  try {
    msg = decodeDhcp(input);
  } catch (e) {
    return e instanceof DecodeError ? "refused" : describe(e);
  }
  try {
    const again = encodeDhcp(msg);
    if (!sameBytes(again, input)) return "encodeDhcp(decodeDhcp(x)) differs from x";
    for (const read of [
      () => messageType(msg),
      () => vendorClass(msg),
      () => userClass(msg),
      () => clientArch(msg),
      () => clientUuid(msg),
      () => clientUuid(msg, "network"),
      () => ipxeFeatures(msg),
      () => pxeBootItem(msg),
      () => optionData(msg, 55),
    ]) {
      try {
        read();
      } catch (e) {
        if (!(e instanceof DecodeError)) return `accessor: ${describe(e)}`;
      }
    }
    isPxeClient(msg);
    isHttpClient(msg);
    isIpxe(msg);
    encodeDhcp(buildReply(msg, { messageType: DhcpMessageType.Offer, serverId: "10.0.0.1", bootfile: "ipxe.efi", ipxeNoProxyDhcp: true }));
  } catch (e) {
    return describe(e);
  }
  return "decoded";
}

function checkTftp(input: Uint8Array): string {
  let packet;
  try {
    packet = decodeTftp(input);
  } catch (e) {
    return e instanceof DecodeError ? "refused" : describe(e);
  }
  try {
    if (!sameBytes(encodeTftp(packet), input)) return "encodeTftp(decodeTftp(x)) differs from x";
    if (packet.op === "RRQ" || packet.op === "WRQ") {
      normalizeTftpPath(packet.filename);
      negotiateOptions(packet.options, { maxBlksize: 1468, maxWindowsize: 16, fileSize: 1 << 20 });
    }
  } catch (e) {
    return describe(e);
  }
  return "decoded";
}

function dhcpInput(rand: Rand, seeds: Uint8Array[]): Uint8Array {
  const kind = rand() % 4;
  if (kind === 0 || seeds.length === 0) return randomBytes(rand, rand() % 600);
  if (kind === 1) {
    // A sound header and cookie with random option TLVs behind it: reaches the option parser.
    const header = randomBytes(rand, 236);
    header[0] = 1 + (rand() % 2);
    header[2] = rand() % 17;
    const parts: Uint8Array[] = [header, Uint8Array.of(99, 130, 83, 99)];
    const count = rand() % 12;
    for (let i = 0; i < count; i++) {
      const code = pick(rand, [0, 52, 53, 60, 77, 93, 97, 43, 175, rand() % 256]);
      const len = rand() % 8 === 0 ? rand() % 256 : rand() % 20;
      parts.push(Uint8Array.of(code, len), randomBytes(rand, rand() % 16 === 0 ? rand() % 300 : len));
    }
    if (rand() % 8 !== 0) parts.push(Uint8Array.of(255), new Uint8Array(rand() % 64));
    return concat(parts);
  }
  return mutate(rand, pick(rand, seeds));
}

const TFTP_WORDS = ["octet", "netascii", "mail", "OCTET", "blksize", "tsize", "timeout", "windowsize", "0", "1468", "65464", "99999999", "..", "a/b", "\\x", ""];

function tftpInput(rand: Rand, seeds: Uint8Array[]): Uint8Array {
  const kind = rand() % 4;
  if (kind === 0 || seeds.length === 0) return randomBytes(rand, rand() % 80);
  if (kind === 1) {
    // An opcode followed by NUL-terminated words: reaches the string and option parsers.
    const parts: Uint8Array[] = [Uint8Array.of(0, rand() % 8)];
    const count = rand() % 7;
    for (let i = 0; i < count; i++) {
      parts.push(rand() % 6 === 0 ? randomBytes(rand, rand() % 10) : new TextEncoder().encode(pick(rand, TFTP_WORDS)));
      if (rand() % 10 !== 0) parts.push(Uint8Array.of(0));
    }
    return concat(parts);
  }
  return mutate(rand, pick(rand, seeds));
}

function mutate(rand: Rand, seed: Uint8Array): Uint8Array {
  let out: Uint8Array = seed.slice();
  const rounds = 1 + (rand() % 4);
  for (let r = 0; r < rounds; r++) {
    const at = out.length === 0 ? 0 : rand() % out.length;
    switch (rand() % 7) {
      case 0:
        if (out.length) out[at] ^= 1 << (rand() % 8);
        break;
      case 1:
        if (out.length) out[at] = rand() & 0xff;
        break;
      case 2:
        if (out.length) out[at] = pick(rand, [0, 1, 0x7f, 0x80, 0xfe, 0xff]);
        break;
      case 3:
        out = out.slice(0, at);
        break;
      case 4:
        out = concat([out.subarray(0, at), Uint8Array.of(rand() & 0xff), out.subarray(at)]);
        break;
      case 5:
        out = concat([out.subarray(0, at), out.subarray(at + 1 + (rand() % 8))]);
        break;
      case 6: {
        const len = 1 + (rand() % 16);
        out = concat([out.subarray(0, at), out.subarray(at, at + len), out.subarray(at)]);
        break;
      }
    }
  }
  return out;
}

function mulberry32(seed: number): Rand {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function randomBytes(rand: Rand, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rand() & 0xff;
  return out;
}

function pick<T>(rand: Rand, items: readonly T[]): T {
  return items[rand() % items.length];
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function describe(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

async function main(): Promise<void> {
  const iterations = Number(process.argv[2] ?? 100_000);
  const seed = Number(process.argv[3] ?? Date.now() % 2 ** 32);
  if (!Number.isSafeInteger(iterations) || iterations < 0 || !Number.isSafeInteger(seed)) {
    console.error("usage: node src/protocol/fuzz.ts [iterations] [seed]");
    process.exit(2);
  }
  // The fixtures are real client option sets; the fuzzer reads them only when run as a script.
  const { readFixtures } = await import("./fixtures/load.ts");
  const builtIn = builtInCorpus();
  const corpus = { dhcp: [...readFixtures("dhcp-").values(), ...builtIn.dhcp], tftp: builtIn.tftp };
  const report = fuzzDecoders(iterations, seed, corpus);
  const rate = Math.round((2 * iterations) / (report.elapsedMs / 1000));
  console.log(
    `fuzz seed ${seed}: ${iterations} inputs per decoder in ${(report.elapsedMs / 1000).toFixed(1)} s (${rate} inputs/s); ` +
      `decoded dhcp ${report.decoded.dhcp}, tftp ${report.decoded.tftp}; failures ${report.failures.length}`,
  );
  for (const f of report.failures.slice(0, 10)) console.log(`  ${f.decoder}: ${f.error}\n    ${f.input}`);
  process.exit(report.failures.length === 0 ? 0 : 1);
}

if (import.meta.main) await main();
