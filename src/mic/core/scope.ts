// Incremental planning: narrow a snapshot to the VM/VMSS targets an event touched, so `plan()` only looks at
// the pods and AAIs that can change what happens there. A plan over a scoped snapshot is a subset of the full
// plan, and contains every step of the full plan that concerns the scope (see mic-core-scope tests).
import type { PodView } from '../../crds/types.js';
import type { ClusterSnapshot, SnapshotNode } from './snapshot.js';

/** Scope key standing for nodes without a target and node names the cache does not know (vanished nodes). */
export const NO_TARGET = '(no-target)';

/**
 * Keeps the nodes of the given targets (all nodes of a VMSS together, so the in-use rule still sees every
 * pod of the scale set), their pods, and their AAIs. The scope grows to any target where an included AAI or
 * its pod lives on another target (a pod that came back on another node), until nothing more is pulled in.
 * Identities, bindings, attachments and pending writes pass through unchanged.
 */
export function scopeSnapshot(snapshot: ClusterSnapshot, targetKeys: ReadonlySet<string>): ClusterSnapshot {
  const nodeScope = new Map<string, string>();
  for (const node of snapshot.nodes) nodeScope.set(node.name, scopeKeyOf(node));
  const keyOfNode = (name: string): string => nodeScope.get(name) ?? NO_TARGET;
  const podByKey = new Map<string, PodView>();
  for (const pod of snapshot.pods) podByKey.set(`${pod.namespace}/${pod.name}`, pod);

  const scope = new Set(targetKeys);
  for (;;) {
    const before = scope.size;
    for (const aai of snapshot.assigned) {
      const pod = podByKey.get(`${aai.podNamespace}/${aai.pod}`);
      const aaiKey = keyOfNode(aai.nodeName);
      const podKey = pod === undefined ? undefined : keyOfNode(pod.nodeName);
      if (scope.has(aaiKey) && podKey !== undefined) scope.add(podKey);
      if (podKey !== undefined && scope.has(podKey)) scope.add(aaiKey);
    }
    if (scope.size === before) break;
  }

  const inScope = (nodeName: string): boolean => scope.has(keyOfNode(nodeName));
  // The closure above put the node of every AAI whose pod is in scope into scope too.
  return {
    ...snapshot,
    nodes: snapshot.nodes.filter((n) => scope.has(scopeKeyOf(n))),
    pods: snapshot.pods.filter((p) => inScope(p.nodeName)),
    assigned: snapshot.assigned.filter((a) => inScope(a.nodeName)),
  };
}

/** The scope key of a node: its target key, or NO_TARGET. */
export function scopeKeyOf(node: SnapshotNode): string {
  return node.target?.key ?? NO_TARGET;
}
