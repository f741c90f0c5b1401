// NMI's audit trail: one structured record per token issued and per token request refused (docs/audit.md has the
// schema). Records carry who asked, for which identity and resource, by which decision path, and never a token.
//
// `--audit-log=aggregate` (default): every issuance fetched upstream (cache miss) is its own record; the first refusal
// of a kind for a (caller, identity, resource) in a flush window is its own record and repeats are counted; cache hits
// are counted per (pod, identity, resource, path) and written as one record with the count at the end of each window.
// A caller gets at most 64 refusal records written at once per window: beyond, its refusals are counted per (caller,
// reason, status) without the values it chose and written at the flush (`truncated`), so one pod cannot fill the
// node's log (and rotate other pods' records away) with its own text.
// So every token served is accounted for, and the warm path pays for a few map lookups, not a log line.
// `--audit-log=all`: every request is its own record. `--audit-log=off`: none.

import type { Logger } from 'pino';
import type { AzureIdentity, PodView } from '../crds/types.js';
import type { RefusalKind } from './core/decide.js';
import { realClock } from '../common/clock.js';

export type AuditMode = 'off' | 'aggregate' | 'all';

/** How a token was decided: through a binding (AzureAssignedIdentity or managed-mode binding), or the node's identity. */
export type AuditPath = 'binding' | 'exception' | 'mic' | 'host-token';

/** Why a token request got no token: decided in core/decide.ts (docs/audit.md lists them with their statuses). */
export type { RefusalKind } from './core/decide.js';

export type CacheOutcome = 'hit' | 'miss';

/** What one request's handling learnt, filled in as it goes; recorded once the answer is sent. */
export interface AuditFacts {
  remote: string;
  resource: string;
  pod: PodView | undefined;
  identity: AzureIdentity | undefined;
  path: AuditPath | undefined;
  refusal: RefusalKind | undefined;
  cache: CacheOutcome | undefined;
  /** The client_id / msi_res_id the pod asked for (node path: which node identity). */
  requestedClientId: string | undefined;
  requestedResourceId: string | undefined;
  requestedObjectId: string | undefined;
}

export function newAuditFacts(remote: string): AuditFacts {
  return {
    remote,
    resource: '',
    pod: undefined,
    identity: undefined,
    path: undefined,
    refusal: undefined,
    cache: undefined,
    requestedClientId: undefined,
    requestedResourceId: undefined,
    requestedObjectId: undefined,
  };
}

export interface AuditTrailOptions {
  readonly mode: AuditMode;
  /** Aggregate mode: how often counted hits and repeated refusals are written (default 10 s). */
  readonly flushIntervalMs?: number;
  readonly logger: Logger;
  readonly now?: () => number;
}

export interface AuditTrail {
  readonly mode: AuditMode;
  /** The warm path served `pod` a cached token of `identity` through a binding (hot: no allocation when aggregating). */
  hit(pod: PodView, identity: AzureIdentity, resource: string, latencyMs: number): void;
  /** A request of the full path was answered with `status`. */
  answered(facts: AuditFacts, status: number, latencyMs: number): void;
  /** Writes what was counted since the last flush. */
  flush(): void;
  /** Stops the timer and flushes. */
  stop(): void;
}

/** A trail that records nothing (`--audit-log=off`, and servers built without one). */
export const NO_AUDIT: AuditTrail = {
  mode: 'off',
  hit: () => undefined,
  answered: () => undefined,
  flush: () => undefined,
  stop: () => undefined,
};

const AUDIT_MESSAGE = 'token audit';
/** Distinct keys counted per window at most; beyond it a window is flushed early (bounds memory under a flood). */
const MAX_KEYS = 16_384;
/**
 * Characters held in pending keys per window at most: a pod picks `resource` and `client_id` (up to 2048 characters
 * each), so 16,384 distinct refusals could hold ~140 MB; beyond this a window is flushed early (a few MB at most).
 */
const MAX_PENDING_CHARS = 1_000_000;
/**
 * Distinct refusal records one caller (pod uid, or source IP when no pod is identified) may have written at once per
 * window: each can carry ~4,000 characters it chose, and kubelet rotates a container's log at 10 MiB.
 */
