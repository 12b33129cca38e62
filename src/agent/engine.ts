/**
 * The task sequence engine: walks a task sequence's steps in order, skipping disabled ones and
 * those whose condition is false, running groups as nested sequences, giving each step its
 * timeout, and reporting every step's start and end. A failed step stops the sequence unless
 * it (or the group it fails) says continue-on-error. Steps are modules in ./steps; the
 * engine knows nothing about what they do.
 */
import { evaluate, parseExpression } from "../domain/expression.ts";
import type { Manifest } from "../content/manifest.ts";
import { maskSecrets as mask } from "../domain/mask.ts";

export type EventState = "started" | "progress" | "succeeded" | "failed" | "skipped";

export type StepEvent = { step: string; name?: string; state: EventState; progress?: number; exitCode?: number; message?: string };

/** What a step leaves for the steps after it: the disk layout, where the new system is mounted. */
export type DeployState = {
  firmware: "bios" | "uefi";
  disk?: string;
  scheme?: "gpt" | "mbr" | "gpt-bios";
  esp?: string;
  root?: string;
  /** Where the applied system's root file system is mounted. */
  target?: string;
};

/** Where apply-image gets its bytes: the signed manifest, then a verified stream of its chunks. */
export interface ContentSource {
  /** The manifest digest the policy names for an image reference, or null. */
  resolve(image: string): string | null;
  manifest(digest: string): Promise<Manifest>;
  /** Verified chunks in order from chunk `from`; retries broken connections where it left off. */
  chunks(manifest: Manifest, digest: string, opts: { signal: AbortSignal; onProgress(bytes: number): void }): AsyncIterable<Buffer>;
}

/** What the management point releases to a running user-state step (src/site/services/user-state.ts). */
export type UserStateGrant = {
  association: string; kind: "refresh" | "replace"; action: "capture" | "restore"; dataKey: string;
  streamId: string | null; chunks: number; quotaBytes: number; stateBytes: number; files: number;
};

/** The management point's user-state calls, for the running step. */
export interface UserStateClient {
  /** The association's data key for this step; a capture also gets a new stream id. `estimateBytes` lets the site refuse early. */
  grant(action: "capture" | "restore", opts?: { estimateBytes?: number }): Promise<UserStateGrant>;
  /** Stores one sealed chunk; resolves when it is durable on the store. */
  putChunk(association: string, index: number, bytes: Buffer): Promise<void>;
  captured(association: string, summary: { files: number; stateBytes: number }): Promise<{ chunks: number; storedBytes: number }>;
  chunk(association: string, index: number): Promise<Buffer>;
  restored(association: string, summary: { files: number; notRestored: number }): Promise<{ deleteAt: string }>;
}

export type StepContext = {
  /** The step's index path, such as "2/0". */
  path: string;
  name: string;
  vars: Map<string, string>;
  state: DeployState;
  signal: AbortSignal;
  content: ContentSource;
  /** Asks the management point for a secret the step references (Run As); kept in memory only. */
  secret(name: string): Promise<string>;
  /** The management point's user-state calls for this step. */
  userState(): UserStateClient;
  /** Replaces ${Name} with the variable's value; unknown names are an error. */
  expand(text: string): string;
  progress(percent: number, message?: string): Promise<void>;
  /** Text a reader of the status log should see; secrets are masked before it leaves. */
  log(message: string): void;
};

export type StepResult =
  | { status: "succeeded"; message?: string }
  | { status: "failed"; message: string; exitCode?: number }
  /** Succeeded and the machine must now restart (the run ends here). */
  | { status: "reboot"; message?: string };

export type StepModule = {
  type: string;
  run(params: any, ctx: StepContext, step: AnyStep): Promise<StepResult>;
};

export type AnyStep = {
  type: string;
  name: string;
  condition?: string;
  continueOnError?: boolean;
  disabled?: boolean;
  timeoutSeconds?: number;
  with?: Record<string, unknown>;
  runAs?: { secret: string };
  steps?: AnyStep[];
};

export type EngineOptions = {
  steps: AnyStep[];
  modules: Map<string, StepModule>;
  vars: Map<string, string>;
  state: DeployState;
  content: ContentSource;
  report(event: StepEvent): Promise<void>;
  secret(path: string, name: string): Promise<string>;
  /** The user-state calls for the step at `path` (absent where no management point is reachable). */
  userState?: (path: string) => UserStateClient;
  /** Values never to print (secrets handed out so far). */
  masks: Set<string>;
  /** Default per-step timeout when the step sets none. */
  defaultTimeoutSeconds?: number;
};

export type RunOutcome = { status: "succeeded" | "failed" | "reboot"; failedStep?: string; message?: string };

const DEFAULT_TIMEOUT_SECONDS = 3 * 3600;

export function expandVariables(text: string, vars: Map<string, string>): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_.]{0,127})\}/g, (_, name: string) => {
    const v = vars.get(name);
    if (v === undefined) throw new Error(`Cannot expand \${${name}}: no variable of that name`);
    return v;
  });
}


