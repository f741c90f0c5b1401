// The verbs of the API server over the store: create, get, list, update, patch, delete, with the
// registry strategies (metadata, status subresource, generation, finalizers, CRD schemas) applied.

import {
  ApiError, STALE_OBJECT, alreadyExists, badRequest, conflict, invalid, notFound, type StatusCause,
} from './errors.js';
import { crdResourceTypes, establishedStatus, validateCrd } from './crd.js';
import { clone, deepEqual, isObject, meta, type Json, type JsonObject } from './json.js';
import {
  defaultPodServiceAccount, foldSecretStringData, generatedName, newUid, normalizeMeta, statusOnCreate, timestamp, validateLabelsAndAnnotations, validateName, validateNodeTaints, validatePodSpecUpdate,
} from './objects.js';
import { applyPatch, type PatchType } from './patch.js';
import { Registry, apiVersionOf, builtinResourceTypes, storageKey, type ResourceType } from './resources.js';
import type { Selector } from './selectors.js';
import { Store } from './store.js';
import { realClock } from '../../common/clock.js';

export interface WriteOptions {
  /** `fieldValidation` query: Strict rejects unknown fields, Warn (default) reports them, Ignore drops silently. */
  fieldValidation?: 'Strict' | 'Warn' | 'Ignore';
  dryRun?: boolean;
}

export interface WriteResult {
  status: number;
  body: JsonObject;
  warnings: string[];
}

export interface ListPage {
  items: JsonObject[];
  resourceVersion: string;
  continueToken?: string;
  remaining?: number;
}

const INITIAL_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];
const DEFAULT_SERVICE_ACCOUNT = 'default';

export class ApiCore {
  readonly store: Store;
  readonly registry = new Registry(builtinResourceTypes());
  /** Hooks the HTTP layer uses to end watches of a resource type a CRD no longer serves. */
  onResourceRemoved: (t: ResourceType) => void = () => {};

  constructor(historyLimit: number, private readonly now: () => number = realClock.now) {
    this.store = new Store(historyLimit);
    const ns = this.registry.get('', 'v1', 'namespaces') as ResourceType;
    for (const name of INITIAL_NAMESPACES) this.create(ns, undefined, { metadata: { name } }, {});
  }

  key(t: ResourceType): string {
    return storageKey(t.group, t.plural);
  }

  get(t: ResourceType, namespace: string | undefined, name: string): JsonObject {
    const obj = this.store.get(this.key(t), namespace ?? '', name);
    if (!obj) throw notFound(t, name);
    return this.served(t, obj);
  }

  list(t: ResourceType, namespace: string | undefined, selector: Selector, limit: number, continueToken: string | undefined): ListPage {
    let start = '';
    let rv = this.store.currentRv();
    if (continueToken) {
      const token = parseContinue(continueToken);
      start = token.start;
      rv = token.rv;
    }
    const all = this.store.list(this.key(t), t.namespaced ? namespace : undefined);
    const items: JsonObject[] = [];
    let i = 0;
    if (start) while (i < all.length && objectKey(all[i] as JsonObject) <= start) i++;
    for (; i < all.length; i++) {
      const obj = all[i] as JsonObject;
      if (!selector.matches(obj)) continue;
      if (limit > 0 && items.length === limit) {
        const last = items[items.length - 1] as JsonObject;
        const remaining = selector.empty ? all.length - i : undefined;
        return { items, resourceVersion: String(rv), continueToken: makeContinue(rv, objectKey(last)), remaining };
      }
      items.push(this.served(t, obj));
    }
    return { items, resourceVersion: String(rv) };
  }

