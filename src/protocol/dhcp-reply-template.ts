/**
 * A DHCP reply encoded once and reused for every request of the same shape. A ProxyDHCP
 * answer for a given link and firmware is the same bytes each time except the few fields
 * buildReply copies from the request; patching those into a copy costs a fraction of
 * building and encoding the reply again, and the PXE responder answers every DISCOVER.
 *
 * `fill(request, raw)` gives exactly the bytes `encodeDhcp(buildReply(request, fields))` would
 * (dhcp-reply-template.test.ts checks it over generated requests) provided the request has the
 * template's shape, `replyShape(request)`: the same vendor class kind and option 97 length.
 */
import { DhcpMessageType, DhcpOption, buildReply, encodeDhcp, optionData, type DhcpMessage, type ReplyFields } from "./dhcp.ts";

/** Where the options start: the 236-byte fixed header and the 4-byte magic cookie (RFC 2131 §3). */
const OPTIONS_OFFSET = 240;

/**
 * What, besides the reply fields, makes two requests' replies differ in more than the patched
 * fields: option 60's kind (buildReply answers `PXEClient` or `HTTPClient`) and the length of
 * option 97, which is echoed.
 */
export function replyShape(request: DhcpMessage, vendorClass: string | undefined): string {
  const kind = vendorClass?.startsWith("HTTPClient") ? "http" : vendorClass?.startsWith("PXEClient") ? "pxe" : "-";
  return `${kind}:${optionData(request, DhcpOption.ClientUuid)?.length ?? -1}`;
}

export class ReplyTemplate {
  readonly #bytes: Uint8Array;
  readonly #copyCiaddr: boolean;
  readonly #shape: string;
  /** Option 97's length in the request the template was built from; -1 when it had none. */
  readonly #uuidLength: number;
  /** Where the echoed option 97's data sits, one span per instance (RFC 3396 splits long ones). */
  readonly #uuidSpans: { at: number; length: number }[] = [];

  constructor(request: DhcpMessage, vendorClass: string | undefined, fields: ReplyFields) {
    this.#shape = replyShape(request, vendorClass);
    this.#uuidLength = optionData(request, DhcpOption.ClientUuid)?.length ?? -1;
    this.#bytes = encodeDhcp(buildReply(request, fields));
    // buildReply copies ciaddr into an ACK only (RFC 2131 §4.3.1 table 3).
    this.#copyCiaddr = fields.messageType === DhcpMessageType.Ack;
    const echoed = !fields.options?.some((o) => o.code === DhcpOption.ClientUuid);
    if (echoed && this.#uuidLength >= 0) {
      const b = this.#bytes;
      for (let i = OPTIONS_OFFSET; i < b.length && b[i] !== DhcpOption.End; ) {
        if (b[i] === DhcpOption.Pad) {
          i++;
          continue;
        }
        if (b[i] === DhcpOption.ClientUuid) this.#uuidSpans.push({ at: i + 2, length: b[i + 1] });
        i += 2 + b[i + 1];
      }
    }
  }

  /** The shape of requests this template answers. */
  get shape(): string {
    return this.#shape;
  }

  /**
   * The reply to `request` (decoded from `raw`): a copy of the template with the request's
   * htype, hlen, xid, flags, giaddr, chaddr, option 97 — and ciaddr in an ACK — written in.
   * Throws RangeError for a request of another shape (a caller bug).
   */
  fill(request: DhcpMessage, raw: Uint8Array): Buffer {
    const uuid = optionData(request, DhcpOption.ClientUuid);
    if ((uuid?.length ?? -1) !== this.#uuidLength) {
      throw new RangeError(`Cannot fill a DHCP reply template of shape ${this.#shape} for a request with option 97 of ${uuid?.length ?? "no"} bytes`);
    }
    const out = Buffer.allocUnsafe(this.#bytes.length);
    out.set(this.#bytes);
    out[1] = raw[1]; // htype
    out[2] = raw[2]; // hlen
    out.set(raw.subarray(4, 8), 4); // xid
    out[10] = raw[10]; // flags
    out[11] = raw[11];
    if (this.#copyCiaddr) out.set(raw.subarray(12, 16), 12);
    out.set(raw.subarray(24, 44), 24); // giaddr, then chaddr
    if (uuid !== undefined && this.#uuidSpans.length > 0) {
      let from = 0;
      for (const span of this.#uuidSpans) {
        out.set(uuid.subarray(from, from + span.length), span.at);
        from += span.length;
      }
    }
    return out;
  }
}
