/**
 * Which files user-state capture leaves out: the default rules (caches and junk that
 * applications rebuild on their own) and the administrator's `exclude` patterns.
 *
 * Pattern syntax (matched against paths inside the old system, one rule per string):
 *   ~/.cache                 relative to every captured home directory
 *   /home/alice/Downloads    anchored at the old system's root
 *   node_modules/.cache      a trailing part of a path, at any depth
 *   *.tmp                    a name (no "/"), at any depth
 * `*` matches within one path component, `**` across components, `?` one character.
 * A directory that matches is left out with everything below it.
 */

export interface ExcludeRule {
  pattern: string;
  /** Why it is left out, as the capture summary reports it. */
  why: string;
}

const CHROMIUM_PROFILES = [".config/google-chrome", ".config/chromium", ".config/BraveSoftware/Brave-Browser", ".config/microsoft-edge"];
const CHROMIUM_CACHES = ["Cache", "Code Cache", "GPUCache", "Service Worker/CacheStorage", "Service Worker/ScriptCache"];

/** The default rules. Each names what it skips and why; none of them holds a user's own work. */
export const DEFAULT_EXCLUDES: readonly ExcludeRule[] = Object.freeze([
  { pattern: "~/.cache", why: "per-user cache (XDG_CACHE_HOME): applications rebuild it" },
  { pattern: "~/.thumbnails", why: "thumbnail cache (old location)" },
  { pattern: "~/.local/share/Trash", why: "the desktop's trash" },
  { pattern: "~/.Trash", why: "the desktop's trash (old location)" },
  { pattern: "~/.xsession-errors", why: "X session log" },
  { pattern: "~/.xsession-errors.old", why: "X session log" },
  { pattern: "~/.mozilla/firefox/*/cache2", why: "browser cache" },
  { pattern: "~/.mozilla/firefox/*/startupCache", why: "browser cache" },
  ...CHROMIUM_PROFILES.flatMap((p) => CHROMIUM_CACHES.map((c) => ({ pattern: `~/${p}/*/${c}`, why: "browser cache" }))),
  { pattern: "~/.npm/_cacache", why: "npm download cache" },
  { pattern: "~/.gradle/caches", why: "Gradle download cache" },
  { pattern: "~/.cargo/registry/cache", why: "Cargo download cache" },
  { pattern: "~/.local/share/containers/cache", why: "container image cache" },
  { pattern: "node_modules/.cache", why: "build tool cache" },
  { pattern: "__pycache__", why: "Python bytecode cache" },
  { pattern: ".pytest_cache", why: "test runner cache" },
  { pattern: "~/.gvfs", why: "GVFS mount point" },
]);

/**
 * A matcher over paths inside the old system (absolute, "/"-separated): the rule that leaves
 * the path out, or undefined. `homes` are the captured home directories ("~/" rules).
 */
export function compileExcludes(rules: readonly ExcludeRule[], homes: readonly string[]): (absPath: string) => ExcludeRule | undefined {
  const compiled: { re: RegExp; rule: ExcludeRule }[] = [];
  for (const rule of rules) {
    const p = rule.pattern.trim().replace(/\/+$/, "");
    if (p === "" || p === "~" || p === "/") throw new Error(`Cannot use the exclude pattern "${rule.pattern}": it would leave out everything`);
    if (p.startsWith("~/")) {
      const rest = globToRegex(p.slice(2));
      for (const h of homes) compiled.push({ re: new RegExp(`^${escapeRegex(h.replace(/\/+$/, ""))}/${rest}$`, "s"), rule });
    } else if (p.startsWith("/")) {
      compiled.push({ re: new RegExp(`^${globToRegex(p.slice(1)).replace(/^/, "/")}$`, "s"), rule });
    } else {
      compiled.push({ re: new RegExp(`(^|/)${globToRegex(p)}$`, "s"), rule });
    }
  }
  return (absPath) => compiled.find((c) => c.re.test(absPath))?.rule;
}

function globToRegex(glob: string): string {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*" && glob[i + 1] === "*") {
      out += ".*";
      i++;
    } else if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else out += escapeRegex(c);
  }
  return out;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
