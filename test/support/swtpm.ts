/**
 * Software TPMs for tests: `swtpm` (Debian's swtpm package) with its state in a directory the
 * test made. `startSwtpm` serves the TPM's command channel on a Unix socket (for the agent's
 * TPM code and tpm2-tools run on the host); `swtpmForQemu` serves the control channel QEMU's
 * tpm-emulator backend talks to. The same state directory keeps the same endorsement seed,
 * so a machine keeps its EK between the two.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export type Swtpm = { stateDir: string; socket: string; stop(): Promise<void> };

async function waitForSocket(p: string, child: ChildProcess, log: () => string, probe: boolean): Promise<void> {
  for (let i = 0; i < 400 && !existsSync(p); i++) {
    if (child.exitCode !== null) throw new Error(`swtpm exited with ${child.exitCode}: ${log()}`);
    await sleep(25);
  }
  if (!existsSync(p)) throw new Error(`swtpm did not create ${p}: ${log()}`);
  // The file exists from bind(), before listen(): wait until a connection is taken (then closed).
  // Not on QEMU's control channel: with --terminate, swtpm exits when that connection closes.
  for (let i = 0; probe; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect({ path: p }).once("connect", () => (c.destroy(), resolve(true))).once("error", () => resolve(false));
    });
    if (ok) return;
    if (i >= 400 || child.exitCode !== null) throw new Error(`swtpm does not take connections on ${p}: ${log()}`);
    await sleep(25);
  }
}

function stopper(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  };
}

/** A swtpm whose TPM commands are taken on `<stateDir>/tpm.sock`. */
export async function startSwtpm(stateDir: string): Promise<Swtpm> {
  mkdirSync(stateDir, { recursive: true });
  const socket = path.join(stateDir, "tpm.sock");
  let log = "";
  const child = spawn("swtpm", ["socket", "--tpm2", "--tpmstate", `dir=${stateDir}`, "--server", `type=unixio,path=${socket}`,
    "--ctrl", `type=unixio,path=${path.join(stateDir, "ctrl.sock")}`, "--flags", "not-need-init,startup-clear"], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.on("data", (d) => (log += d));
  child.stderr!.on("data", (d) => (log += d));
  await waitForSocket(socket, child, () => log, true);
  return { stateDir, socket, stop: stopper(child) };
}

/** A swtpm for QEMU (`-chardev socket,id=tpm,path=<socket> -tpmdev emulator,id=tpm0,chardev=tpm -device tpm-tis,tpmdev=tpm0`). */
export async function swtpmForQemu(stateDir: string): Promise<Swtpm & { qemuArgs: string[] }> {
  mkdirSync(stateDir, { recursive: true });
  const socket = path.join(stateDir, "qemu-ctrl.sock");
  let log = "";
  const child = spawn("swtpm", ["socket", "--tpm2", "--tpmstate", `dir=${stateDir}`, "--ctrl", `type=unixio,path=${socket}`, "--terminate"], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.on("data", (d) => (log += d));
  child.stderr!.on("data", (d) => (log += d));
  await waitForSocket(socket, child, () => log, false);
  return {
    stateDir, socket, stop: stopper(child),
    qemuArgs: ["-chardev", `socket,id=chrtpm,path=${socket}`, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"],
  };
}

/**
 * Manufactures a TPM as a vendor would: `swtpm_setup --create-ek-cert` stores an EK certificate
 * in the TPM's NV memory, issued by a local CA (swtpm_localca) kept in `caDir` — a stand-in for
 * the TPM vendor. Returns the CA's certificates (intermediate and root, PEM): what an
 * administrator configures as TPM manufacturer roots.
 */
export function manufactureTpm(stateDir: string, caDir: string): { rootsPem: string } {
  mkdirSync(stateDir, { recursive: true });
  mkdirSync(caDir, { recursive: true });
  const conf = path.join(caDir, "localca.conf");
  if (!existsSync(conf)) {
    writeFileSync(conf, `statedir = ${caDir}\nsigningkey = ${caDir}/signkey.pem\nissuercert = ${caDir}/issuercert.pem\ncertserial = ${caDir}/certserial\n`);
    writeFileSync(path.join(caDir, "localca.options"), "");
    writeFileSync(path.join(caDir, "setup.conf"), `create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = ${conf}\n` +
      `create_certs_tool_options = ${caDir}/localca.options\nactive_pcr_banks = sha256\n`);
  }
  execFileSync("swtpm_setup", ["--tpm2", "--tpmstate", stateDir, "--create-ek-cert", "--config", path.join(caDir, "setup.conf"), "--overwrite"], { stdio: "pipe" });
  return { rootsPem: readFileSync(path.join(caDir, "issuercert.pem"), "utf8") + readFileSync(path.join(caDir, "swtpm-localca-rootca-cert.pem"), "utf8") };
}
