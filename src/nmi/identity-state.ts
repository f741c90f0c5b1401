// What NMI knows about identities: AAIs on this node (standard mode), bindings (managed mode, and whether an
// assignment may still come), identities (both modes: managed mode selects from them, and no mode lets the node path
// serve one they declare) and exceptions. A view over the reflectors' stores: each reflector keeps its objects once, as
// the normalised CRD types (the transform at ingest), indexed the way the token handler reads them; this class reads
// those stores, remembers what it derived until the next change, and tells waiters about changes.

import type {
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  AzurePodIdentityException,
  PodView,
} from '../crds/types.js';
import { keyOf, Store } from '../kube/store.js';
import { declaredIdentitiesOf, type DeclaredIdentities } from './core/node-path.js';
import { BINDING_LABEL, type PodBinding, type SelectInput } from './core/select.js';
import { ChangeNotifier } from './notify.js';
import type { IdentityState } from './ports.js';

type Named = { readonly namespace: string; readonly name: string };

/** One kind's store, read by namespace/name and by namespace. */
export class NamespacedStore<T extends Named> {
  readonly store: Store<T>;
  constructor(indexers: Readonly<Record<string, (view: T) => readonly string[]>> = {}) {
    this.store = new Store<T>({ byNamespace: (v) => [v.namespace], ...indexers });
  }

  get(namespace: string, name: string): T | undefined {
    return this.store.get(keyOf(namespace, name));
  }

  set(item: T & { readonly uid?: string; readonly resourceVersion?: string }): void {
    this.store.set(keyOf(item.namespace, item.name), item, { uid: item.uid, resourceVersion: item.resourceVersion });
  }

  delete(namespace: string, name: string): boolean {
    return this.store.delete(keyOf(namespace, name)) !== undefined;
  }

  inNamespace(namespace: string): readonly T[] {
    return this.store.byIndex('byNamespace', namespace);
  }

  values(): IterableIterator<T> {
    return this.store.values();
  }
}

export type IdentityKind = 'assigned' | 'bindings' | 'identities' | 'exceptions';

export class NmiIdentityState implements IdentityState {
  readonly assigned = new NamespacedStore<AzureAssignedIdentity>({ byPod: (a) => [keyOf(a.podNamespace, a.pod)] });
  readonly bindings = new NamespacedStore<AzureIdentityBinding>({ bySelector: (b) => [b.selector] });
  readonly identities = new NamespacedStore<AzureIdentity>();
  readonly exceptions = new NamespacedStore<AzurePodIdentityException>();
  private readonly changes = new ChangeNotifier();
  /** Informers whose first list the settled check still waits for (see markSynced). */
  private readonly unsynced = new Set<'assigned' | 'bindings' | 'identities'>(['assigned', 'bindings', 'identities']);
  private declared: DeclaredIdentities | undefined;
  /** selectionFor()'s answers since the last change, by pod object (a changed pod is a new object). */
  private selections = new WeakMap<PodView, Omit<SelectInput, 'pod' | 'request'>>();

  /** A store changed (a reflector event, or an upsert here): what was derived is dropped, and waiters look again. */
  changed(kind?: IdentityKind): void {
    if (kind === undefined || kind === 'identities') this.declared = undefined;
    this.selections = new WeakMap();
    this.changes.notify();
  }

  upsertAssigned(aai: AzureAssignedIdentity): void {
    this.assigned.set(aai);
    this.changed('assigned');
  }

  removeAssigned(namespace: string, name: string): void {
    if (this.assigned.delete(namespace, name)) this.changed('assigned');
  }

  upsertBinding(b: AzureIdentityBinding): void {
    this.bindings.set(b);
    this.changed('bindings');
  }

  removeBinding(namespace: string, name: string): void {
    if (this.bindings.delete(namespace, name)) this.changed('bindings');
  }

  /**
   * An informer has listed (standard mode has no AzureAssignedIdentity-free view, managed mode no AAIs: mark both).
   * Until all three have, no request is settled: what is not listed yet may still be coming.
   */
  markSynced(kind: 'assigned' | 'bindings' | 'identities'): void {
    this.unsynced.delete(kind);
    this.changed(kind);
  }

  upsertIdentity(i: AzureIdentity): void {
    this.identities.set(i);
    this.changed('identities');
  }

  removeIdentity(namespace: string, name: string): void {
    if (this.identities.delete(namespace, name)) this.changed('identities');
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
    this.changed('exceptions');
  }

  removeException(namespace: string, name: string): void {
    if (this.exceptions.delete(namespace, name)) this.changed('exceptions');
  }

  /** Every AAI this NMI knows (for prefetch and explain). */
  allAssigned(): AzureAssignedIdentity[] {
    return this.assigned.store.list();
  }

  selectionFor(pod: PodView): Omit<SelectInput, 'pod' | 'request'> {
    let known = this.selections.get(pod);
    if (known === undefined) this.selections.set(pod, (known = this.gather(pod)));
    return known;
  }

  private gather(pod: PodView): Omit<SelectInput, 'pod' | 'request'> {
    const selector = pod.labels[BINDING_LABEL];
    const podBindings: PodBinding[] = [];
    for (const binding of selector === undefined ? [] : this.bindings.store.byIndex('bySelector', selector)) {
      podBindings.push({ binding, identity: this.identities.get(binding.namespace, binding.azureIdentity) });
    }
    return {
      assigned: this.assigned.store.byIndex('byPod', keyOf(pod.namespace, pod.name)),
      exceptions: this.exceptions.inNamespace(pod.namespace),
      bindings: this.bindings.inNamespace(pod.namespace),
      identities: this.identities.inNamespace(pod.namespace),
      podBindings,
      viewComplete: this.unsynced.size === 0,
      liveIdentity: this.liveIdentity,
    };
  }

  /** The AzureIdentity namespace/name as the reflector holds it now. */
  readonly liveIdentity = (namespace: string, name: string): AzureIdentity | undefined => this.identities.get(namespace, name);

  waitForChange(timeoutMs: number, signal: AbortSignal): Promise<void> {
    return this.changes.wait(timeoutMs, signal);
  }
}
