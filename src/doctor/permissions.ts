// Whether an ARM action is allowed by what `Microsoft.Authorization/permissions` returns for the caller at a scope
// (reference/operations.md §1.5): some entry's `actions` matches and that same entry's `notActions` does not.
// Patterns are case-insensitive; `*` is a wildcard, and a `/*/` in the middle also matches zero segments (Managed
// Identity Operator's `userAssignedIdentities/*/assign/action` grants `userAssignedIdentities/assign/action`).

export interface PermissionEntry {
  readonly actions: readonly string[];
  readonly notActions: readonly string[];
}

/** Parses a permissions list body (`{"value":[{actions,notActions,...}]}`); malformed entries are dropped. */
export function parsePermissions(body: unknown): { entries: PermissionEntry[]; nextLink?: string } {
  const o = body as { value?: unknown; nextLink?: unknown } | null;
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : []);
  const entries = (Array.isArray(o?.value) ? o.value : []).map((e: unknown) => {
    const p = e as { actions?: unknown; notActions?: unknown } | null;
    return { actions: strings(p?.actions), notActions: strings(p?.notActions) };
  });
  return typeof o?.nextLink === 'string' && o.nextLink !== '' ? { entries, nextLink: o.nextLink } : { entries };
}

export function actionAllowed(entries: readonly PermissionEntry[], action: string): boolean {
  return entries.some((e) => e.actions.some((p) => actionMatches(p, action)) && !e.notActions.some((p) => actionMatches(p, action)));
}

export function actionMatches(pattern: string, action: string): boolean {
  return patternRegExp(pattern).test(action);
}

function patternRegExp(pattern: string): RegExp {
  if (pattern.trim() === '*') return /^.*$/s;
  const parts = pattern.trim().split('*').map(escape);
  let source = parts[0] ?? '';
  for (let i = 1; i < parts.length; i++) {
    const before = source;
    const after = parts[i] ?? '';
    if (before.endsWith('/') && after.startsWith('/')) {
      // `/*/`: any number of segments, including none.
      source = `${before.slice(0, -1)}(?:/.*)?${after}`;
    } else if (before === '' && after.startsWith('/')) {
      // leading `*/`: any provider (and deeper), including none.
      source = `(?:.*/)?${after.slice(1)}`;
    } else {
      source = `${before}.*${after}`;
    }
  }
  return new RegExp(`^${source}$`, 'is');
}

function escape(text: string): string {
  return text.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}
