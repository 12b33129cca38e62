/** What tests of the site core's services (test/site-services/) share: an administrator to act as, and a refusal to expect. */
import type { Principal } from "../../src/site/principal.ts";
import { allPermissions } from "../../src/domain/rbac.ts";
import { SlipwayError } from "../../src/errors.ts";

/** An administrator holding every permission, limited to `scopes` (null: none), named "scoped" or "root" unless named. */
export const adminPrincipal = (scopes: string[] | null, username = scopes ? "scoped" : "root"): Principal => ({
  adminId: `id-${username}`, username, permissions: new Set(allPermissions), scopes, via: "token", credentialId: `cred-${username}`, mustChangePassword: false,
});

/** Matches a SlipwayError with this code whose message matches. */
export const refused = (code: string, message: RegExp = /./) => (e: unknown) => e instanceof SlipwayError && e.code === code && message.test(e.message);
