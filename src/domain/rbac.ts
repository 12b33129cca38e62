/**
 * Permissions and the built-in roles. Every API route names one permission; a caller's
 * roles grant permissions; the default is deny. Identities (administrators, roles, device
 * approval, certificates, enrollment and media credentials) are the Security
 * Administrator's alone: unlike Configuration Manager's OS deployment role, a Deployment
 * Administrator cannot mint anything that lets a client or a person impersonate another.
 *
 * Granting: nobody can leave any account holding a permission they do not hold themselves.
 * Whoever holds admin.write may grant roles whose permissions they hold; admin.grant-any (the
 * Security Administrator) may also assign the built-in roles other than Full Administrator.
 * Roles that together carry every permission are a Full Administrator in all but name: only
 * someone holding every permission may grant them. Creating, editing or deleting a custom
 * role needs every permission in it, before and after (admin.grant-any does not lift that),
 * and an edit is refused unless every holder's resulting roles are ones the editor could
 * have granted. Nobody changes their own roles, scopes, state or password this way.
 */

export const permissions = {
  "site.read": "See site settings and status",
  "site.write": "Change site settings",
  "device.read": "See devices",
  "device.write": "Create, rename and delete devices (new devices are pending)",
  "device.approve": "Approve and block devices",
  "collection.read": "See collections and their members",
  "collection.write": "Create, change and delete collections",
  "variable.read": "See variables (never secret values)",
  "variable.write": "Create, change and delete variables, including secret ones",
  "ts.read": "See task sequences",
  "ts.write": "Create task sequences and publish versions",
  "deployment.read": "See deployments",
  "deployment.write": "Create, change and delete deployments",
  "dp.read": "See distribution points, the content assigned to them and its replication state",
  "dp.write": "Register and remove distribution points (minting a one-time enrollment secret) and assign content to them",
  "admin.read": "See administrators and their API tokens",
  "admin.write": "Create, change and delete administrators (granting only permissions you hold)",
  "admin.grant-any": "Assign the built-in roles other than Full Administrator, even those carrying permissions you do not hold (never custom roles)",
  "role.read": "See roles",
  "role.write": "Create, change and delete custom roles",
  "audit.read": "Read and verify the audit log",
  "keys.rotate": "Rotate the site master key",
  "certificate.read": "See issued certificates",
  "certificate.issue": "Issue certificates",
  "certificate.revoke": "Block and revoke certificates",
  "enrollment.write": "Create and revoke enrollment and media credentials",
  "association.read": "See computer associations (whose user state goes where, sizes, states, deadlines; never the state itself)",
  "association.write": "Create and delete computer associations and change how long their user state is kept",
  "recovery.read": "Read recovery information (user-state keys, disk-encryption recovery keys)",
} as const;

export type Permission = keyof typeof permissions;
export const allPermissions = Object.keys(permissions) as Permission[];

export function isPermission(p: string): p is Permission {
  return Object.hasOwn(permissions, p);
}

export const FULL_ADMINISTRATOR = "full-administrator";

export type BuiltinRole = { id: string; name: string; description: string; permissions: Permission[] };

/**
 * Reading recovery information (user state, disk-encryption recovery keys) is no part of
 * administering the site: no Full Administrator holds it by default, it is only in the built-in
 * Recovery Agent role, and only a Full Administrator assigns that role (audited like every grant).
 */
export const RECOVERY_PERMISSION = "recovery.read";
export const RECOVERY_AGENT = "recovery-agent";
/** Every permission but recovery.read: what a Full Administrator holds. */
export const administrativePermissions: Permission[] = allPermissions.filter((p) => p !== RECOVERY_PERMISSION);

const reads = allPermissions.filter((p) => p.endsWith(".read") && p !== RECOVERY_PERMISSION);

