/**
 * Runs a command with /bin/sh in the deploy environment. Its environment holds the task
 * sequence's plain variables (those whose names are shell names), SLIPWAY_TARGET (where the
 * applied system is mounted, if any) and, with Run As, the named secret — fetched from the
 * management point just before the command starts, kept in memory, masked in everything
 * reported. Exit codes outside `successCodes` (default [0]) fail the step.
 */
import type { StepModule } from "../engine.ts";
import { execTool } from "../system.ts";

const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const runCommand: StepModule = {
  type: "run-command",
  async run(params: { command: string; successCodes?: number[]; workingDirectory?: string }, ctx, step) {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: process.env.HOME ?? "/root" };
    for (const [k, v] of ctx.vars) if (SHELL_NAME.test(k)) env[k] = v;
    if (ctx.state.target) env.SLIPWAY_TARGET = ctx.state.target;
    if (step.runAs) env[SHELL_NAME.test(step.runAs.secret) ? step.runAs.secret : "SLIPWAY_RUNAS_SECRET"] = await ctx.secret(step.runAs.secret);
    const r = await execTool("/bin/sh", ["-c", params.command], { env, cwd: params.workingDirectory && ctx.expand(params.workingDirectory), signal: ctx.signal });
    const ok = (params.successCodes ?? [0]).includes(r.code);
    const output = r.output.trim();
    if (output) ctx.log(output.slice(-4096));
    if (!ok) return { status: "failed", exitCode: r.code, message: r.code === 124 && ctx.signal.aborted ? "The command timed out and was stopped" : `The command exited ${r.code}` };
    return { status: "succeeded", message: `exit ${r.code}` };
  },
};
