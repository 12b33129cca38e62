/**
 * Secret variables at rest: what a sealed value is bound to. The site seals a secret with
 * this additional data and the management point opens it with the same, so a ciphertext moved
 * to another variable, scope or target fails to open.
 */
import type { VariableScope } from "../storage/variable-store.ts";

/** The additional data a secret's ciphertext is bound to: moving it to another row fails. */
export function secretAad(scope: VariableScope, scopeId: string, name: string): string {
  return `variable:${scope}:${scopeId}:${name}`;
}
