// The node startup taint NMI removes once it is ready (issue 10 item 13): which taints go, and the JSON patch that
// removes exactly those. Taints match by key only, any value and any effect, as Cilium's and the EBS CSI driver's do.

export interface JsonPatchOperation {
  readonly op: 'test' | 'remove';
  readonly path: string;
  readonly value?: string;
}

export interface StartupTaintRemoval {
  /** `key:effect` of each taint removed, for the log. */
  readonly removed: readonly string[];
  /** RFC 6902 operations; the server applies all or none. */
  readonly patch: readonly JsonPatchOperation[];
}

/**
 * The removal of every taint with `key` from a node's `spec.taints` as read, or undefined when none carries it.
 * Each `remove` is guarded by a `test` of the key at that index, so a list changed since it was read fails the
 * patch (and the caller re-reads) instead of removing someone else's taint. Only the key is tested, not the whole
 * list: a `timeAdded` re-serialised by a client would make a whole-list `test` fail for ever.
 */
export function startupTaintRemoval(taints: unknown, key: string): StartupTaintRemoval | undefined {
  if (key === '' || !Array.isArray(taints)) return undefined;
  const indexes: number[] = [];
  const removed: string[] = [];
  taints.forEach((taint: unknown, i) => {
    if (!isRecord(taint) || taint.key !== key) return;
    indexes.push(i);
    removed.push(`${key}:${typeof taint.effect === 'string' ? taint.effect : ''}`);
  });
  if (indexes.length === 0) return undefined;
  const patch: JsonPatchOperation[] = [];
  // Highest index first: removing it does not move the ones before it.
  for (const i of indexes.reverse()) {
    patch.push({ op: 'test', path: `/spec/taints/${i}/key`, value: key });
    patch.push({ op: 'remove', path: `/spec/taints/${i}` });
  }
  return { removed, patch };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
