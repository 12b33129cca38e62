/**
 * The agent: runs in the deploy environment, started by its /init once the network is up.
 * It enrolls with the boot token from the kernel command line (asking the PXE password on
 * the console when the site wants it, sending it only inside TLS), fetches its signed
 * policy and checks it against the site key pinned in the boot image, runs the task
 * sequence of its deployment reporting every step, and restarts into the new system.
 *
 * Exit codes: 0 the run succeeded (the machine restarts), 1 the run failed, 2 nothing to do,
 * 3 could not enroll or get a valid policy, 4 configuration error.
 */
import { readFileSync } from "node:fs";
import { execTool } from "./system.ts";
import { createKeyAndCsr } from "../security/csr.ts";
import { verifyPolicy, PolicyError } from "../security/signed-policy.ts";
import type { Policy, PolicyDeployment } from "../domain/policy.ts";
import { ConfigError, loadConfig, type AgentConfig } from "./config.ts";
import { collectInventory, type Inventory } from "./inventory.ts";
import { HttpsError } from "../security/pinned-https.ts";
import { MpClient } from "./mp-client.ts";
import { askHidden, askLine, say } from "./console.ts";
import { runSequence, type AnyStep, type StepEvent } from "./engine.ts";
import { userStateClient } from "./user-state-client.ts";
import { maskSecrets } from "../domain/mask.ts";
import { stepModules } from "./steps/index.ts";
import { DistributionPointContent, type PolicyContent } from "./content.ts";
import { openMachineTpm, type TpmIdentity } from "./tpm.ts";

const MAX_PASSWORD_TRIES = 5;
/** How long a sniffable enrollment waits for an administrator's approval, asking every few seconds. */
const APPROVAL_WAIT_MS = Number(process.env.SLIPWAY_APPROVAL_WAIT_MS ?? 30 * 60_000);
const APPROVAL_POLL_MS = Number(process.env.SLIPWAY_APPROVAL_POLL_MS ?? 10_000);

type TpmPart = TpmIdentity & { proof?: { nonce: string; expiresAt: string; credential: string } };

/**
 * What the machine's TPM says for this enrollment: its endorsement key and, when the site
 * challenges it, the credential only that TPM recovers. Without a TPM (or if it fails), nothing:
 * the machine enrolls as it would without one.
 */
async function tpmPart(client: MpClient, token: string): Promise<TpmPart | undefined> {
  let tpm;
  try {
    tpm = await openMachineTpm();
  } catch (err) {
    say(`tpm unusable: ${(err as Error).message}`);
    return undefined;
  }
  if (!tpm) return undefined;
  try {
    const id = tpm.identity();
    const r = await client.jsonRetry<{ challenge: { credentialBlob: string; secret: string; nonce: string; expiresAt: string } | null }>(
      "POST", "/mp/v1/enroll/tpm-challenge", { token, tpm: id });
    if (!r.challenge) {
      say("tpm endorsement key is not the one the site has on record for this machine");
      return id;
    }
    const credential = await tpm.activate(Buffer.from(r.challenge.credentialBlob, "base64"), Buffer.from(r.challenge.secret, "base64"));
    say("tpm challenge answered");
    return { ...id, proof: { nonce: r.challenge.nonce, expiresAt: r.challenge.expiresAt, credential: Buffer.from(credential).toString("base64") } };
  } catch (err) {
    say(`tpm not used: ${(err as Error).message}`);
    return undefined;
  } finally {
    await tpm.close().catch(() => undefined);
  }
}