  create(t: ResourceType, namespace: string | undefined, body: Json, opts: WriteOptions): WriteResult {
    const obj = this.decode(t, body);
    const m = meta(obj);
    if (m.resourceVersion !== undefined && m.resourceVersion !== '') {
      throw badRequest('resourceVersion should not be set on objects to be created');
    }
    const ns = this.resolveNamespace(t, namespace, m);
    if (typeof m.name !== 'string' || m.name === '') {
      if (typeof m.generateName === 'string' && m.generateName) m.name = generatedName(m.generateName);
      else throw invalid(t.kind, t.group, '', [{ reason: 'FieldValueRequired', field: 'metadata.name', message: 'Required value: name or generateName is required' }]);
    }
    const name = m.name as string;
    if (t.namespaced) this.requireWritableNamespace(ns, name);
    if (t.group === '' && t.kind === 'Pod') defaultPodServiceAccount(obj);
    const status = statusOnCreate(t, obj);
    if (status === undefined) delete obj.status;
    else obj.status = status;
    foldSecretStringData(t, obj);
    const warnings = this.admitCustom(t, obj, name, opts);
    this.validateKind(t, obj, name);
    if (this.store.get(this.key(t), ns, name)) throw alreadyExists(t, name);
    const now = this.now();
    delete m.deletionTimestamp;
    delete m.deletionGracePeriodSeconds;
    m.uid = newUid();
    m.creationTimestamp = timestamp(now);
    if (t.generation) m.generation = 1;
    else delete m.generation;
    if (t.group === 'apiextensions.k8s.io' && t.kind === 'CustomResourceDefinition') {
      obj.status = establishedStatus(obj, timestamp(now));
    }
    if (t.group === '' && t.kind === 'Namespace') {
      obj.spec = { finalizers: ['kubernetes'] };
    }
    if (opts.dryRun) return { status: 201, body: this.served(t, obj), warnings };
    const rv = this.store.nextRv();
    m.resourceVersion = String(rv);
    this.store.put(this.key(t), ns, name, obj, rv);
    if (t.kind === 'CustomResourceDefinition' && t.group === 'apiextensions.k8s.io') this.registerCrd(obj);
    if (t.group === '' && t.kind === 'Namespace') this.ensureDefaultServiceAccount(name);
    return { status: 201, body: this.served(t, obj), warnings };
  }

  /** PUT on the resource (`subresource` undefined) or on `/status`. */
  update(t: ResourceType, namespace: string | undefined, name: string, body: Json, subresource: string | undefined, opts: WriteOptions): WriteResult {
    const ns = t.namespaced ? (namespace ?? '') : '';
    // As the update handler: the body is checked against the URL before storage is asked for the object.
    const obj = this.decode(t, body);
    const m = meta(obj);
    if (m.name !== undefined && m.name !== name) {
      throw badRequest(`the name of the object (${String(m.name)}) does not match the name on the URL (${name})`);
    }
    if (t.namespaced && m.namespace !== undefined && m.namespace !== ns) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    const old = this.store.get(this.key(t), ns, name);
    if (!old) throw notFound(t, name);
    const rv = m.resourceVersion;
    if (typeof rv === 'string' && rv !== '' && rv !== (old.metadata as JsonObject).resourceVersion) {
      throw conflict(t, name, STALE_OBJECT);
    }
    return this.commitUpdate(t, ns, name, old, obj, subresource, opts);
  }

  patch(t: ResourceType, namespace: string | undefined, name: string, type: Exclude<PatchType, 'apply'>, patchBody: Json, subresource: string | undefined, opts: WriteOptions): WriteResult {
    const ns = t.namespaced ? (namespace ?? '') : '';
    const old = this.store.get(this.key(t), ns, name);
    if (!old) throw notFound(t, name);
    const patched = applyPatch(type, this.served(t, old), patchBody);
    const m = meta(patched);
    const rv = m.resourceVersion;
    if (typeof rv === 'string' && rv !== '' && rv !== (old.metadata as JsonObject).resourceVersion) {
      throw conflict(t, name, STALE_OBJECT);
    }
    if (m.name !== name) throw badRequest(`the name of the object (${String(m.name)}) does not match the name on the URL (${name})`);
    return this.commitUpdate(t, ns, name, old, patched, subresource, opts);
  }

