/**
 * Who is asking the site: an administrator, by session or API token, with the permissions
 * of their roles and the collections they are limited to.
 */
import type { Permission } from "../domain/rbac.ts";

export type Principal = {
  adminId: string;
  username: string;
  permissions: ReadonlySet<Permission>;
  /** Collection ids the administrator is limited to; null means all. */
  scopes: readonly string[] | null;
  via: "session" | "token";
  credentialId: string;
  mustChangePassword: boolean;
};
