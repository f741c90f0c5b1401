// Node → the ARM resource that carries its identities (VM, or the scale set of a VMSS instance), from the
// node's spec.providerID: the target plans carry and ARM calls use, keyed as the ARM workers key it.
import { parseProviderId } from '../../azure/resource-id.js';
import type { NodeView } from '../../crds/types.js';
import { targetKey, type SnapshotNode } from '../core/snapshot.js';

export interface ResolvedNode {
  /** `target` undefined when the provider ID names no Azure VM or scale set. */
  readonly node: SnapshotNode;
  /** Why the provider ID was not usable, for one log line. */
  readonly problem?: string;
}

export function resolveNode(node: NodeView): ResolvedNode {
  if (node.providerID === '') return { node: { ...node, target: undefined }, problem: 'spec.providerID is empty' };
  try {
    const t = parseProviderId(node.providerID);
    // The original used azure.json's resourceGroup for every node; the provider ID names the right one.
    const target = { kind: t.kind, name: t.name, resourceGroup: t.resourceGroup, key: targetKey(t.kind, t.resourceGroup, t.name) };
    return { node: { ...node, target } };
  } catch (err) {
    return { node: { ...node, target: undefined }, problem: err instanceof Error ? err.message : String(err) };
  }
}
