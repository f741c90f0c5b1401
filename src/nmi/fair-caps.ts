// Fair caps on what each caller (a pod, by IP) and all callers together may hold: waiting token requests in the
// server, open connections in connection-limit.ts. Beyond its own cap a caller is refused. At the node-wide cap a
// caller holding fewer than the busiest caller still gets in, and the busiest caller's newest holding is evicted to
// make room, so callers flooding NMI only ever compete with each other.

export type Admission<T> =
  | { readonly kind: 'admitted'; readonly evicted?: { readonly caller: string; readonly item: T } }
  | { readonly kind: 'caller-full' | 'node-full'; readonly held: number };

export class FairCaps<T> {
  readonly #byCaller = new Map<string, Set<T>>();
  #total = 0;

  /** The caps are read on each admission (the server's are its config's, which may change while it runs). */
  constructor(private readonly caps: () => { readonly perCaller: number; readonly total: number }) {}

  get total(): number {
    return this.#total;
  }

  held(caller: string): number {
    return this.#byCaller.get(caller)?.size ?? 0;
  }

  /** Admits `item` for `caller`, or says which cap refused it. An evicted item is already released; its owner answers it. */
  admit(caller: string, item: T): Admission<T> {
    const held = this.held(caller);
    const { perCaller, total } = this.caps();
    if (held >= perCaller) return { kind: 'caller-full', held };
    let evicted: { caller: string; item: T } | undefined;
    if (this.#total >= total) {
      let busiest: [string, Set<T>] | undefined;
      for (const entry of this.#byCaller) if (busiest === undefined || entry[1].size > busiest[1].size) busiest = entry;
      if (busiest === undefined || busiest[1].size <= held + 1) return { kind: 'node-full', held };
      let newest: T | undefined;
      for (const i of busiest[1]) newest = i;
      if (newest !== undefined) {
        this.release(busiest[0], newest);
        evicted = { caller: busiest[0], item: newest };
      }
    }
    let mine = this.#byCaller.get(caller);
    if (mine === undefined) this.#byCaller.set(caller, (mine = new Set()));
    mine.add(item);
    this.#total++;
    return evicted === undefined ? { kind: 'admitted' } : { kind: 'admitted', evicted };
  }

  /** Gives back what `admit` took; a no-op for an item already released (evicted). */
  release(caller: string, item: T): void {
    const mine = this.#byCaller.get(caller);
    if (mine === undefined || !mine.delete(item)) return;
    this.#total--;
    if (mine.size === 0) this.#byCaller.delete(caller);
  }
}
