/**
 * The administrators and sessions services (src/site/services/admins.ts, sessions.ts) called
 * directly, without HTTP, on a real site core on SQLite and PostgreSQL: nobody grants what they
 * do not hold, the last active Full Administrator stays, a reset ends the account's tokens in
 * the transaction that audits it; sign-in over an address's budget, a wrong current password
 * and a token made by a token are refused, audited where the API audits them, and change
 * nothing else.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { openSiteCore, type SiteCore } from "../support/site-core.ts";
import { databasesUnderTest } from "../support/postgres.ts";
import { refused } from "../support/services.ts";
import { stores } from "../../src/storage/stores.ts";
import { builtinRoles, FULL_ADMINISTRATOR, type Permission } from "../../src/domain/rbac.ts";
import type { Principal } from "../../src/site/principal.ts";
import { SlipwayError } from "../../src/errors.ts";
import { RateLimiter } from "../../src/site/auth.ts";
import { createAdmin, deleteAdmin, listAdminTokens, resetAdminPassword, updateAdmin } from "../../src/site/services/admins.ts";
import { changeOwnPassword, createOwnToken, signIn } from "../../src/site/services/sessions.ts";

const PASSWORD = "Correct-Horse-Battery-Staple-9";

for (const database of databasesUnderTest()) {
  describe(`administrators and sessions services on ${database}`, () => {
    let core: SiteCore;
    let root: Principal;
    before(async () => {
      core = await openSiteCore(database);
      const a = (await stores(core.site.db).admins.adminByUsername("admin"))!;
      const roles = await stores(core.site.db).admins.rolesByIds(a.roles);
      root = { adminId: a.id, username: a.username, permissions: new Set(roles.flatMap((r) => r.permissions) as Permission[]), scopes: null,
        via: "session", credentialId: "session-root", mustChangePassword: false };
    });
    after(() => core?.close());
    const as = (id: string, username: string, role: string, via: "session" | "token" = "session"): Principal => ({
      adminId: id, username, permissions: new Set(builtinRoles.find((r) => r.id === role)!.permissions), scopes: null, via, credentialId: `cred-${username}`, mustChangePassword: false,
    });
    const state = async () => ({ admins: await stores(core.site.db).admins.listAdmins(), tokens: await stores(core.site.db).admins.listTokens(), audit: (await core.site.audit.list({ limit: 10_000 })).length });

    it("refuses a grant beyond the granter and the end of the last Full Administrator; nothing changes", async () => {
      const made = await createAdmin(core.site, root, { username: "deployer", roles: ["deployment-administrator"], scopes: null, password: PASSWORD });
      assert.equal(made.oneTimePassword, undefined);
      const deployer = as(made.admin.id, "deployer", "deployment-administrator");
      const before = await state();
      await assert.rejects(createAdmin(core.site, deployer, { username: "eve", roles: [FULL_ADMINISTRATOR], scopes: null }), refused("FORBIDDEN", /Cannot create administrator "eve"/));
      await assert.rejects(updateAdmin(core.site, as("other-id", "other", FULL_ADMINISTRATOR), root.adminId, { disabled: true }),
        refused("CONFLICT", /would leave the site without an active Full Administrator/));
      await assert.rejects(deleteAdmin(core.site, as("other-id", "other", FULL_ADMINISTRATOR), root.adminId), refused("CONFLICT", /without an active Full Administrator/));
      await assert.rejects(resetAdminPassword(core.site, root, root.adminId), refused("FORBIDDEN", /nobody resets their own password/));
      assert.deepEqual(await state(), before);
    });

    it("ends an account's API tokens when its password is reset, audited with the reset", async () => {
      const deployer = (await stores(core.site.db).admins.adminByUsername("deployer"))!;
      const token = await createOwnToken(core.site, as(deployer.id, "deployer", "deployment-administrator"), { name: "ci", role: "deployment-administrator", expiresInDays: 30 });
      assert.match(token.token, /^swt/);
      assert.deepEqual((await listAdminTokens(core.site, deployer.id)).map((t) => t.id), [token.id]);
      const reset = await resetAdminPassword(core.site, root, deployer.id);
      assert.ok(reset.oneTimePassword.length >= 16);
      assert.deepEqual(await listAdminTokens(core.site, deployer.id), []);
      const audit = (await core.site.audit.list({ action: "admin.password.reset", limit: 100 })).at(-1)!;
      assert.equal(audit.actor, "admin:admin");
      assert.equal(audit.object, `admin:${deployer.id}`);
      assert.deepEqual(audit.details, { ended: { sessions: 0, tokens: 1 } });
    });

    it("refuses sign-in over the address's budget, a wrong current password and a token made by a token", async () => {
      const limiter = new RateLimiter(1, 60_000, () => core.site.now().getTime());
      const ok = await signIn(core.site, limiter, { username: "nobody", password: "wrong", ip: "192.0.2.7" }).catch((e: unknown) => e);
      assert.ok(ok instanceof SlipwayError && ok.code === "LOGIN_FAILED");
      await assert.rejects(signIn(core.site, limiter, { username: "nobody", password: "wrong", ip: "192.0.2.7" }), refused("RATE_LIMITED", /too many attempts from this address/));
      const limited = (await core.site.audit.list({ action: "session.login", outcome: "denied", limit: 100 })).filter((e) => (e.details as { reason?: string }).reason === "rate limited");
      assert.deepEqual(limited.map((e) => [e.actor, e.details]), [["admin:nobody", { reason: "rate limited", ip: "192.0.2.7" }]]);

      const hash = (await stores(core.site.db).admins.adminById(root.adminId))!.passwordHash;
      await assert.rejects(changeOwnPassword(core.site, root, { currentPassword: "not-it", newPassword: PASSWORD, ip: "192.0.2.8" }), refused("LOGIN_FAILED", /current password is wrong/));
      assert.equal((await stores(core.site.db).admins.adminById(root.adminId))!.passwordHash, hash);
      assert.equal((await core.site.audit.list({ action: "admin.password.change", outcome: "failure", limit: 100 })).length, 1);
      const before = await state();
      await assert.rejects(createOwnToken(core.site, { ...root, via: "token" }, { name: "t", role: FULL_ADMINISTRATOR, expiresInDays: 1 }), refused("FORBIDDEN", /API tokens cannot create API tokens/));
      assert.deepEqual(await state(), before);
    });
  });
}