  /**
   * POST pods/NAME/binding, as the scheduler binds: sets spec.nodeName once (409 when the pod already has a node)
   * and the PodScheduled condition; answers 201 with a Success Status.
   */
  bindPod(t: ResourceType, namespace: string, name: string, body: Json): WriteResult {
    if (!isObject(body) || (body.kind !== undefined && body.kind !== 'Binding')) throw badRequest('the object provided is unrecognized (must be of type Binding)');
    const bm = isObject(body.metadata) ? body.metadata : {};
    if (bm.name !== undefined && bm.name !== name) throw badRequest(`the name of the object (${String(bm.name)}) does not match the name on the URL (${name})`);
    const target = isObject(body.target) ? body.target : {};
    const node = typeof target.name === 'string' ? target.name : '';
    if (target.kind !== undefined && target.kind !== '' && target.kind !== 'Node') {
      throw invalid('Binding', '', name, [{ reason: 'FieldValueNotSupported', field: 'target.kind', message: `Unsupported value: ${JSON.stringify(target.kind)}: supported values: "Node", "<empty>"` }]);
    }
    if (node === '') throw invalid('Binding', '', name, [{ reason: 'FieldValueRequired', field: 'target.name', message: 'Required value' }]);
    const old = this.store.get(this.key(t), namespace, name);
    if (!old) throw notFound(t, name);
    const oldMeta = old.metadata as JsonObject;
    if (typeof bm.uid === 'string' && bm.uid !== oldMeta.uid) {
      throw conflict({ group: '', plural: 'pods/binding' }, name, `Precondition failed: UID in precondition: ${bm.uid}, UID in object meta: ${String(oldMeta.uid)}`);
    }
    if (oldMeta.deletionTimestamp) throw conflict({ group: '', plural: 'pods/binding' }, name, `pod ${name} is being deleted, cannot be assigned to a host`);
    const spec = isObject(old.spec) ? old.spec : {};
    if (typeof spec.nodeName === 'string' && spec.nodeName !== '') {
      throw conflict({ group: '', plural: 'pods/binding' }, name, `pod ${name} is already assigned to node ${JSON.stringify(spec.nodeName)}`);
    }
    const status = isObject(old.status) ? old.status : {};
    const conditions = (Array.isArray(status.conditions) ? status.conditions : []).filter((c) => !(isObject(c) && c.type === 'PodScheduled'));
    conditions.push({ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: timestamp(this.now()) });
    const next: JsonObject = { ...old, metadata: { ...oldMeta }, spec: { ...spec, nodeName: node }, status: { ...status, conditions } };
    const rv = this.store.nextRv();
    (next.metadata as JsonObject).resourceVersion = String(rv);
    this.store.put(this.key(t), namespace, name, next, rv, old);
    return { status: 201, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 }, warnings: [] };
  }

  delete(t: ResourceType, namespace: string | undefined, name: string, options: Json): WriteResult {
    const ns = t.namespaced ? (namespace ?? '') : '';
    const old = this.store.get(this.key(t), ns, name);
    if (!old) throw notFound(t, name);
    const pre = isObject(options) && isObject(options.preconditions) ? options.preconditions : {};
    const oldMeta = old.metadata as JsonObject;
    if (typeof pre.uid === 'string' && pre.uid !== oldMeta.uid) {
      throw conflict(t, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${String(oldMeta.uid)}`);
    }
    if (typeof pre.resourceVersion === 'string' && pre.resourceVersion !== oldMeta.resourceVersion) {
      throw conflict(t, name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in meta: ${String(oldMeta.resourceVersion)}`);
    }
    if (isObject(options) && Array.isArray(options.dryRun) && options.dryRun.length > 0) {
      const finalizers = Array.isArray(oldMeta.finalizers) ? oldMeta.finalizers : [];
      return { status: 200, body: finalizers.length > 0 ? this.served(t, old) : this.deletedBody(t, old), warnings: [] };
    }
    const result = this.deleteObject(t, ns, name, old);
    const gone = this.store.get(this.key(t), ns, name) === undefined;
    return { status: 200, body: gone ? this.deletedBody(t, result) : this.served(t, result), warnings: [] };
  }

  /**
   * The answer to a delete that removed the object: as the generic registry's finalizeDelete, a `Status` naming it,
   * except for the types whose storage sets ReturnDeletedObject (pods, services, service accounts) and the two
   * that always finish through a finalizer on a real server (namespaces, CRDs), which answer with the object.
   */
  private deletedBody(t: ResourceType, last: JsonObject): JsonObject {
    const returnsObject = t.group === '' ? ['Pod', 'Service', 'ServiceAccount', 'Namespace'].includes(t.kind) : t.kind === 'CustomResourceDefinition' && t.group === 'apiextensions.k8s.io';
    if (returnsObject) return this.served(t, last);
    const m = last.metadata as JsonObject;
    const details: JsonObject = { name: String(m.name) };
    if (t.group !== '') details.group = t.group;
    details.kind = t.plural;
    if (typeof m.uid === 'string') details.uid = m.uid;
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details };
  }

  /** Deletes, or marks deleting when finalizers remain (as the generic registry's markAsDeleting). */
  deleteObject(t: ResourceType, ns: string, name: string, old: JsonObject): JsonObject {
    const oldMeta = old.metadata as JsonObject;
    if (t.group === '' && t.kind === 'Namespace') return this.deleteNamespace(t, name, old);
    if (t.group === 'apiextensions.k8s.io' && t.kind === 'CustomResourceDefinition') this.unregisterCrd(old);
    const finalizers = Array.isArray(oldMeta.finalizers) ? oldMeta.finalizers : [];
    if (finalizers.length === 0) return this.removeNow(t, ns, name, old);
    if (oldMeta.deletionTimestamp) return old;
    const next: JsonObject = { ...old, metadata: { ...oldMeta } };
    const m = next.metadata as JsonObject;
    if (typeof m.generation === 'number' && m.generation > 0) m.generation += 1;
    m.deletionTimestamp = timestamp(this.now());
    m.deletionGracePeriodSeconds = 0;
    const rv = this.store.nextRv();
    m.resourceVersion = String(rv);
    this.store.put(this.key(t), ns, name, next, rv, old);
    return next;
  }

  private commitUpdate(
    t: ResourceType, ns: string, name: string, old: JsonObject, incoming: JsonObject, subresource: string | undefined, opts: WriteOptions,
  ): WriteResult {
    const oldMeta = old.metadata as JsonObject;
    let obj: JsonObject;
    if (subresource === 'status') {
      // Only .status changes through /status; everything else is the stored object.
      obj = { ...old, metadata: { ...oldMeta } };
      if (incoming.status === undefined) delete obj.status;
      else obj.status = incoming.status;
    } else {
      // Patched objects share untouched subtrees with the stored one; schema admission edits in place.
      obj = t.schema ? clone(incoming) : incoming;
      obj.metadata = normalizeMeta(meta(obj));
      if (t.statusSubresource) {
        if (old.status === undefined) delete obj.status;
        else obj.status = old.status;
      }
    }
    const m = obj.metadata as JsonObject;
    for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation', 'name', 'namespace']) {
      if (oldMeta[k] === undefined) delete m[k];
      else m[k] = oldMeta[k] as Json;
    }
    if (oldMeta.deletionTimestamp && addsFinalizer(oldMeta, m)) {
      throw invalid(t.kind, t.group, name, [{ reason: 'FieldValueForbidden', field: 'metadata.finalizers', message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(newFinalizers(oldMeta, m))}` }]);
    }
    foldSecretStringData(t, obj);
    const warnings = this.admitCustom(t, obj, name, opts);
    this.validateKind(t, obj, name);
    if (t.group === '' && t.kind === 'Pod' && subresource === undefined) {
      const causes = validatePodSpecUpdate(old, obj);
      if (causes.length > 0) throw invalid(t.kind, t.group, name, causes);
    }
    if (t.generation && specChanged(t, old, obj)) m.generation = (typeof oldMeta.generation === 'number' ? oldMeta.generation : 0) + 1;
    m.resourceVersion = oldMeta.resourceVersion as Json;
    // A write that changes nothing is not a write: no new resourceVersion, no event (etcd's GuaranteedUpdate).
    if (deepEqual(obj, old)) return { status: 200, body: this.served(t, old), warnings };
    if (opts.dryRun) return { status: 200, body: this.served(t, obj), warnings };
    const finalizers = Array.isArray(m.finalizers) ? m.finalizers : [];
    if (m.deletionTimestamp && finalizers.length === 0) {
      return { status: 200, body: this.served(t, this.removeNow(t, ns, name, obj)), warnings };
    }
    const rv = this.store.nextRv();
    m.resourceVersion = String(rv);
    this.store.put(this.key(t), ns, name, obj, rv, old);
    if (t.kind === 'CustomResourceDefinition' && t.group === 'apiextensions.k8s.io') this.registerCrd(obj);
    return { status: 200, body: this.served(t, obj), warnings };
  }

  private removeNow(t: ResourceType, ns: string, name: string, last: JsonObject): JsonObject {
    const rv = this.store.nextRv();
    const final: JsonObject = { ...last, metadata: { ...(last.metadata as JsonObject), resourceVersion: String(rv) } };
    this.store.remove(this.key(t), ns, name, final, rv);
    if (t.namespaced) this.finishNamespaceIfEmpty(ns);
    if (t.group === '' && t.kind === 'ServiceAccount' && name === DEFAULT_SERVICE_ACCOUNT) this.ensureDefaultServiceAccount(ns);
    return final;
  }

  /**
   * What the serviceaccounts controller does: every namespace that exists and is not terminating has a `default`
   * ServiceAccount, made again when deleted.
   */
  private ensureDefaultServiceAccount(ns: string): void {
    const nsType = this.registry.get('', 'v1', 'namespaces') as ResourceType;
    const nsObj = this.store.get(this.key(nsType), '', ns);
    if (!nsObj || (nsObj.metadata as JsonObject).deletionTimestamp) return;
    const saType = this.registry.get('', 'v1', 'serviceaccounts') as ResourceType;
    if (this.store.get(this.key(saType), ns, DEFAULT_SERVICE_ACCOUNT)) return;
    this.create(saType, ns, { metadata: { name: DEFAULT_SERVICE_ACCOUNT } }, {});
  }

  private deleteNamespace(t: ResourceType, name: string, old: JsonObject): JsonObject {
    let current = old;
    const oldMeta = old.metadata as JsonObject;
    if (!oldMeta.deletionTimestamp) {
      const next: JsonObject = { ...old, metadata: { ...oldMeta, deletionTimestamp: timestamp(this.now()) }, status: { phase: 'Terminating' } };
      const rv = this.store.nextRv();
      (next.metadata as JsonObject).resourceVersion = String(rv);
      this.store.put(this.key(t), '', name, next, rv, old);
      current = next;
    }
    // What the namespace controller does: delete the content, then drop the `kubernetes` finalizer.
    for (const rt of this.namespacedStorage()) {
      for (const obj of this.store.list(this.key(rt), name)) {
        this.deleteObject(rt, name, String((obj.metadata as JsonObject).name), obj);
      }
    }
    return this.store.get(this.key(t), '', name) ?? current;
  }

  private finishNamespaceIfEmpty(ns: string): void {
    const nsType = this.registry.get('', 'v1', 'namespaces') as ResourceType;
    const nsObj = this.store.get(this.key(nsType), '', ns);
    if (!nsObj || !(nsObj.metadata as JsonObject).deletionTimestamp) return;
    if (this.namespacedStorage().some((rt) => this.store.countIn(this.key(rt), ns) > 0)) return;
    this.removeNow(nsType, '', ns, { ...nsObj, spec: { finalizers: [] } });
  }

  private namespacedStorage(): ResourceType[] {
    const seen = new Map<string, ResourceType>();
    for (const rt of this.registry.all()) if (rt.namespaced && !seen.has(this.key(rt))) seen.set(this.key(rt), rt);
    return [...seen.values()];
  }

  private registerCrd(crd: JsonObject): void {
    const name = String((crd.metadata as JsonObject).name);
    const before = this.registry.removeCrd(name);
    const after = crdResourceTypes(crd);
    for (const t of after) this.registry.add(t);
    for (const t of before) if (!after.some((a) => a.version === t.version)) this.onResourceRemoved(t);
  }

  private unregisterCrd(crd: JsonObject): void {
    const name = String((crd.metadata as JsonObject).name);
    const removed = this.registry.removeCrd(name);
    const first = removed[0];
    if (first) {
      // The CRD finalizer's cleanup: every custom resource goes, finalizers or not.
      for (const obj of this.store.list(this.key(first))) {
        const m = obj.metadata as JsonObject;
        this.removeNow(first, typeof m.namespace === 'string' ? m.namespace : '', String(m.name), obj);
      }
    }
    for (const t of removed) this.onResourceRemoved(t);
  }

  /** Parses a request body into a fresh object of this type with kind/apiVersion defaulted. */
  private decode(t: ResourceType, body: Json): JsonObject {
    if (!isObject(body)) throw badRequest(`the object provided is unrecognized (must be of type ${t.kind})`);
    const obj: JsonObject = { ...body };
    const apiVersion = apiVersionOf(t);
    if (obj.kind !== undefined && obj.kind !== '' && obj.kind !== t.kind) {
      throw badRequest(`the kind in the body (${String(obj.kind)}) does not match the expected kind (${t.kind})`);
    }
    if (obj.apiVersion !== undefined && obj.apiVersion !== '' && obj.apiVersion !== apiVersion) {
      throw badRequest(`the API version in the data (${String(obj.apiVersion)}) does not match the expected API version (${apiVersion})`);
    }
    obj.apiVersion = apiVersion;
    obj.kind = t.kind;
    obj.metadata = normalizeMeta(isObject(body.metadata) ? body.metadata : {});
    return obj;
  }

  private resolveNamespace(t: ResourceType, urlNs: string | undefined, m: JsonObject): string {
    if (!t.namespaced) {
      delete m.namespace;
      return '';
    }
    const bodyNs = typeof m.namespace === 'string' ? m.namespace : '';
    if (bodyNs && urlNs && bodyNs !== urlNs) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    const ns = urlNs ?? bodyNs;
    if (!ns) throw badRequest('the server could not find the requested resource');
    m.namespace = ns;
    return ns;
  }

  private requireWritableNamespace(ns: string, name: string): void {
    const nsType = this.registry.get('', 'v1', 'namespaces') as ResourceType;
    const nsObj = this.store.get(this.key(nsType), '', ns);
    if (!nsObj) throw notFound(nsType, ns);
    if ((nsObj.metadata as JsonObject).deletionTimestamp) {
      throw new ApiError(403, 'Forbidden', `unable to create new content in namespace ${ns} because it is being terminated`, { name, kind: 'namespaces' });
    }
  }

  /** Structural-schema admission of custom resources: prune, default, validate. */
  private admitCustom(t: ResourceType, obj: JsonObject, name: string, opts: WriteOptions): string[] {
    const causes: StatusCause[] = validateName(t, name);
    const warnings: string[] = [];
    if (t.schema) {
      const dropped = t.schema.prune(obj);
      if (dropped.length > 0 && opts.fieldValidation === 'Strict') {
        throw badRequest(`strict decoding error: ${dropped.map((d) => `unknown field "${d}"`).join(', ')}`);
      }
      if (opts.fieldValidation !== 'Ignore') for (const d of dropped) warnings.push(`unknown field "${d}"`);
      t.schema.applyDefaults(obj);
      causes.push(...t.schema.validate(obj));
    }
    if (causes.length > 0) throw invalid(t.kind, t.group, name, causes);
    return warnings;
  }

  private validateKind(t: ResourceType, obj: JsonObject, name: string): void {
    const metaCauses = validateLabelsAndAnnotations(obj);
    if (metaCauses.length > 0) throw invalid(t.kind, t.group, name, metaCauses);
    if (t.group === 'apiextensions.k8s.io' && t.kind === 'CustomResourceDefinition') {
      const causes = validateCrd(obj);
      if (causes.length > 0) throw invalid(t.kind, t.group, name, causes);
    }
    if (t.group === '' && t.kind === 'Node') {
      const causes = validateNodeTaints(obj);
      if (causes.length > 0) throw invalid(t.kind, t.group, name, causes);
    }
  }

  /** The object as served at this type's version (CRDs may serve several versions of one storage). */
  private served(t: ResourceType, obj: JsonObject): JsonObject {
    const apiVersion = apiVersionOf(t);
    return obj.apiVersion === apiVersion ? obj : { ...obj, apiVersion };
  }
}

function specChanged(t: ResourceType, old: JsonObject, next: JsonObject): boolean {
  if (!t.schema) return !deepEqual(old.spec, next.spec);
  // Custom resources: anything but metadata (and status, when it is a subresource) counts as spec.
  for (const k of new Set([...Object.keys(old), ...Object.keys(next)])) {
    if (k === 'metadata' || k === 'apiVersion' || k === 'kind' || (k === 'status' && t.statusSubresource)) continue;
    if (!deepEqual(old[k], next[k])) return true;
  }
  return false;
}

function finalizerList(m: JsonObject): string[] {
  return Array.isArray(m.finalizers) ? m.finalizers.filter((f): f is string => typeof f === 'string') : [];
}

function newFinalizers(oldMeta: JsonObject, m: JsonObject): string[] {
  const before = new Set(finalizerList(oldMeta));
  return finalizerList(m).filter((f) => !before.has(f));
}

function addsFinalizer(oldMeta: JsonObject, m: JsonObject): boolean {
  return newFinalizers(oldMeta, m).length > 0;
}

function objectKey(obj: JsonObject): string {
  const m = obj.metadata as JsonObject;
  return `${typeof m.namespace === 'string' ? m.namespace : ''}/${String(m.name)}`;
}

function makeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64url');
}

function parseContinue(token: string): { rv: number; start: string } {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (isObject(parsed) && typeof parsed.rv === 'number' && typeof parsed.start === 'string') return { rv: parsed.rv, start: parsed.start };
  } catch (err) {
    throw new ApiError(400, 'BadRequest', 'continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)', undefined, { cause: err });
  }
  throw badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
}