/** Variables as the expression language sees them: a missing name is `undefined`. */
function lookup(vars: Map<string, string>) {
  return (name: string) => vars.get(name);
}

export function runSequence(opts: EngineOptions): Promise<RunOutcome> {
  return runSteps(opts.steps, "", opts);
}

async function runSteps(steps: AnyStep[], prefix: string, opts: EngineOptions): Promise<RunOutcome> {
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    const path = prefix ? `${prefix}/${i}` : String(i);
    const r = await runOne(step, path, opts);
    if (r.status === "reboot") {
      // Whatever follows a restart would need an agent in the installed system: say so.
      await skipRest(steps.slice(i + 1), prefix, i + 1, opts, "the machine restarted before this step");
      return r;
    }
    if (r.status === "failed" && !step.continueOnError) return r;
  }
  return { status: "succeeded" };
}

async function skipRest(steps: AnyStep[], prefix: string, start: number, opts: EngineOptions, why: string): Promise<void> {
  for (let j = 0; j < steps.length; j++) {
    const path = prefix ? `${prefix}/${start + j}` : String(start + j);
    await opts.report({ step: path, name: steps[j].name, state: "skipped", message: why });
  }
}

async function runOne(step: AnyStep, path: string, opts: EngineOptions): Promise<RunOutcome> {
  if (step.disabled) {
    await opts.report({ step: path, name: step.name, state: "skipped", message: "disabled" });
    return { status: "succeeded" };
  }
  if (step.condition) {
    let yes: boolean;
    try {
      yes = evaluate(parseExpression(step.condition), lookup(opts.vars));
    } catch (err) {
      const message = `Cannot evaluate the condition: ${(err as Error).message}`;
      await opts.report({ step: path, name: step.name, state: "failed", message });
      return { status: "failed", failedStep: path, message };
    }
    if (!yes) {
      await opts.report({ step: path, name: step.name, state: "skipped", message: `condition is false: ${step.condition}` });
      return { status: "succeeded" };
    }
  }
  await opts.report({ step: path, name: step.name, state: "started" });
  if (step.type === "group") {
    const r = await runSteps(step.steps ?? [], path, opts);
    if (r.status === "failed") {
      const message = `step ${r.failedStep} failed${step.continueOnError ? " (continuing: continue-on-error)" : ""}`;
      await opts.report({ step: path, name: step.name, state: "failed", message });
      return { status: "failed", failedStep: r.failedStep, message: r.message };
    }
    await opts.report({ step: path, name: step.name, state: "succeeded" });
    return r;
  }
  const module = opts.modules.get(step.type);
  if (!module) {
    const message = `Cannot run step type "${step.type}": this deploy environment does not support it yet`;
    await opts.report({ step: path, name: step.name, state: "failed", message });
    return { status: "failed", failedStep: path, message };
  }
  const timeout = (step.timeoutSeconds ?? opts.defaultTimeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS) * 1000;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`timed out after ${timeout / 1000} s`)), timeout);
  const logs: string[] = [];
  const ctx: StepContext = {
    path, name: step.name, vars: opts.vars, state: opts.state, signal: controller.signal, content: opts.content,
    secret: async (name) => {
      const v = await opts.secret(path, name);
      opts.masks.add(v);
      return v;
    },
    userState: () => {
      if (!opts.userState) throw new Error("Cannot move user state: this agent has no management point to keep it");
      return opts.userState(path);
    },
    expand: (text) => expandVariables(text, opts.vars),
    progress: (percent, message) => opts.report({ step: path, name: step.name, state: "progress", progress: Math.max(0, Math.min(100, Math.round(percent))), message: message && mask(message, opts.masks) }),
    log: (message) => {
      logs.push(mask(message, opts.masks));
    },
  };
  let result: StepResult;
  try {
    result = await module.run(step.with ?? {}, ctx, step);
  } catch (err) {
    result = { status: "failed", message: controller.signal.aborted ? `Step ${String((controller.signal.reason as Error)?.message ?? "timed out")}` : (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
  if (result.status !== "failed" && controller.signal.aborted) {
    result = { status: "failed", message: `Step ${(controller.signal.reason as Error).message}` };
  }
  const detail = [result.message, ...logs].filter(Boolean).join("\n");
  if (result.status === "failed") {
    await opts.report({ step: path, name: step.name, state: "failed", exitCode: result.exitCode, message: mask(detail, opts.masks) + (step.continueOnError ? "\n(continuing: continue-on-error)" : "") });
    return { status: "failed", failedStep: path, message: mask(result.message, opts.masks) };
  }
  await opts.report({ step: path, name: step.name, state: "succeeded", message: detail ? mask(detail, opts.masks) : undefined });
  return { status: result.status === "reboot" ? "reboot" : "succeeded", message: result.message };
}
