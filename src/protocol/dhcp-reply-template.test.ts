import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { DhcpMessageType, DhcpOption, buildReply, decodeDhcp, encodeDhcp, vendorClass, type ReplyFields } from "./dhcp.ts";
import { ReplyTemplate, replyShape } from "./dhcp-reply-template.ts";
import { readFixtures } from "./fixtures/load.ts";

const fixtures = readFixtures("dhcp-");

const FIELDS: ReplyFields[] = [
  { messageType: DhcpMessageType.Offer, serverId: "10.0.0.1", siaddr: "10.0.0.1", bootfile: "undionly.kpxe",
    options: [{ code: DhcpOption.VendorSpecific, data: Uint8Array.of(6, 1, 8, 255) }] },
  { messageType: DhcpMessageType.Ack, serverId: "192.168.7.1", siaddr: "192.168.7.1", bootfile: "http://192.168.7.1:8080/ipxe/start", ipxeNoProxyDhcp: true },
  // A boot file too long for the `file` field travels in option 67 only.
  { messageType: DhcpMessageType.Offer, serverId: "10.0.0.1", bootfile: `http://10.0.0.1/${"x".repeat(150)}` },
];

/** `raw` with the per-request fields overwritten: what varies between two machines of one shape. */
function vary(raw: Uint8Array, v: { htype: number; hlen: number; xid: Uint8Array; flags: Uint8Array; ciaddr: Uint8Array; giaddr: Uint8Array; chaddr: Uint8Array; uuid: Uint8Array }): Uint8Array {
  const out = raw.slice();
  out[1] = v.htype;
  out[2] = v.hlen;
  out.set(v.xid, 4);
  out.set(v.flags, 10);
  out.set(v.ciaddr, 12);
  out.set(v.giaddr, 24);
  out.set(v.chaddr, 28);
  // Option 97's data, wherever the request carries it (type byte kept, 16 GUID bytes varied).
  for (let i = 240; i < out.length && out[i] !== DhcpOption.End; ) {
    if (out[i] === DhcpOption.Pad) {
      i++;
      continue;
    }
    if (out[i] === DhcpOption.ClientUuid && out[i + 1] === 17) out.set(v.uuid, i + 3);
    i += 2 + out[i + 1];
  }
  return out;
}

const variation = fc.record({
  htype: fc.integer({ min: 0, max: 255 }),
  hlen: fc.integer({ min: 0, max: 16 }),
  xid: fc.uint8Array({ minLength: 4, maxLength: 4 }),
  flags: fc.uint8Array({ minLength: 2, maxLength: 2 }),
  ciaddr: fc.uint8Array({ minLength: 4, maxLength: 4 }),
  giaddr: fc.uint8Array({ minLength: 4, maxLength: 4 }),
  chaddr: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  uuid: fc.uint8Array({ minLength: 16, maxLength: 16 }),
});

test("a filled template is byte for byte the reply buildReply and encodeDhcp give, for every captured client", () => {
  for (const [name, raw] of fixtures) {
    for (const fields of FIELDS) {
      const first = decodeDhcp(raw);
      const template = new ReplyTemplate(first, vendorClass(first), fields);
      fc.assert(
        fc.property(variation, (v) => {
          const bytes = vary(raw, v);
          const request = decodeDhcp(bytes);
          assert.equal(replyShape(request, vendorClass(request)), template.shape, name);
          assert.deepEqual(new Uint8Array(template.fill(request, bytes)), encodeDhcp(buildReply(request, fields)), name);
        }),
        { numRuns: 200 },
      );
    }
  }
});

test("a template refuses a request whose option 97 has another length", () => {
  const withUuid = [...fixtures.values()].map((raw) => decodeDhcp(raw)).find((m) => m.options.some((o) => o.code === DhcpOption.ClientUuid));
  assert.ok(withUuid, "some fixture carries option 97");
  const template = new ReplyTemplate(withUuid, vendorClass(withUuid), FIELDS[0]);
  const without = { ...withUuid, options: withUuid.options.filter((o) => o.code !== DhcpOption.ClientUuid) };
  assert.notEqual(replyShape(without, vendorClass(without)), template.shape);
  assert.throws(() => template.fill(without, encodeDhcp(without)), RangeError);
});
