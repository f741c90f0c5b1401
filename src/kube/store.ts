// The one cache: a keyed store of the views a consumer needs (what a reflector's transform made of each object), with
// caller-defined indexes. It remembers each entry's uid and resourceVersion, so that a delete and re-create under the
// same name is seen as two objects, not as an update, and a relist can skip what did not change.

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

/** Identity and version of the object an entry was made from. */
export interface EntryMeta {
  readonly uid?: string;
  readonly resourceVersion?: string;
}

/** Index values of a view (e.g. its pod IP); an empty array leaves it out of the index. */
export type IndexFunc<V> = (view: V) => readonly string[];

/** What an upsert did. `replaced` means the key now holds an object with another uid. */
export type UpsertResult<V> =
  | { readonly kind: 'added' }
  | { readonly kind: 'updated'; readonly previous: V }
  | { readonly kind: 'replaced'; readonly previous: V };

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

interface Entry<V> {
  readonly view: V;
  readonly uid: string | undefined;
  readonly resourceVersion: string | undefined;
  /** Values filed under each index, in indexer order (so removal does not depend on the view being unchanged). */
  readonly filed: ReadonlyArray<readonly string[]>;
}

/**
 * `V` is what the consumer reads: the raw object by default, or the normalised view a reflector's transform returns.
 * Views are shared with every reader: never mutate them.
 */
export class Store<V = KubeObject> {
  readonly #items = new Map<string, Entry<V>>();
  readonly #indexers: ReadonlyArray<readonly [string, IndexFunc<V>]>;
  // index name -> value -> keys
  readonly #indexes = new Map<string, Map<string, Set<string>>>();

  constructor(indexers: Readonly<Record<string, IndexFunc<V>>> = {}) {
    this.#indexers = Object.entries(indexers);
    for (const [name] of this.#indexers) this.#indexes.set(name, new Map());
  }

  get size(): number {
    return this.#items.size;
  }

  get(key: string): V | undefined {
    return this.#items.get(key)?.view;
  }

  getByName(namespace: string | undefined, name: string): V | undefined {
    return this.get(keyOf(namespace, name));
  }

  has(key: string): boolean {
    return this.#items.has(key);
  }

  /** uid and resourceVersion of the object the entry under `key` was made from. */
  meta(key: string): EntryMeta | undefined {
    const e = this.#items.get(key);
    return e === undefined ? undefined : { uid: e.uid, resourceVersion: e.resourceVersion };
  }

  keys(): string[] {
    return [...this.#items.keys()];
  }

  /** All views, in insertion order (a copy of the list; the views themselves are the cached ones). */
  list(): V[] {
    const out: V[] = [];
    for (const e of this.#items.values()) out.push(e.view);
    return out;
  }

  /** All views without copying, for readers that only iterate. */
  *values(): IterableIterator<V> {
    for (const e of this.#items.values()) yield e.view;
  }

  /** `[key, view]` pairs without copying. */
  *entries(): IterableIterator<[string, V]> {
    for (const [k, e] of this.#items) yield [k, e.view];
  }

  /** Calls `fn` with every view and its key, in insertion order, allocating nothing per entry. */
  forEach(fn: (view: V, key: string) => void): void {
    for (const [key, e] of this.#items) fn(e.view, key);
  }

  /** Views whose index function returned `value` for the index `name`. */
  byIndex(name: string, value: string): V[] {
    const keys = this.#index(name).get(value);
    if (!keys) return [];
    const out: V[] = [];
    for (const key of keys) {
      const e = this.#items.get(key);
      if (e) out.push(e.view);
    }
    return out;
  }

  /** Keys filed under `value` for the index `name`. */
  keysByIndex(name: string, value: string): string[] {
    return [...(this.#index(name).get(value) ?? [])];
  }

  /** Index values present for the index `name`. */
  indexValues(name: string): string[] {
    return [...this.#index(name).keys()];
  }

  /** Stores `view` under `key` and tells whether it is new, an update, or a different uid (`meta.uid`). */
  set(key: string, view: V, meta: EntryMeta = {}): UpsertResult<V> {
    const previous = this.#items.get(key);
    if (previous) this.#unindex(key, previous);
    const filed = this.#indexers.map(([, fn]) => safeIndexValues(fn, view));
    this.#items.set(key, { view, uid: meta.uid, resourceVersion: meta.resourceVersion, filed });
    this.#indexers.forEach(([name], i) => {
      const index = this.#indexes.get(name) as Map<string, Set<string>>;
      for (const value of filed[i] ?? []) {
        let keys = index.get(value);
        if (!keys) index.set(value, (keys = new Set()));
        keys.add(key);
      }
    });
    if (!previous) return { kind: 'added' };
    if (previous.uid && meta.uid && previous.uid !== meta.uid) return { kind: 'replaced', previous: previous.view };
    return { kind: 'updated', previous: previous.view };
  }

  /** Stores an object that is its own view, under its own key, uid and resourceVersion. */
  upsert(obj: V & KubeObject): UpsertResult<V> {
    return this.set(objectKey(obj), obj, { uid: obj.metadata?.uid, resourceVersion: obj.metadata?.resourceVersion });
  }

  /**
   * Removes the entry under `key`. With `uid`, removes it only if the cached entry has that uid, so a late delete
   * of an old incarnation cannot remove its successor. Returns the removed view.
   */
  delete(key: string, uid?: string): V | undefined {
    const previous = this.#items.get(key);
    if (!previous) return undefined;
    if (uid && previous.uid && uid !== previous.uid) return undefined;
    this.#unindex(key, previous);
    this.#items.delete(key);
    return previous.view;
  }

  clear(): void {
    this.#items.clear();
    for (const index of this.#indexes.values()) index.clear();
  }

  #index(name: string): Map<string, Set<string>> {
    const index = this.#indexes.get(name);
    if (!index) throw new Error(`unknown index ${name}`);
    return index;
  }

  #unindex(key: string, entry: Entry<V>): void {
    this.#indexers.forEach(([name], i) => {
      const index = this.#indexes.get(name) as Map<string, Set<string>>;
      for (const value of entry.filed[i] ?? []) {
        const keys = index.get(value);
        if (!keys) continue;
        keys.delete(key);
        if (keys.size === 0) index.delete(value);
      }
    });
  }
}

// An index function that throws on a malformed view must not corrupt the store; such a view is simply unindexed.
function safeIndexValues<V>(fn: IndexFunc<V>, view: V): readonly string[] {
  try {
    return [...new Set(fn(view).filter((v) => typeof v === 'string' && v !== ''))];
  } catch {
    return [];
  }
}
