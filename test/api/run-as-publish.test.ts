/**
 * A Run As reference must name a secret variable: publishing a task sequence whose step runs as
 * a missing or a plain variable is refused with the step's path, and nothing is published.
 */
import { describe, it, after, before } from "node:test";
import assert from "node:assert/strict";
import { startTestSite, type TestSite } from "../support/site.ts";
import { databasesUnderTest } from "../support/postgres.ts";

for (const database of databasesUnderTest()) {
  describe(`Run As references at publish on ${database}`, () => {
    let t: TestSite;
    before(async () => {
      t = await startTestSite({ database });
    });
    after(() => t?.close());
    const admin = (m: string, p: string, body?: unknown) => t.request(m, p, { token: t.adminToken, body });
    const doc = (name: string, secret: string) => ({ document: { name, steps: [{ name: "Join", type: "run-command", with: { command: "true" }, runAs: { secret } }] } });

    it("a missing or plain variable is refused, naming it; a secret of that name at any scope is accepted", async () => {
      const missing = await admin("POST", "/api/v1/task-sequences", doc("RunAs missing", "NoSuchCredential"));
      assert.equal(missing.status, 422, missing.text);
      assert.equal(missing.body.code, "SLIPWAY_TASK_SEQUENCE_INVALID");
      assert.match(JSON.stringify(missing.body.details), /no secret variable named \\"NoSuchCredential\\" exists at any scope/);
      assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "PlainCredential", value: "x" })).status, 201);
      const plain = await admin("POST", "/api/v1/task-sequences", doc("RunAs plain", "PlainCredential"));
      assert.equal(plain.status, 422, plain.text);
      assert.match(JSON.stringify(plain.body.details), /\\"PlainCredential\\" is a plain variable; Run As credentials must be secret variables/);
      const list = (await admin("GET", "/api/v1/task-sequences")).body as { name: string }[];
      assert.ok(!list.some((ts) => ts.name.startsWith("RunAs ")), "nothing was published");
      assert.equal((await admin("POST", "/api/v1/variables", { scope: "site", name: "JoinCredential", value: "s3cret", secret: true })).status, 201);
      assert.equal((await admin("POST", "/api/v1/task-sequences", doc("RunAs secret", "JoinCredential"))).status, 201);
    });
  });
}
