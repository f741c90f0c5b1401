// Keyed cache of Kubernetes objects (plain JSON) with caller-defined indexes; aware of uids so that a delete and
// re-create under the same name is seen as two objects, not as an update.

/** The part of a Kubernetes object the store and the reflector rely on. Objects are plain JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: KubeObjectMeta;
}

export interface KubeObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  // Strings in plain JSON; Dates/classes in client-node typed objects, hence unknown.
  creationTimestamp?: unknown;
  deletionTimestamp?: unknown;
  ownerReferences?: unknown;
}

/** Index values of an object (e.g. its pod IP); an empty array leaves it out of the index. */
export type IndexFunc<T> = (obj: T) => readonly string[];

/** What an upsert did. `replaced` means the key now holds an object with another uid. */
export type UpsertResult<T> =
  | { readonly kind: 'added' }
  | { readonly kind: 'updated'; readonly previous: T }
  | { readonly kind: 'replaced'; readonly previous: T };

/** `namespace/name`, or `name` for cluster-scoped objects (client-go's MetaNamespaceKeyFunc). */
export function objectKey(obj: KubeObject): string {
  const name = obj.metadata?.name;
  if (!name) throw new Error('object has no metadata.name');
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${name}` : name;
}

export function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

/** Splits a store key back into namespace and name. */
export function splitKey(key: string): { namespace?: string; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/**
 * Deep-copies an object to plain JSON. Typed client-node calls return class instances with `Date` fields
 * (`creationTimestamp`) while watch events carry strings; use this only when a list went through a typed call.
 * Note: class instances of client-node use JS property names, which match the wire names for object metadata and
 * specs but not for everything; reading lists raw (see `listPage`) is preferred.
 */
export function toPlainJson<T>(obj: T): T {
  return JSON.parse(JSON.stringify(obj)) as T;
}

export class Store<T extends KubeObject = KubeObject> {
  readonly #items = new Map<string, T>();
  readonly #indexers: ReadonlyMap<string, IndexFunc<T>>;
  // index name -> value -> keys
  readonly #indexes = new Map<string, Map<string, Set<string>>>();
  // key -> index name -> values it was filed under (so removal does not depend on the object being unchanged)
  readonly #filed = new Map<string, Map<string, readonly string[]>>();

  constructor(indexers: Readonly<Record<string, IndexFunc<T>>> = {}) {
    this.#indexers = new Map(Object.entries(indexers));
    for (const name of this.#indexers.keys()) this.#indexes.set(name, new Map());
  }

  get size(): number {
    return this.#items.size;
  }

  get(key: string): T | undefined {
    return this.#items.get(key);
  }

  getByName(namespace: string | undefined, name: string): T | undefined {
    return this.#items.get(keyOf(namespace, name));
  }

  has(key: string): boolean {
    return this.#items.has(key);
  }

  keys(): string[] {
    return [...this.#items.keys()];
  }

  /** All objects, in insertion order. The objects are the cached ones: do not mutate them. */
  list(): T[] {
    return [...this.#items.values()];
  }

  /** Objects whose index function returned `value` for the index `name`. */
  byIndex(name: string, value: string): T[] {
    const index = this.#indexes.get(name);
    if (!index) throw new Error(`unknown index ${name}`);
    const keys = index.get(value);
    if (!keys) return [];
    const out: T[] = [];
    for (const key of keys) {
      const obj = this.#items.get(key);
      if (obj) out.push(obj);
    }
    return out;
  }

  /** Index values present for the index `name`. */
  indexValues(name: string): string[] {
    const index = this.#indexes.get(name);
    if (!index) throw new Error(`unknown index ${name}`);
    return [...index.keys()];
  }

  /** Adds or replaces the object under its key and tells whether it is new, an update, or a different uid. */
  upsert(obj: T): UpsertResult<T> {
    const key = objectKey(obj);
    const previous = this.#items.get(key);
    if (previous) this.#unindex(key);
    this.#items.set(key, obj);
    this.#index(key, obj);
    if (!previous) return { kind: 'added' };
    const oldUid = previous.metadata?.uid;
    const newUid = obj.metadata?.uid;
    if (oldUid && newUid && oldUid !== newUid) return { kind: 'replaced', previous };
    return { kind: 'updated', previous };
  }

  /**
   * Removes the object under `key`. With `uid`, removes it only if the cached object has that uid, so a late delete
   * of an old incarnation cannot remove its successor. Returns the removed object.
   */
  delete(key: string, uid?: string): T | undefined {
    const previous = this.#items.get(key);
    if (!previous) return undefined;
    const cachedUid = previous.metadata?.uid;
    if (uid && cachedUid && uid !== cachedUid) return undefined;
    this.#unindex(key);
    this.#items.delete(key);
    return previous;
  }

  clear(): void {
    this.#items.clear();
    this.#filed.clear();
    for (const index of this.#indexes.values()) index.clear();
  }

  #index(key: string, obj: T): void {
    const filed = new Map<string, readonly string[]>();
    for (const [name, fn] of this.#indexers) {
      const index = this.#indexes.get(name);
      if (!index) continue;
      const values = safeIndexValues(fn, obj);
      filed.set(name, values);
      for (const value of values) {
        let keys = index.get(value);
        if (!keys) index.set(value, (keys = new Set()));
        keys.add(key);
      }
    }
    this.#filed.set(key, filed);
  }

  #unindex(key: string): void {
    const filed = this.#filed.get(key);
    if (!filed) return;
    for (const [name, values] of filed) {
      const index = this.#indexes.get(name);
      if (!index) continue;
      for (const value of values) {
        const keys = index.get(value);
        if (!keys) continue;
        keys.delete(key);
        if (keys.size === 0) index.delete(value);
      }
    }
    this.#filed.delete(key);
  }
}

// An index function that throws on a malformed object must not corrupt the store; such an object is simply unindexed.
function safeIndexValues<T>(fn: IndexFunc<T>, obj: T): readonly string[] {
  try {
    return [...new Set(fn(obj).filter((v) => typeof v === 'string' && v !== ''))];
  } catch {
    return [];
  }
}