export const MAX_IMMEDIATE_REFUSALS_PER_CALLER = 64;

export function createAuditTrail(opts: AuditTrailOptions): AuditTrail {
  if (opts.mode === 'off') return NO_AUDIT;
  const log = opts.logger;
  const now = opts.now ?? realClock.now;
  const all = opts.mode === 'all';

  // Hits, keyed without building strings: pod uid -> identity object -> resource.
  let hits = new Map<string, Map<AzureIdentity, Map<string, Counted>>>();
  let hitKeys = 0;
  // Characters of the attacker-chosen strings (resource, requested IDs) the pending keys hold.
  let pendingChars = 0;
  // Repeated refusals in this window, keyed by their record's identifying fields.
  let refusals = new Map<string, Counted>();
  // Refusal records each caller had written at once this window (reset by the window's flush, not an early one).
  let immediate = new Map<string, number>();
  // A caller's refusals past its cap, by (caller, reason, status): counted without resource or requested IDs.
  let truncated = new Map<string, Counted>();

  const timer = all ? undefined : setInterval(() => flush(), opts.flushIntervalMs ?? 10_000);
  timer?.unref();

  function hit(pod: PodView, identity: AzureIdentity, resource: string, latencyMs: number): void {
    if (all) {
      write(record({ decision: 'issued', status: 200, path: 'binding', cache: 'hit', pod, identity, resource, latencyMs }), 1);
      return;
    }
    let byIdentity = hits.get(pod.uid);
    if (byIdentity === undefined) hits.set(pod.uid, (byIdentity = new Map()));
    let byResource = byIdentity.get(identity);
    if (byResource === undefined) byIdentity.set(identity, (byResource = new Map()));
    const seen = byResource.get(resource);
    if (seen !== undefined) {
      seen.add(latencyMs);
      return;
    }
    const t = now();
    byResource.set(resource, new Counted(record({ decision: 'issued', status: 200, path: 'binding', cache: 'hit', pod, identity, resource, latencyMs: 0 }), t, latencyMs));
    pendingChars += resource.length;
    if (++hitKeys >= MAX_KEYS || pendingChars >= MAX_PENDING_CHARS) flushPending();
  }

  function answered(facts: AuditFacts, status: number, latencyMs: number): void {
    const issued = status === 200;
    const entry = record({
      decision: issued ? 'issued' : 'refused',
      status,
      path: facts.path,
      cache: facts.cache,
      pod: facts.pod,
      identity: facts.identity,
      resource: facts.resource,
      latencyMs,
      ...(issued ? {} : { reason: facts.refusal ?? refusalForStatus(status) }),
      remote: facts.remote,
      requestedClientId: facts.requestedClientId,
      requestedResourceId: facts.requestedResourceId,
      requestedObjectId: facts.requestedObjectId,
    });
    if (all || (issued && facts.cache !== 'hit')) return write(entry, 1);
    if (issued) {
      // A full-path hit (e.g. a cached token answered after a wait): counted with the warm path's.
      if (facts.pod !== undefined && facts.identity !== undefined && facts.path === 'binding') {
        return hit(facts.pod, facts.identity, facts.resource, latencyMs);
      }
      return countOrWrite(entry, latencyMs);
    }
    return countOrWrite(entry, latencyMs);
  }

  /** The first of its kind in a window is written at once; repeats are counted and written at the flush. */
  function countOrWrite(entry: AuditEntry, latencyMs: number): void {
    const key = keyOf(entry);
    const seen = refusals.get(key);
    if (seen !== undefined) {
      seen.add(latencyMs);
      return;
    }
    if (entry.decision === 'refused') {
      const caller = entry.pod?.uid ?? entry.remote ?? '';
      const written = immediate.get(caller) ?? 0;
      if (written >= MAX_IMMEDIATE_REFUSALS_PER_CALLER) return countTruncated(entry, caller, latencyMs);
      if (immediate.size >= MAX_KEYS) immediate.clear();
      immediate.set(caller, written + 1);
    }
    write(entry, 1);
    const repeat = new Counted({ ...entry, latencyMs: 0 }, now(), latencyMs);
    repeat.count = 0;
    repeat.latencySumMs = 0;
    repeat.latencyMaxMs = 0;
    refusals.set(key, repeat);
    pendingChars += key.length;
    if (refusals.size >= MAX_KEYS || pendingChars >= MAX_PENDING_CHARS) flushPending();
  }

  /** Past its cap, a caller's refusal is counted per (caller, reason, status) without the values it chose. */
  function countTruncated(entry: AuditEntry, caller: string, latencyMs: number): void {
    const key = [entry.reason ?? '', entry.status, caller].join('\u0000');
    const seen = truncated.get(key);
    if (seen !== undefined) {
      seen.add(latencyMs);
      return;
    }
    const counted: AuditEntry = {
      decision: 'refused',
      status: entry.status,
      ...(entry.reason !== undefined ? { reason: entry.reason } : {}),
      ...(entry.pod !== undefined ? { pod: entry.pod } : {}),
      ...(entry.remote !== undefined ? { remote: entry.remote } : {}),
      truncated: true,
      latencyMs: 0,
    };
    truncated.set(key, new Counted(counted, now(), latencyMs));
    if (truncated.size >= MAX_KEYS) flushPending();
  }

  /** The window's end: what was counted is written, and every caller's cap starts again. */
  function flush(): void {
    immediate = new Map();
    flushPending();
  }

  /** Writes what was counted (at the window's end, or early when the pending keys reach their bound). */
  function flushPending(): void {
    const t = now();
    const pendingHits = hits;
    const pendingRefusals = refusals;
    hits = new Map();
    hitKeys = 0;
    pendingChars = 0;
    refusals = new Map();
    const pendingTruncated = truncated;
    truncated = new Map();
    // An identity object replaced by an informer update within the window made a second entry: merged here.
    const merged = new Map<string, Counted>();
    for (const byIdentity of pendingHits.values()) {
      for (const byResource of byIdentity.values()) {
        for (const counted of byResource.values()) {
          const key = keyOf(counted.entry);
          const other = merged.get(key);
          if (other === undefined) merged.set(key, counted);
          else other.merge(counted);
        }
      }
    }
    for (const counted of merged.values()) writeCounted(counted, t);
    for (const counted of pendingRefusals.values()) if (counted.count > 0) writeCounted(counted, t);
    for (const counted of pendingTruncated.values()) writeCounted(counted, t);
  }

  function writeCounted(counted: Counted, t: number): void {
    write(
      {
        ...counted.entry,
        latencyMs: round(counted.latencySumMs / counted.count),
        latencyMaxMs: round(counted.latencyMaxMs),
        firstAt: new Date(counted.firstMs).toISOString(),
        lastAt: new Date(counted.lastMs).toISOString(),
        windowMs: t - counted.windowStartMs,
      },
      counted.count,
    );
  }

  function write(entry: AuditEntry, count: number): void {
    log.info({ ...entry, count, latencyMs: round(entry.latencyMs) }, AUDIT_MESSAGE);
  }

  class Counted {
    count = 1;
    latencySumMs: number;
    latencyMaxMs: number;
    firstMs: number;
    lastMs: number;
    readonly windowStartMs: number;
    constructor(
      readonly entry: AuditEntry,
      atMs: number,
      latencyMs: number,
    ) {
      this.latencySumMs = latencyMs;
      this.latencyMaxMs = latencyMs;
      this.firstMs = atMs;
      this.lastMs = atMs;
      this.windowStartMs = atMs;
    }
    add(latencyMs: number): void {
      if (this.count === 0) this.firstMs = now();
      this.count++;
      this.latencySumMs += latencyMs;
      if (latencyMs > this.latencyMaxMs) this.latencyMaxMs = latencyMs;
      this.lastMs = now();
    }
    merge(other: Counted): void {
      this.count += other.count;
      this.latencySumMs += other.latencySumMs;
      this.latencyMaxMs = Math.max(this.latencyMaxMs, other.latencyMaxMs);
      this.firstMs = Math.min(this.firstMs, other.firstMs);
      this.lastMs = Math.max(this.lastMs, other.lastMs);
    }
  }

  return {
    mode: opts.mode,
    hit,
    answered,
    flush,
    stop() {
      if (timer !== undefined) clearInterval(timer);
      flush();
    },
  };
}

