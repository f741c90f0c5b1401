// What NMI knows about identities, from its informers: AAIs on this node (standard mode), bindings (managed mode),
// identities (both modes: managed mode selects from them, and no mode lets the node path serve one they declare) and
// exceptions; indexed the way the token handler reads them, with change notification.

import type {
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  AzurePodIdentityException,
  PodView,
} from '../crds/types.js';
import { declaredIdentitiesOf, type DeclaredIdentities } from './core/node-path.js';
import { BINDING_LABEL, type PodBinding, type SelectInput } from './core/select.js';
import { ChangeNotifier } from './notify.js';
import type { IdentityState } from './ports.js';

type Named = { readonly namespace: string; readonly name: string };

class NamespacedMap<T extends Named> {
  private readonly items = new Map<string, T>();
  private readonly byNamespace = new Map<string, Map<string, T>>();
  /** inNamespace()'s arrays since the last change. */
  private readonly lists = new Map<string, readonly T[]>();

  set(item: T): void {
    this.delete(item.namespace, item.name);
    this.lists.delete(item.namespace);
    this.items.set(`${item.namespace}/${item.name}`, item);
    let ns = this.byNamespace.get(item.namespace);
    if (ns === undefined) this.byNamespace.set(item.namespace, (ns = new Map()));
    ns.set(item.name, item);
  }

  delete(namespace: string, name: string): boolean {
    this.lists.delete(namespace);
    const existed = this.items.delete(`${namespace}/${name}`);
    this.byNamespace.get(namespace)?.delete(name);
    return existed;
  }

  get(namespace: string, name: string): T | undefined {
    return this.items.get(`${namespace}/${name}`);
  }

  inNamespace(namespace: string): readonly T[] {
    let list = this.lists.get(namespace);
    if (list === undefined) this.lists.set(namespace, (list = [...(this.byNamespace.get(namespace)?.values() ?? [])]));
    return list;
  }

  values(): IterableIterator<T> {
    return this.items.values();
  }

  clear(): void {
    this.items.clear();
    this.byNamespace.clear();
    this.lists.clear();
  }
}

export class NmiIdentityState implements IdentityState {
  private readonly assigned = new NamespacedMap<AzureAssignedIdentity>();
  private readonly assignedByPod = new Map<string, Map<string, AzureAssignedIdentity>>();
  readonly bindings = new NamespacedMap<AzureIdentityBinding>();
  readonly identities = new NamespacedMap<AzureIdentity>();
  readonly exceptions = new NamespacedMap<AzurePodIdentityException>();
  private readonly changes = new ChangeNotifier();
  private readonly bindingsBySelector = new Map<string, Map<string, AzureIdentityBinding>>();
  /** Informers whose first list the settled check still waits for (see markSynced). */
  private readonly unsynced = new Set<'assigned' | 'bindings' | 'identities'>(['assigned', 'bindings', 'identities']);
  private declared: DeclaredIdentities | undefined;
  /** selectionFor()'s answers since the last change, by pod object (a changed pod is a new object). */
  private selections = new WeakMap<PodView, Omit<SelectInput, 'pod' | 'request'>>();

  private changed(): void {
    this.selections = new WeakMap();
    this.changes.notify();
  }

  upsertAssigned(aai: AzureAssignedIdentity): void {
    this.removeAssignedIndex(aai.namespace, aai.name);
    this.assigned.set(aai);
    const podKey = `${aai.podNamespace}/${aai.pod}`;
    let forPod = this.assignedByPod.get(podKey);
    if (forPod === undefined) this.assignedByPod.set(podKey, (forPod = new Map()));
    forPod.set(`${aai.namespace}/${aai.name}`, aai);
    this.changed();
  }

  removeAssigned(namespace: string, name: string): void {
    this.removeAssignedIndex(namespace, name);
    if (this.assigned.delete(namespace, name)) this.changed();
  }

