// The resource types the emulator serves: the built-in kinds we need, plus whatever CRDs register.

import type { CustomSchema } from './schema.js';
import type { PrinterColumn } from './table.js';

export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly singular: string;
  readonly kind: string;
  readonly listKind: string;
  readonly namespaced: boolean;
  readonly shortNames: readonly string[];
  readonly categories: readonly string[];
  readonly verbs: readonly string[];
  /** `status` is a subresource: main-resource writes keep the old status, `/status` writes change only status. */
  readonly statusSubresource: boolean;
  /** Strategic merge patch is accepted (built-in kinds only, as the real server). */
  readonly strategicMerge: boolean;
  /** `metadata.generation` is kept and bumped on spec changes. */
  readonly generation: boolean;
  /** Present for custom resources: the structural schema of this version. */
  readonly schema?: CustomSchema;
  readonly printerColumns?: readonly PrinterColumn[];
  /** Name of the CRD that registered this type. */
  readonly crdName?: string;
}

/** Storage is shared by every served version of a group/resource. */
export function storageKey(group: string, plural: string): string {
  return `${group}/${plural}`;
}

export function apiVersionOf(t: { group: string; version: string }): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

export const ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'] as const;

interface BuiltinSpec {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  status?: boolean;
  generation?: boolean;
  categories?: string[];
}

const BUILTINS: readonly BuiltinSpec[] = [
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, shortNames: ['po'], status: true, categories: ['all'] },
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false, shortNames: ['no'], status: true },
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false, shortNames: ['ns'], status: true },
  { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true },
  { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'] },
  { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true, shortNames: ['cm'] },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', namespaced: true, shortNames: ['svc'], status: true, categories: ['all'] },
  { group: '', version: 'v1', plural: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true, shortNames: ['sa'] },
  { group: '', version: 'v1', plural: 'endpoints', kind: 'Endpoints', namespaced: true, shortNames: ['ep'] },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease', namespaced: true },
  { group: 'events.k8s.io', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'] },
  { group: 'apps', version: 'v1', plural: 'deployments', kind: 'Deployment', namespaced: true, shortNames: ['deploy'], status: true, generation: true, categories: ['all'] },
  { group: 'apps', version: 'v1', plural: 'daemonsets', kind: 'DaemonSet', namespaced: true, shortNames: ['ds'], status: true, generation: true, categories: ['all'] },
  { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'roles', kind: 'Role', namespaced: true },
  { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'clusterroles', kind: 'ClusterRole', namespaced: false },
  { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'rolebindings', kind: 'RoleBinding', namespaced: true },
  { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'clusterrolebindings', kind: 'ClusterRoleBinding', namespaced: false },
  { group: 'scheduling.k8s.io', version: 'v1', plural: 'priorityclasses', kind: 'PriorityClass', namespaced: false, shortNames: ['pc'] },
  { group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget', namespaced: true, shortNames: ['pdb'], status: true, generation: true },
  { group: 'apiextensions.k8s.io', version: 'v1', plural: 'customresourcedefinitions', kind: 'CustomResourceDefinition', namespaced: false, shortNames: ['crd', 'crds'], status: true, generation: true },
];

export function builtinResourceTypes(): ResourceType[] {
  return BUILTINS.map((b) => ({
    group: b.group,
    version: b.version,
    plural: b.plural,
    singular: b.kind.toLowerCase(),
    kind: b.kind,
    listKind: `${b.kind}List`,
    namespaced: b.namespaced,
    shortNames: b.shortNames ?? [],
    categories: b.categories ?? [],
    verbs: ALL_VERBS,
    statusSubresource: b.status ?? false,
    strategicMerge: true,
    generation: b.generation ?? false,
  }));
}

/** Lookup of served types by group/version/plural, with the group order discovery reports. */
export class Registry {
  private readonly byGvr = new Map<string, ResourceType>();

  constructor(types: readonly ResourceType[] = []) {
    for (const t of types) this.add(t);
  }

  add(t: ResourceType): void {
    this.byGvr.set(gvrKey(t.group, t.version, t.plural), t);
  }

  removeCrd(crdName: string): ResourceType[] {
    const removed: ResourceType[] = [];
    for (const [k, t] of this.byGvr) {
      if (t.crdName === crdName) {
        this.byGvr.delete(k);
        removed.push(t);
      }
    }
    return removed;
  }

  get(group: string, version: string, plural: string): ResourceType | undefined {
    return this.byGvr.get(gvrKey(group, version, plural));
  }

  all(): ResourceType[] {
    return [...this.byGvr.values()];
  }

  /** Groups in first-registration order, each with its versions (first = preferred). */
  groups(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const t of this.byGvr.values()) {
      const versions = out.get(t.group) ?? [];
      if (!versions.includes(t.version)) versions.push(t.version);
      out.set(t.group, versions);
    }
    return out;
  }

  inGroupVersion(group: string, version: string): ResourceType[] {
    return this.all().filter((t) => t.group === group && t.version === version);
  }
}

function gvrKey(group: string, version: string, plural: string): string {
  return `${group}/${version}/${plural}`;
}
