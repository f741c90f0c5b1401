// Node → the ARM resource that carries its identities (VM, or the scale set of a VMSS instance), from the
// node's spec.providerID. The key matches arm.ts's per-target key, so logs of both line up.
import { parseProviderId } from '../../azure/resource-id.js';
import type { NodeView } from '../../crds/types.js';
import type { ArmTarget } from '../arm.js';
import type { ComputeTargetRef, SnapshotNode } from '../core/snapshot.js';

export interface ResolvedNode {
  readonly node: SnapshotNode;
  /** The ARM call target; undefined when the provider ID names no Azure VM or scale set. */
  readonly arm: ArmTarget | undefined;
  /** Why the provider ID was not usable, for one log line. */
  readonly problem?: string;
}

export function resolveNode(node: NodeView): ResolvedNode {
  if (node.providerID === '') return { node: { ...node, target: undefined }, arm: undefined, problem: 'spec.providerID is empty' };
  try {
    const t = parseProviderId(node.providerID);
    const target: ComputeTargetRef = { kind: t.kind, name: t.name, key: targetKey(t.kind, t.resourceGroup, t.name) };
    // The original used azure.json's resourceGroup for every node; the provider ID names the right one.
    return { node: { ...node, target }, arm: { kind: t.kind, name: t.name, resourceGroup: t.resourceGroup } };
  } catch (err) {
    return { node: { ...node, target: undefined }, arm: undefined, problem: err instanceof Error ? err.message : String(err) };
  }
}

export function targetKey(kind: 'vm' | 'vmss', resourceGroup: string, name: string): string {
  return `${kind}/${resourceGroup.toLowerCase()}/${name.toLowerCase()}`;
}
