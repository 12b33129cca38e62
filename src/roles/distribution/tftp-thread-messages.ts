/**
 * What crosses between the main thread and a TFTP transfer thread (tftp-threads.ts starts the
 * threads, tftp-thread-loop.ts is their body): plain data only, as structured clone carries it.
 * Both sides import this file, so neither imports the other for its types.
 */
import type { MessagePort } from "node:worker_threads";
import type { TftpOption } from "../../protocol/tftp.ts";
import type { PacketSet } from "./tftp-files.ts";
import type { TransferEnd } from "./tftp-transfer.ts";

/** Everything a transfer needs besides its bytes; plain data, so it crosses to a thread as it is. */
export type TransferSpec = {
  /** The interface the request arrived on (null: any), and the local address to bind. */
  iface: string | null;
  address: string;
  client: { address: string; port: number };
  blksize: number;
  windowsize: number;
  /** Options to acknowledge in an OACK first; empty sends DATA 1 straight away (RFC 2347). */
  oack: TftpOption[];
  timeoutMs: number;
  retries: number;
};

/** Why a transfer could not run: see TransferHooks.onEnd (tftp-threads.ts). */
export type Fault = "unstarted" | "failed";

/** How a transfer answered a new request from its client's TID: see RunningTransfer.supersede (tftp-threads.ts). */
export type Supersede = "superseded" | "answered" | "ended";

/** What crosses to a transfer thread when it starts. */
export type ThreadData = { port: MessagePort };

/** Messages to a transfer thread (each followed by a wake-up of its eventfd). */
export type ToThread =
  | { type: "start"; id: number; spec: TransferSpec; set: PacketSet }
  | { type: "supersede"; id: number; reason: string }
  | { type: "abort"; id: number; reason: string; tell?: string }
  | { type: "exit" };
/** Messages from a transfer thread. "ready" names the eventfd that wakes it. */
export type FromThread =
  | { type: "end"; id: number; end: TransferEnd; fault?: Fault }
  | { type: "closed"; id: number }
  | { type: "refused"; id: number; reason: "unknownTid" | "malformed" }
  | { type: "superseded"; id: number; outcome: Supersede }
  | { type: "ready"; wake: number };
