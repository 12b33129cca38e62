/**
 * Masking secret values in text a person or a log will read (step messages, status events).
 * Shared by the agent, which masks before a message leaves the machine, and the management
 * point, which masks again whatever the agent did.
 */

/** Replaces every occurrence of each secret value (of at least 4 characters) with ********. */
export function maskSecrets(text: string, secrets: Iterable<string>): string {
  let out = text;
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join("********");
  return out;
}