async function enroll(client: MpClient, cfg: AgentConfig, inv: Inventory): Promise<{ deviceId: string; deviceName: string; serial?: string; assurance?: string; awaitingApproval?: boolean }> {
  if (!cfg.token) throw new ConfigError("Cannot enroll: the kernel command line has no slipway.token= (boot through Slipway's PXE)");
  const { keyPem, csrPem } = await createKeyAndCsr();
  const tpm = await tpmPart(client, cfg.token);
  let pxePassword: string | undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      const body = { credential: { kind: "boot-token", token: cfg.token, ...(pxePassword !== undefined ? { pxePassword } : {}) }, csr: csrPem,
        inventory: { ...inv, disks: inv.disks.slice(0, 64), macs: inv.macs.slice(0, 16) }, ...(tpm ? { tpm } : {}) };
      const r = await client.jsonRetry<{ deviceId: string; deviceName: string; certificate: string; serial?: string; assurance?: string; awaitingApproval?: boolean }>("POST", "/mp/v1/enroll", body);
      client.setIdentity({ keyPem, certPem: r.certificate });
      return r;
    } catch (err) {
      // The site says as little as it can about a refusal: once a password was sent, a plain
      // refusal of this (otherwise valid) token is the password's, so ask again.
      // (A refusal of the token itself says why — used, expired, bound elsewhere — and is not the password's.)
      const plain = err instanceof HttpsError && err.code === "SLIPWAY_ENROLLMENT_REFUSED" && !/boot token/.test(err.message);
      const askAgain = err instanceof HttpsError && (err.code === "SLIPWAY_PXE_PASSWORD_REQUIRED" || (pxePassword !== undefined && plain));
      if (askAgain && attempt <= MAX_PASSWORD_TRIES) {
        if (pxePassword !== undefined) say("the PXE password was not accepted");
        const typed = await askHidden("This site requires the PXE password: ");
        if (typed === null) throw new Error("Cannot enroll: the site requires the PXE password and there is no console to ask it on");
        pxePassword = typed;
        continue;
      }
      throw err;
    }
  }
}

async function chooseDeployment(policy: Policy, cfg: AgentConfig): Promise<PolicyDeployment | null> {
  if (cfg.deployment) return policy.deployments.find((d) => d.id === cfg.deployment || d.name === cfg.deployment) ?? null;
  const required = policy.deployments.find((d) => d.purpose === "required");
  if (required) return required;
  if (policy.deployments.length === 0) return null;
  policy.deployments.forEach((d, i) => say(`available ${i + 1}: ${d.name} (${d.taskSequence.name} v${d.taskSequence.version})`));
  const pick = await askLine(`Choose a deployment (1-${policy.deployments.length}), or Enter for none: `);
  const n = Number(pick);
  return Number.isInteger(n) && n >= 1 && n <= policy.deployments.length ? policy.deployments[n - 1] : null;
}

function builtInVariables(inv: Inventory, policy: Policy, d: PolicyDeployment, runId: string): [string, string][] {
  return [
    ["Firmware", inv.firmware], ["DeviceId", policy.deviceId], ["DeviceName", policy.deviceName], ["MAC", inv.macs[0] ?? ""],
    ["SMBIOSUUID", inv.smbiosUuid ?? ""], ["SerialNumber", inv.serial ?? ""], ["Vendor", inv.vendor ?? ""], ["Model", inv.model ?? ""],
    ["MemoryMiB", String(inv.memoryMiB ?? 0)], ["DeploymentId", d.id], ["DeploymentName", d.name], ["RunId", runId],
  ];
}