/** One record's fields (docs/audit.md): identity by namespace/name and resource ID; the client ID as logs shorten it. */
interface AuditEntry {
  readonly decision: 'issued' | 'refused';
  readonly status: number;
  readonly reason?: RefusalKind;
  readonly path?: AuditPath;
  readonly cache?: CacheOutcome;
  readonly pod?: { readonly namespace: string; readonly name: string; readonly uid: string };
  readonly identity?: { readonly namespace: string; readonly name: string; readonly clientID: string; readonly resourceID: string; readonly type: number | null };
  /** Absent only on a truncated record. */
  readonly resource?: string;
  readonly latencyMs: number;
  readonly remote?: string;
  /** A caller's refusals past its per-window cap, counted without the resource and IDs it asked for. */
  readonly truncated?: true;
  readonly requested?: { readonly clientId?: string; readonly resourceId?: string; readonly objectId?: string };
  readonly latencyMaxMs?: number;
  readonly firstAt?: string;
  readonly lastAt?: string;
  readonly windowMs?: number;
}

function record(fields: {
  decision: 'issued' | 'refused';
  status: number;
  reason?: RefusalKind;
  path: AuditPath | undefined;
  cache: CacheOutcome | undefined;
  pod: PodView | undefined;
  identity: AzureIdentity | undefined;
  resource: string;
  latencyMs: number;
  remote?: string;
  requestedClientId?: string | undefined;
  requestedResourceId?: string | undefined;
  requestedObjectId?: string | undefined;
}): AuditEntry {
  const { pod, identity } = fields;
  const requested =
    fields.requestedClientId !== undefined || fields.requestedResourceId !== undefined || fields.requestedObjectId !== undefined
      ? {
          ...(fields.requestedClientId !== undefined ? { clientId: fields.requestedClientId } : {}),
          ...(fields.requestedResourceId !== undefined ? { resourceId: fields.requestedResourceId } : {}),
          ...(fields.requestedObjectId !== undefined ? { objectId: fields.requestedObjectId } : {}),
        }
      : undefined;
  return {
    decision: fields.decision,
    status: fields.status,
    ...(fields.reason !== undefined ? { reason: fields.reason } : {}),
    ...(fields.path !== undefined ? { path: fields.path } : {}),
    ...(fields.cache !== undefined ? { cache: fields.cache } : {}),
    ...(pod !== undefined ? { pod: { namespace: pod.namespace, name: pod.name, uid: pod.uid } } : {}),
    ...(identity !== undefined
      ? { identity: { namespace: identity.namespace, name: identity.name, clientID: identity.clientID, resourceID: identity.resourceID, type: identity.type } }
      : {}),
    resource: fields.resource,
    latencyMs: fields.latencyMs,
    ...(fields.remote !== undefined && pod === undefined ? { remote: fields.remote } : {}),
    ...(requested !== undefined ? { requested } : {}),
  };
}

function keyOf(e: AuditEntry): string {
  return [
    e.decision,
    e.status,
    e.reason ?? '',
    e.path ?? '',
    e.cache ?? '',
    e.pod?.uid ?? e.remote ?? '',
    e.identity ? `${e.identity.namespace}/${e.identity.name}` : '',
    e.resource ?? '',
    e.requested?.clientId ?? '',
    e.requested?.resourceId ?? '',
    e.requested?.objectId ?? '',
  ].join('\u0000');
}

/** A refusal no decision point named (should not happen): classified by its status. */
function refusalForStatus(status: number): RefusalKind {
  if (status === 429) return 'too-many-waiting';
  if (status === 400) return 'bad-request';
  return 'internal-error';
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
