/** Finding a step of a task sequence by its index path, as agents report it. */
import type { TaskSequenceDocument } from "./validate.ts";

/** The step at an index path such as "3" or "1/0" (indices into nested `steps`). */
export function stepAt(doc: TaskSequenceDocument, path: string): { type: string; runAs?: { secret: string } } | undefined {
  if (!/^\d{1,4}(\/\d{1,4}){0,15}$/.test(path)) return undefined;
  let steps: unknown[] = doc.steps;
  let step: { type: string; steps?: unknown[]; runAs?: { secret: string } } | undefined;
  for (const i of path.split("/").map(Number)) {
    step = steps?.[i] as typeof step;
    if (!step) return undefined;
    steps = step.steps ?? [];
  }
  return step;
}
