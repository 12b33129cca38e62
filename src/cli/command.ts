/** What every CLI command is, and the exit codes scripts can rely on. */

export const ExitCode = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  UNAUTHENTICATED: 3,
  FORBIDDEN: 4,
  NOT_FOUND: 5,
  CONFLICT: 6,
  INVALID: 7,
  UNAVAILABLE: 8,
  VERIFY_FAILED: 9,
  /** Internal: the command started a long-running server; the process stays up. */
  RUNNING: -1,
} as const;

export type Command = { summary: string; run(args: string[]): Promise<number> };

export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = ExitCode.FAILURE) {
    super(message);
    this.exitCode = exitCode;
  }
}
