/**
 * A throw-away two-link lab in network namespaces, for tests that must prove traffic stays on
 * the links it belongs to. Three namespaces per lab, named uniquely so parallel runs never meet:
 *
 *   <id>-s  the server:  veth-a0 10.201.1.1/24      veth-b0 10.201.2.1/24
 *   <id>-a  link A peer: veth-a1 10.201.1.2/24 (default route via 10.201.1.1)
 *   <id>-b  link B peer: veth-b1 10.201.2.2/24 (default route via 10.201.2.1)
 *
 * A packet from B to 10.201.1.1 arrives at the server on veth-b0: a socket listening on
 * veth-a0 only must not see it, although the address is the server's. Code runs inside a
 * namespace through an agent (fixtures/net-agent.ts) spoken to over JSON lines.
 */

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const AGENT = fileURLToPath(new URL("./fixtures/net-agent.ts", import.meta.url));

export const SERVER_A = "10.201.1.1";
export const PEER_A = "10.201.1.2";
export const SERVER_B = "10.201.2.1";
export const PEER_B = "10.201.2.2";

/** Why namespace tests cannot run here, or undefined when they can (root with iproute2). */
// Network namespaces need root; fail loudly rather than pass without running.
if (process.getuid?.() !== 0) throw new Error("the network tests need root (network namespaces): run scripts/test.sh as root");

export type TwoLinkLab = {
  server: string;
  a: string;
  b: string;
  /** Runs a command inside a namespace. */
  exec(ns: string, cmd: string, args: string[], timeoutMs?: number): Promise<{ stdout: string; stderr: string; code: number }>;
  /** Starts an agent inside a namespace; closed with the lab. */
  agent(ns: string): Promise<Agent>;
  /** UDP datagrams the server namespace received for a port nobody listened on. */
  udpNoPorts(): Promise<number>;
  close(): Promise<void>;
};

export async function createTwoLinkLab(): Promise<TwoLinkLab> {
  const id = `slw-t-${randomBytes(4).toString("hex")}`;
  const [server, a, b] = [`${id}-s`, `${id}-a`, `${id}-b`];
  const agents: Agent[] = [];
  const ip = (...args: string[]) => run("ip", args);
  const lab: TwoLinkLab = {
    server,
    a,
    b,
    async exec(ns, cmd, args, timeoutMs = 30_000) {
      try {
        const { stdout, stderr } = await run("ip", ["netns", "exec", ns, cmd, ...args], { timeout: timeoutMs, maxBuffer: 1 << 24 });
        return { stdout, stderr, code: 0 };
      } catch (err) {
        const e = err as { stdout?: string; stderr?: string; code?: number | string };
        return { stdout: e.stdout ?? "", stderr: e.stderr ?? "", code: typeof e.code === "number" ? e.code : -1 };
      }
    },
    async agent(ns) {
      const agent = await Agent.start(ns);
      agents.push(agent);
      return agent;
    },
    async udpNoPorts() {
      const { stdout } = await run("ip", ["netns", "exec", server, "cat", "/proc/net/snmp"]);
      const [head, values] = stdout.split("\n").filter((l) => l.startsWith("Udp:"));
      const i = head.split(/\s+/).indexOf("NoPorts");
      return Number(values.split(/\s+/)[i]);
    },
    async close() {
      await Promise.all(agents.map((x) => x.close()));
      for (const ns of [server, a, b]) await run("ip", ["netns", "del", ns]).catch(() => {});
    },
  };
  try {
    for (const ns of [server, a, b]) {
      await ip("netns", "add", ns);
      await ip("-n", ns, "link", "set", "lo", "up");
    }
    // Created inside the server namespace with the peer moved straight to its own: the names
    // never exist in the root namespace, so parallel labs cannot collide on them.
    await ip("-n", server, "link", "add", "veth-a0", "type", "veth", "peer", "name", "veth-a1", "netns", a);
    await ip("-n", server, "link", "add", "veth-b0", "type", "veth", "peer", "name", "veth-b1", "netns", b);
    const setup: [string, string, string, string | null][] = [
      [server, "veth-a0", `${SERVER_A}/24`, null],
      [server, "veth-b0", `${SERVER_B}/24`, null],
      [a, "veth-a1", `${PEER_A}/24`, SERVER_A],
      [b, "veth-b1", `${PEER_B}/24`, SERVER_B],
    ];
    for (const [ns, dev, cidr, gateway] of setup) {
      await ip("-n", ns, "addr", "add", cidr, "dev", dev);
      await ip("-n", ns, "link", "set", dev, "up");
      if (gateway) await ip("-n", ns, "route", "add", "default", "via", gateway);
    }
    return lab;
  } catch (err) {
    await lab.close();
    throw err;
  }
}

/** A Node process inside a namespace that runs commands from fixtures/net-agent.ts. */
export class Agent {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  #next = 1;
  #buffer = "";
  #stderr = "";

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (text: string) => {
      this.#buffer += text;
      let nl: number;
      while ((nl = this.#buffer.indexOf("\n")) >= 0) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        const reply = JSON.parse(line) as { id: number; error?: string; code?: string } & Record<string, unknown>;
        const waiter = this.#pending.get(reply.id);
        this.#pending.delete(reply.id);
        if (!waiter) continue;
        if (reply.error !== undefined) waiter.reject(Object.assign(new Error(reply.error), { code: reply.code }));
        else waiter.resolve(reply);
      }
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (t: string) => (this.#stderr += t));
    child.on("exit", () => {
      for (const w of this.#pending.values()) w.reject(new Error(`agent exited: ${this.#stderr}`));
      this.#pending.clear();
    });
  }

  static async start(ns: string): Promise<Agent> {
    const child = spawn("ip", ["netns", "exec", ns, process.execPath, "--disable-warning=ExperimentalWarning", AGENT], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const agent = new Agent(child);
    await agent.call("ping");
    return agent;
  }

  /** Runs one command; rejects with the agent's error (and its `code`, e.g. EADDRINUSE). */
  call(op: string, args: Record<string, unknown> = {}, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`agent did not answer ${op} within ${timeoutMs} ms: ${this.#stderr}`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#child.stdin!.write(JSON.stringify({ id, op, ...args }) + "\n");
    });
  }

  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = once(this.#child, "exit");
    this.#child.stdin!.end();
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  }
}