export async function main(opts: { configDir: string; cmdline: string; reboot: boolean }): Promise<number> {
  say("start");
  let cfg: AgentConfig;
  try {
    cfg = loadConfig(opts);
  } catch (err) {
    say(`error ${(err as Error).message}`);
    return 4;
  }
  const inv = collectInventory();
  say(`inventory firmware=${inv.firmware} macs=${inv.macs.join(",")} uuid=${inv.smbiosUuid ?? "-"} disks=${inv.disks.map((d) => `${d.name}:${d.sizeBytes}`).join(",") || "-"}`);
  const client = new MpClient(cfg.managementPoint, cfg.caPem);
  try {
    let policy: Policy;
    try {
      const me = await enroll(client, cfg, inv);
      say(`enrolled device=${me.deviceId} name=${me.deviceName} assurance=${me.assurance ?? "-"}`);
      const fetchPolicy = async () => verifyPolicy(await client.jsonRetry("GET", `/mp/v1/policy?bootPath=${cfg.bootPath}`), cfg.signingKey, { deviceId: me.deviceId, now: new Date() });
      policy = await fetchPolicy();
      // A sniffable enrollment gets only what needs no more; the rest waits for an administrator
      // to approve this enrollment (slipway enrollment approve), which the policy then shows.
      if (me.awaitingApproval && policy.deployments.length === 0) {
        say(`waiting for an administrator to approve this enrollment: serial ${me.serial ?? "-"} (slipway enrollment pending / approve)`);
        const until = Date.now() + APPROVAL_WAIT_MS;
        while (policy.deployments.length === 0 && Date.now() < until) {
          await new Promise((r) => setTimeout(r, APPROVAL_POLL_MS));
          policy = await fetchPolicy();
        }
        if (policy.deployments.length > 0) say("enrollment approved");
      }
    } catch (err) {
      const known = err instanceof PolicyError || err instanceof HttpsError || err instanceof ConfigError || /^Cannot /.test((err as Error).message);
      say(`error ${known ? (err as Error).message : `Cannot reach the management point: ${(err as Error).message}`}`);
      return 3;
    }
    const d = await chooseDeployment(policy, cfg);
    if (!d) {
      say("nothing to do: no deployment for this machine");
      return 2;
    }
    const run = await client.jsonRetry<{ id: string }>("POST", "/mp/v1/runs", { deployment: d.id, bootPath: cfg.bootPath });
    say(`run ${run.id} deployment="${d.name}" task-sequence="${d.taskSequence.name}" v${d.taskSequence.version}`);
    const masks = new Set<string>();
    const report = async (e: StepEvent) => {
      say(`${e.step === "" ? "run" : `step ${e.step}`} ${e.state}${e.progress !== undefined ? ` ${e.progress}%` : ""} ${e.name ?? ""}${e.state === "failed" && e.message ? `: ${maskSecrets(e.message, masks).split("\n")[0]}` : ""}`);
      try {
        await client.jsonRetry("POST", `/mp/v1/runs/${run.id}/events`, e);
      } catch (err) {
        // The status log misses a line, the deployment goes on.
        say(`warning: could not report step ${e.step}: ${(err as Error).message}`);
      }
    };
    const vars = new Map<string, string>(Object.entries(d.variables));
    for (const [k, v] of builtInVariables(inv, policy, d, run.id)) vars.set(k, v);
    const outcome = await runSequence({
      steps: d.taskSequence.document.steps as AnyStep[], modules: stepModules, vars, masks,
      state: { firmware: inv.firmware },
      content: new DistributionPointContent(client, cfg.signingKey, d.content as PolicyContent[], (line) => say(`content ${line}`)),
      report,
      secret: async (path, name) => (await client.jsonRetry<{ value: string }>("POST", `/mp/v1/runs/${run.id}/secrets`, { step: path, name })).value,
      userState: (path) => userStateClient(client, run.id, path),
    });
    const ok = outcome.status !== "failed";
    await report({ step: "", state: ok ? "succeeded" : "failed", message: ok ? (outcome.status === "reboot" ? "restarting into the new system" : "all steps done") : `step ${outcome.failedStep} failed: ${outcome.message ?? ""}` });
    say(`run ${run.id} ${ok ? "succeeded" : "failed"}`);
    if (!ok) return 1;
    if (outcome.status === "reboot" && opts.reboot) {
      say("rebooting");
      await execTool("sync", []);
      await execTool("umount", ["-a", "-r"]).catch(() => undefined);
      await execTool("reboot", ["-f"]);
    }
    return 0;
  } finally {
    client.close();
  }
}

if (import.meta.main) {
  const configDir = process.env.SLIPWAY_CONFIG_DIR ?? "/etc/slipway";
  const cmdline = process.env.SLIPWAY_CMDLINE ?? readFileSync("/proc/cmdline", "utf8");
  main({ configDir, cmdline, reboot: process.env.SLIPWAY_NO_REBOOT !== "1" }).then(
    (code) => process.exit(code),
    (err: unknown) => {
      say(`error ${(err as Error).message}`);
      process.exit(1);
    },
  );
}
