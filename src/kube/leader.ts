// Lease-based leader election on coordination.k8s.io/v1 (client-node has no helper). Semantics follow client-go's
// leaderelection: acquire or take over an expired lease, renew every retryPeriod, give up when renewals fail for
// renewDeadline, and release on stop so that another replica takes over at once.
import { V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import { sleep } from './backoff.js';
import { describeError, isAlreadyExists, isConflict, isNotFound } from './errors.js';
import { silentLogger, type Logger } from '../common/log.js';

/** The part of `CoordinationV1Api` used here (a `CoordinationV1Api` instance satisfies it). */
export interface LeaseClient {
  readNamespacedLease(param: { name: string; namespace: string }): Promise<V1Lease>;
  createNamespacedLease(param: { namespace: string; body: V1Lease }): Promise<V1Lease>;
  replaceNamespacedLease(param: { name: string; namespace: string; body: V1Lease }): Promise<V1Lease>;
}

export interface LeaderElectorOptions {
  readonly client: LeaseClient;
  readonly namespace: string;
  readonly name: string;
  /** Unique per replica, e.g. the pod name. */
  readonly identity: string;
  /** How long a lease is valid after its last renewal (default 15 s). Written to the Lease in whole seconds. */
  readonly leaseDurationMs?: number;
  /** The leader gives up when it could not renew for this long (default 10 s). */
  readonly renewDeadlineMs?: number;
  /** Interval between acquire/renew attempts (default 2 s). */
  readonly retryPeriodMs?: number;
  /** Hand the lease back on stop() (default true). */
  readonly releaseOnStop?: boolean;
  /** Called when this replica becomes leader; `signal` aborts when it stops leading. */
  readonly onStartedLeading: (signal: AbortSignal) => void | Promise<void>;
  /** Called as soon as this replica is no longer leader (lost, expired or stopping). */
  readonly onStoppedLeading: () => void;
  /** Called when the observed holder changes (including to this replica). */
  readonly onNewLeader?: (identity: string) => void;
  readonly log?: Logger;
  /** Injected for tests. */
  readonly now?: () => number;
}

type Attempt = 'leader' | 'follower' | 'error';

export class LeaderElector {
  readonly #o: Required<Omit<LeaderElectorOptions, 'onNewLeader' | 'log' | 'now'>> & Pick<LeaderElectorOptions, 'onNewLeader'>;
  readonly #log: Logger;
  readonly #now: () => number;
  #abort: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #leading: AbortController | undefined;
  #observedHolder = '';

  constructor(opts: LeaderElectorOptions) {
    this.#o = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      releaseOnStop: true,
      ...opts,
    };
    this.#log = (opts.log ?? silentLogger()).child({ component: 'leader-election', lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
    this.#now = opts.now ?? Date.now;
    const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = this.#o;
    if (!opts.identity) throw new Error('leader election needs a non-empty identity');
    if (!(leaseDurationMs > renewDeadlineMs)) throw new Error('leaseDuration must be greater than renewDeadline');
    if (!(renewDeadlineMs > retryPeriodMs * 1.2)) throw new Error('renewDeadline must be greater than 1.2 * retryPeriod');
  }

  get isLeader(): boolean {
    return this.#leading !== undefined;
  }

  /** The holder identity last seen on the Lease ('' when none). */
  get observedLeader(): string {
    return this.#observedHolder;
  }

  start(): void {
    if (this.#loop) return;
    const abort = new AbortController();
    this.#abort = abort;
    this.#loop = this.#run(abort.signal).catch((err: unknown) => {
      this.#log.error({ err }, 'leader election loop failed');
    });
  }

  /** Stops competing; if leading, calls onStoppedLeading and then releases the lease. */
  async stop(): Promise<void> {
    this.#abort?.abort();
    await this.#loop;
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.#acquire(signal))) break;
      this.#startLeading();
      await this.#renewUntilLost(signal);
      if (signal.aborted) break;
      this.#stopLeading();
    }
    if (this.#o.releaseOnStop) await this.#release();
    else this.#stopLeading();
  }

  // Tries every retryPeriod (jittered) until this replica holds the lease; false if stopped first.
  async #acquire(signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted) {
      if ((await this.#tryAcquireOrRenew()) === 'leader') return true;
      const delay = this.#o.retryPeriodMs * (1 + 0.2 * Math.random());
      if (!(await sleep(delay, signal))) return false;
    }
    return false;
  }

  async #renewUntilLost(signal: AbortSignal): Promise<void> {
    let lastRenew = this.#now();
    while (!signal.aborted) {
      if (!(await sleep(this.#o.retryPeriodMs, signal))) return;
      const deadline = lastRenew + this.#o.renewDeadlineMs;
      const result = await withTimeout(this.#tryAcquireOrRenew(), Math.max(0, deadline - this.#now()), 'error' as const);
      if (signal.aborted) return;
      if (result === 'leader') {
        lastRenew = this.#now();
        continue;
      }
      if (result === 'follower') {
        this.#log.warn({ holder: this.#observedHolder }, 'lease taken by another replica');
        return;
      }
      if (this.#now() >= deadline) {
        this.#log.error({ renewDeadlineMs: this.#o.renewDeadlineMs }, 'could not renew the lease before the deadline');
        return;
      }
    }
  }

  async #tryAcquireOrRenew(): Promise<Attempt> {
    const { client, name, namespace, identity } = this.#o;
    const now = this.#now();
    let lease: V1Lease;
    try {
      lease = await client.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!isNotFound(err)) {
        this.#log.warn({ err: describeError(err) }, 'cannot read lease');
        return 'error';
      }
      try {
        await client.createNamespacedLease({ namespace, body: this.#leaseBody(undefined, now, now, 0) });
        this.#observe(identity);
        return 'leader';
      } catch (createErr) {
        if (isAlreadyExists(createErr) || isConflict(createErr)) return 'follower';
        this.#log.warn({ err: describeError(createErr) }, 'cannot create lease');
        return 'error';
      }
    }

    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    this.#observe(holder);
    const heldByMe = holder === identity;
    const durationMs = (spec.leaseDurationSeconds ?? this.#leaseSeconds()) * 1000;
    const renewedAt = parseTime(spec.renewTime) ?? 0;
    if (!heldByMe && holder !== '' && renewedAt + durationMs > now) return 'follower';

    const transitions = spec.leaseTransitions ?? 0;
    const acquiredAt = heldByMe ? (parseTime(spec.acquireTime) ?? now) : now;
    const body = this.#leaseBody(lease, acquiredAt, now, heldByMe ? transitions : transitions + 1);
    try {
      await client.replaceNamespacedLease({ name, namespace, body });
    } catch (err) {
      // 409: someone wrote the lease since we read it; the next attempt re-reads.
      if (isConflict(err)) this.#log.debug('lease changed under us (409)');
      else this.#log.warn({ err: describeError(err) }, 'cannot update lease');
      return 'error';
    }
    if (!heldByMe) this.#log.info({ previousHolder: holder || undefined }, 'acquired lease');
    this.#observe(identity);
    return 'leader';
  }

  #leaseBody(current: V1Lease | undefined, acquiredAt: number, renewedAt: number, transitions: number): V1Lease {
    const { name, namespace, identity } = this.#o;
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      // Keep labels/annotations and the resourceVersion (optimistic concurrency) of what we read.
      metadata: current?.metadata ? { ...current.metadata, name, namespace } : { name, namespace },
      spec: {
        ...current?.spec,
        holderIdentity: identity,
        leaseDurationSeconds: this.#leaseSeconds(),
        // MicroTime serialises with 6 fraction digits, as the API server's RFC3339Micro expects.
        acquireTime: new V1MicroTime(acquiredAt),
        renewTime: new V1MicroTime(renewedAt),
        leaseTransitions: transitions,
      },
    };
  }

  #leaseSeconds(): number {
    return Math.max(1, Math.ceil(this.#o.leaseDurationMs / 1000));
  }

  #startLeading(): void {
    const ac = new AbortController();
    this.#leading = ac;
    this.#log.info('started leading');
    try {
      const r = this.#o.onStartedLeading(ac.signal);
      if (r instanceof Promise) r.catch((err: unknown) => this.#log.error({ err }, 'onStartedLeading failed'));
    } catch (err) {
      this.#log.error({ err }, 'onStartedLeading failed');
    }
  }

  #stopLeading(): void {
    const ac = this.#leading;
    if (!ac) return;
    this.#leading = undefined;
    ac.abort();
    this.#log.info('stopped leading');
    try {
      this.#o.onStoppedLeading();
    } catch (err) {
      this.#log.error({ err }, 'onStoppedLeading failed');
    }
  }

  // Called after stop: stop acting first, then hand the lease over (empty holder, expiring at once).
  async #release(): Promise<void> {
    const wasLeading = this.#leading !== undefined;
    this.#stopLeading();
    if (!wasLeading) return;
    const { client, name, namespace, identity } = this.#o;
    try {
      const lease = await withTimeout(client.readNamespacedLease({ name, namespace }), this.#o.renewDeadlineMs, undefined);
      if (!lease || lease.spec?.holderIdentity !== identity) return;
      const now = this.#now();
      const body: V1Lease = {
        ...lease,
        spec: {
          ...lease.spec,
          holderIdentity: '',
          leaseDurationSeconds: 1,
          acquireTime: new V1MicroTime(now),
          renewTime: new V1MicroTime(now),
        },
      };
      await withTimeout(client.replaceNamespacedLease({ name, namespace, body }), this.#o.renewDeadlineMs, undefined);
      this.#log.info('released lease');
    } catch (err) {
      this.#log.warn({ err: describeError(err) }, 'cannot release lease; it will expire');
    }
  }

  #observe(holder: string): void {
    if (holder === this.#observedHolder) return;
    this.#observedHolder = holder;
    if (holder === '') return;
    try {
      this.#o.onNewLeader?.(holder);
    } catch (err) {
      this.#log.error({ err }, 'onNewLeader failed');
    }
  }
}

/** Reads a (Micro)Time field that client-node may hand back as a string (MicroTime is not deserialised) or a Date. */
export function parseTime(v: unknown): number | undefined {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? undefined : v.getTime();
  if (typeof v === 'string' && v !== '') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

// Resolves to `fallback` if `p` takes longer than `ms`; a late rejection of `p` is swallowed (it is logged by callers).
function withTimeout<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(fallback), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