export const builtinRoles: BuiltinRole[] = [
  {
    id: FULL_ADMINISTRATOR,
    name: "Full Administrator",
    description: "Every permission but reading recovery information (that is the Recovery Agent role's, which a Full Administrator may assign)",
    permissions: administrativePermissions,
  },
  {
    id: "infrastructure-administrator",
    name: "Infrastructure Administrator",
    description: "Runs the site and its distribution points",
    permissions: ["site.read", "site.write", "device.read", "collection.read", "ts.read", "deployment.read", "dp.read", "dp.write"],
  },
  {
    id: "deployment-administrator",
    name: "Deployment Administrator",
    description: "Builds and deploys task sequences; cannot create identities, certificates or media credentials",
    permissions: [
      "site.read", "device.read", "device.write", "collection.read", "collection.write",
      "variable.read", "variable.write", "ts.read", "ts.write", "deployment.read", "deployment.write", "dp.read",
      "association.read", "association.write",
    ],
  },
  {
    id: "security-administrator",
    name: "Security Administrator",
    description: "Administrators, roles, certificates, device approval, audit and keys",
    permissions: [
      "site.read", "device.read", "device.approve", "collection.read", "admin.read", "admin.write", "admin.grant-any",
      "role.read", "role.write", "audit.read", "keys.rotate", "certificate.read", "certificate.issue",
      "certificate.revoke", "enrollment.write",
    ],
  },
  {
    id: RECOVERY_AGENT,
    name: "Recovery Agent",
    description: "Reads recovery information; every read is audited",
    permissions: ["device.read", "association.read", "recovery.read"],
  },
  {
    id: "read-only-analyst",
    name: "Read-only Analyst",
    description: "Sees everything except recovery information; changes nothing",
    permissions: reads,
  },
];

/** The union of the permissions of the given roles. */
export function permissionsOf(roles: readonly { permissions: readonly string[] }[]): Set<Permission> {
  const out = new Set<Permission>();
  for (const r of roles) for (const p of r.permissions) if (isPermission(p)) out.add(p);
  return out;
}

/** True when a set of permissions is a Full Administrator's power: every permission but recovery.read. */
export function isEverything(perms: Iterable<string>): boolean {
  const have = new Set(perms);
  return administrativePermissions.every((p) => have.has(p));
}

/** A role as the grant rules see it. */
export type GrantableRole = { id: string; builtin: boolean; permissions: readonly string[] };

/** Built-in roles other than Full Administrator: the ones admin.grant-any may assign. */
function assignableByGrantAny(r: GrantableRole): boolean {
  return r.builtin && r.id !== FULL_ADMINISTRATOR && r.id !== RECOVERY_AGENT && builtinRoles.some((b) => b.id === r.id);
}

/** Why a custom role may not carry these permissions, or null: recovery.read is only in the Recovery Agent role. */
export function customRoleRefusal(perms: Iterable<string>): string | null {
  return [...perms].includes(RECOVERY_PERMISSION)
    ? `${RECOVERY_PERMISSION} is only in the built-in Recovery Agent role, which a Full Administrator assigns`
    : null;
}

/** Which of `perms` the holder of `held` lacks (for creating, editing or deleting a custom role). */
export function lacking(held: ReadonlySet<Permission>, perms: Iterable<string>): string[] {
  return [...new Set(perms)].filter((p) => !isPermission(p) || !held.has(p));
}

/**
 * Why a holder of `granter` may not leave an account holding exactly `roles`; empty when it
 * may. Each role must carry only permissions the granter holds, except that admin.grant-any
 * assigns built-in roles other than Full Administrator; and roles that together carry every
 * permission are a Full Administrator in all but name, which only someone holding every
 * permission may make.
 */
export function grantRefusals(granter: ReadonlySet<Permission>, roles: readonly GrantableRole[]): string[] {
  const out: string[] = [];
  const grantAny = granter.has("admin.grant-any");
  for (const r of roles) {
    if (r.builtin && r.id === RECOVERY_AGENT) {
      if (!isEverything(granter)) out.push(`role "${RECOVERY_AGENT}" reads recovery information; only a Full Administrator assigns it`);
      continue;
    }
    if (r.permissions.includes(RECOVERY_PERMISSION) && !isEverything(granter)) {
      out.push(`role "${r.id}" carries ${RECOVERY_PERMISSION}, which only a Full Administrator grants`);
      continue;
    }
    if (grantAny && assignableByGrantAny(r)) continue;
    const missing = lacking(granter, r.permissions);
    if (missing.length) out.push(`role "${r.id}" carries ${missing.join(", ")}, which you do not hold`);
  }
  if (isEverything(permissionsOf(roles)) && !isEverything(granter)) {
    out.push("together these roles carry every permission, which only a holder of every permission may grant");
  }
  return out;
}