  upsertBinding(b: AzureIdentityBinding): void {
    this.removeBindingIndex(b.namespace, b.name);
    this.bindings.set(b);
    let forSelector = this.bindingsBySelector.get(b.selector);
    if (forSelector === undefined) this.bindingsBySelector.set(b.selector, (forSelector = new Map()));
    forSelector.set(`${b.namespace}/${b.name}`, b);
    this.changed();
  }

  removeBinding(namespace: string, name: string): void {
    this.removeBindingIndex(namespace, name);
    if (this.bindings.delete(namespace, name)) this.changed();
  }

  /**
   * An informer has listed (standard mode has no AzureAssignedIdentity-free view, managed mode no AAIs: mark both).
   * Until all three have, no request is settled: what is not listed yet may still be coming.
   */
  markSynced(kind: 'assigned' | 'bindings' | 'identities'): void {
    this.unsynced.delete(kind);
    this.changed();
  }

  upsertIdentity(i: AzureIdentity): void {
    this.identities.set(i);
    this.declared = undefined;
    this.changed();
  }

  removeIdentity(namespace: string, name: string): void {
    if (!this.identities.delete(namespace, name)) return;
    this.declared = undefined;
    this.changed();
  }

  /**
   * Every identity an AzureIdentity in the cluster declares; undefined until the AzureIdentity informer has listed
   * (markSynced('identities')): until then nothing can be said to be undeclared.
   */
  declaredIdentities(): DeclaredIdentities | undefined {
    if (this.unsynced.has('identities')) return undefined;
    return (this.declared ??= declaredIdentitiesOf(this.identities.values()));
  }

  upsertException(e: AzurePodIdentityException): void {
    this.exceptions.set(e);
    this.changed();
  }

  removeException(namespace: string, name: string): void {
    if (this.exceptions.delete(namespace, name)) this.changed();
  }

  /** Every AAI this NMI knows (for prefetch and explain). */
  allAssigned(): AzureAssignedIdentity[] {
    return [...this.assigned.values()];
  }

  selectionFor(pod: PodView): Omit<SelectInput, 'pod' | 'request'> {
    let known = this.selections.get(pod);
    if (known === undefined) this.selections.set(pod, (known = this.gather(pod)));
    return known;
  }

  private gather(pod: PodView): Omit<SelectInput, 'pod' | 'request'> {
    const selector = pod.labels[BINDING_LABEL];
    const podBindings: PodBinding[] = [];
    for (const binding of selector === undefined ? [] : (this.bindingsBySelector.get(selector)?.values() ?? [])) {
      podBindings.push({ binding, identity: this.identities.get(binding.namespace, binding.azureIdentity) });
    }
    return {
      assigned: [...(this.assignedByPod.get(`${pod.namespace}/${pod.name}`)?.values() ?? [])],
      exceptions: this.exceptions.inNamespace(pod.namespace),
      bindings: this.bindings.inNamespace(pod.namespace),
      identities: this.identities.inNamespace(pod.namespace),
      podBindings,
      viewComplete: this.unsynced.size === 0,
    };
  }

  waitForChange(timeoutMs: number, signal: AbortSignal): Promise<void> {
    return this.changes.wait(timeoutMs, signal);
  }

  private removeBindingIndex(namespace: string, name: string): void {
    const old = this.bindings.get(namespace, name);
    if (old === undefined) return;
    const forSelector = this.bindingsBySelector.get(old.selector);
    forSelector?.delete(`${namespace}/${name}`);
    if (forSelector?.size === 0) this.bindingsBySelector.delete(old.selector);
  }

  private removeAssignedIndex(namespace: string, name: string): void {
    const old = this.assigned.get(namespace, name);
    if (old === undefined) return;
    const podKey = `${old.podNamespace}/${old.pod}`;
    const forPod = this.assignedByPod.get(podKey);
    forPod?.delete(`${namespace}/${name}`);
    if (forPod?.size === 0) this.assignedByPod.delete(podKey);
  }
}
