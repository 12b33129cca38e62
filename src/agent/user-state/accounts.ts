/**
 * Users and groups of a system, read from its /etc/passwd and /etc/group, and the mapping of
 * owners by name between two systems (including the qualifiers inside POSIX ACL text).
 */
import { readFile } from "node:fs/promises";
import path from "node:path";

export interface Account {
  name: string;
  id: number;
}

export interface UserAccount extends Account {
  gid: number;
  home: string;
}

export interface Accounts {
  users: UserAccount[];
  groups: Account[];
}

/** Reads `<root>/etc/passwd` and `<root>/etc/group` (a missing group file reads as empty). */
export async function readAccounts(root: string): Promise<Accounts> {
  const passwdFile = path.join(root, "etc/passwd");
  let passwd: string;
  try {
    passwd = await readFile(passwdFile, "utf8");
  } catch (e) {
    throw new Error(`Cannot read the users of ${root}: ${passwdFile} is unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let group = "";
  try {
    group = await readFile(path.join(root, "etc/group"), "utf8");
  } catch {
    // a system without /etc/group has only primary groups, known by number
  }
  return { users: parsePasswd(passwd), groups: parseGroup(group) };
}

/** passwd(5) lines `name:password:uid:gid:gecos:home:shell`; malformed lines are ignored. */
export function parsePasswd(text: string): UserAccount[] {
  const out: UserAccount[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || !f[0] || f[0].startsWith("#") || f[0].startsWith("+") || f[0].startsWith("-")) continue;
    if (!/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) continue;
    out.push({ name: f[0], id: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

/** group(5) lines `name:password:gid:members`; malformed lines are ignored. */
export function parseGroup(text: string): Account[] {
  const out: Account[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 3 || !f[0] || f[0].startsWith("#") || f[0].startsWith("+") || f[0].startsWith("-")) continue;
    if (!/^\d+$/.test(f[2]!)) continue;
    out.push({ name: f[0], id: Number(f[2]) });
  }
  return out;
}

/** name → id and id → name, the first entry winning as the C library's lookups do. */
export function indexAccounts(list: readonly Account[]): { byName: Map<string, number>; byId: Map<number, string> } {
  const byName = new Map<string, number>();
  const byId = new Map<number, string>();
  for (const a of list) {
    if (!byName.has(a.name)) byName.set(a.name, a.id);
    if (!byId.has(a.id)) byId.set(a.id, a.name);
  }
  return { byName, byId };
}

/**
 * Rewrites the user and group qualifiers of POSIX ACL text (acl(5) long or short form, entries
 * separated by newlines or commas, as GNU tar stores them in SCHILY.acl.* records). Entries
 * without a qualifier (the owner, owning group, mask, other) are left as they are.
 */
export function mapAclText(text: string, mapUser: (q: string) => string, mapGroup: (q: string) => string): string {
  return text.replace(/[^\n,]+/g, (entry) => {
    const hash = entry.indexOf("#");
    const body = hash >= 0 ? entry.slice(0, hash) : entry;
    const comment = hash >= 0 ? entry.slice(hash) : "";
    const parts = body.split(":");
    let i = 0;
    if (parts[0]?.trim() === "default" || parts[0]?.trim() === "d") i = 1;
    const tag = parts[i]?.trim();
    const q = parts[i + 1];
    if (q === undefined || q.trim() === "") return entry;
    if (tag === "user" || tag === "u") parts[i + 1] = mapUser(q.trim());
    else if (tag === "group" || tag === "g") parts[i + 1] = mapGroup(q.trim());
    else return entry;
    // star's form appends the numeric id ("user:alice:rw-:1000"); the qualifier now says it.
    return parts.slice(0, i + 3).join(":") + comment;
  });
}
