/**
 * Last-resort cleanup for the lab harness: synchronous tasks run when the process exits,
 * including on SIGINT / SIGTERM / SIGHUP (whose default action would skip 'exit' handlers).
 * Normal cleanup is `lab.close()`; these only catch what a crashed or interrupted test left.
 */

const tasks = new Set<() => void>();
let installed = false;

function runAll(): void {
  for (const task of [...tasks].reverse()) {
    tasks.delete(task);
    try {
      task();
    } catch {
      // best effort: keep going with the others
    }
  }
}

const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

function onSignal(signal: keyof typeof SIGNALS): void {
  runAll();
  process.exit(128 + SIGNALS[signal]);
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", runAll);
  for (const signal of Object.keys(SIGNALS) as (keyof typeof SIGNALS)[]) process.on(signal, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off("exit", runAll);
  for (const signal of Object.keys(SIGNALS) as (keyof typeof SIGNALS)[]) process.off(signal, onSignal);
}

/**
 * Registers a synchronous task to run at process exit; returns a function that unregisters it
 * (call it once the resource was released normally). Signal handlers exist only while tasks do.
 */
export function onExit(task: () => void): () => void {
  tasks.add(task);
  install();
  return () => {
    tasks.delete(task);
    if (tasks.size === 0) uninstall();
  };
}
