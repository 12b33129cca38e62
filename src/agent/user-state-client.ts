/**
 * The agent's side of the management point's user-state routes, for one step of one run:
 * chunk uploads and downloads retry what a flaky network does (a chunk PUT is idempotent on
 * the store), everything else is one request with the usual retries.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { isRetryable, type MpClient } from "./mp-client.ts";
import type { UserStateClient, UserStateGrant } from "./engine.ts";

async function retrying<T>(fn: () => Promise<T>, attempts = 8): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !isRetryable(err)) throw err;
      await sleep(Math.min(30_000, 1000 * 2 ** (i - 1)));
    }
  }
}

export function userStateClient(client: MpClient, runId: string, step: string): UserStateClient {
  const base = (association: string) => `/mp/v1/user-state/${encodeURIComponent(association)}`;
  return {
    grant: (action, opts = {}) => client.jsonRetry<UserStateGrant>("POST", `/mp/v1/runs/${encodeURIComponent(runId)}/user-state`, { step, action, ...opts }),
    putChunk: async (association, index, bytes) => {
      await retrying(() => client.putBytes("PUT", `${base(association)}/chunks/${index}`, bytes));
    },
    captured: (association, summary) => client.jsonRetry("POST", `${base(association)}/captured`, summary),
    chunk: (association, index) => retrying(() => client.getBytes(`${base(association)}/chunks/${index}`)),
    restored: (association, summary) => client.jsonRetry("POST", `${base(association)}/restored`, summary),
  };
}
