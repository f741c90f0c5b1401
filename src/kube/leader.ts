// Leader election as client-go's leaderelection, over one or more resource locks (resourcelock.ts): acquire or take
// over an expired record, renew every retryPeriod, give up when renewals fail for renewDeadline, release on stop
// so that another replica takes over at once.
//
// With several locks (MIC: the original's Endpoints and our Lease, as client-go's EndpointsLeases multi-lock) this
// replica leads only while it holds all of them, and never writes any while another holder's record on any of them
// is live. Locks are written in order, each optimistic on what was read, so two candidates never both get past the
// first one. A record is live while it keeps changing (client-go's rule: for leaseDurationSeconds after this replica
// last saw it change, which does not depend on the other side's clock) or while its renewTime plus
// leaseDurationSeconds is still ahead.
import { setMaxListeners } from 'node:events';
import { realClock, sleep } from '../common/clock.js';
import { describeError, isAlreadyExists, isConflict } from './errors.js';
import { EndpointsLock, LeaseLock, type EndpointsClient, type LeaderElectionRecord, type LeaseClient, type ObservedRecord, type ResourceLock } from './resourcelock.js';
import { silentLogger, type Logger } from '../common/log.js';

/** Listeners the leadership signal may carry before Node warns of a leak. */
const LEADING_SIGNAL_LISTENERS = 512;

export { parseTime, type LeaseClient, type EndpointsClient } from './resourcelock.js';

export interface LeaderElectorOptions {
  /** The Lease lock (coordination.k8s.io/v1). */
  readonly client?: LeaseClient;
  /** Also hold an Endpoints lock of the same namespace/name, written before the Lease (client-go's EndpointsLeases). */
  readonly endpoints?: EndpointsClient;
  /** Explicit locks, in write order (instead of `client`/`endpoints`). */
  readonly locks?: readonly ResourceLock[];
  readonly namespace: string;
  readonly name: string;
  /** Unique per replica, e.g. the pod name. */
  readonly identity: string;
  /** How long a lease is valid after its last renewal (default 15 s). Written to the record in whole seconds. */
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
  readonly #o: Required<Pick<LeaderElectorOptions, 'leaseDurationMs' | 'renewDeadlineMs' | 'retryPeriodMs' | 'releaseOnStop'>> & LeaderElectorOptions;
  readonly #locks: readonly ResourceLock[];
  /** Per lock: the record last read and when this replica saw it change. */
  readonly #seen: ({ raw: string; at: number } | undefined)[];
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
    const locks: ResourceLock[] = [];
    if (opts.locks !== undefined) locks.push(...opts.locks);
    else {
      if (opts.endpoints !== undefined) locks.push(new EndpointsLock(opts.endpoints, opts.namespace, opts.name));
      if (opts.client !== undefined) locks.push(new LeaseLock(opts.client, opts.namespace, opts.name));
    }
    if (locks.length === 0) throw new Error('leader election needs a lock (a Lease client, an Endpoints client or explicit locks)');
    this.#locks = locks;
    this.#seen = locks.map(() => undefined);
    this.#log = (opts.log ?? silentLogger()).child({
      component: 'leader-election',
      lock: locks.map((l) => l.description).join(' + '),
      identity: opts.identity,
    });
    this.#now = opts.now ?? realClock.now;
    const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = this.#o;
    if (!opts.identity) throw new Error('leader election needs a non-empty identity');
    if (!(leaseDurationMs > renewDeadlineMs)) throw new Error('leaseDuration must be greater than renewDeadline');
    if (!(renewDeadlineMs > retryPeriodMs * 1.2)) throw new Error('renewDeadline must be greater than 1.2 * retryPeriod');
  }

  get isLeader(): boolean {
    return this.#leading !== undefined;
  }

  /** The holder identity last seen on the locks ('' when none). */
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
    const { identity } = this.#o;
    const now = this.#now();
    const read: (ObservedRecord | null)[] = [];
    for (const lock of this.#locks) {
      try {
        read.push(await lock.get());
      } catch (err) {
        this.#log.warn({ err: describeError(err), lock: lock.description }, 'cannot read the leader election record');
        return 'error';
      }
    }
    read.forEach((r, i) => {
      if (r !== null && this.#seen[i]?.raw !== r.raw) this.#seen[i] = { raw: r.raw, at: now };
    });
    for (const [i, r] of read.entries()) {
      const holder = r?.record.holderIdentity ?? '';
      if (r === null || holder === '' || holder === identity) continue;
      if (this.#live(r.record, this.#seen[i]?.at ?? now, now)) {
        this.#observe(holder);
        if (this.isLeader) this.#log.warn({ holder, lock: this.#locks[i]?.description }, 'another holder took the lock');
        return 'follower';
      }
    }

    let acquired = false;
    for (const [i, lock] of this.#locks.entries()) {
      const prev = read[i]?.record;
      const heldByMe = prev?.holderIdentity === identity;
      const record: LeaderElectionRecord = {
        holderIdentity: identity,
        leaseDurationSeconds: this.#leaseSeconds(),
        acquireTime: heldByMe ? (prev?.acquireTime ?? now) : now,
        renewTime: now,
        leaderTransitions: prev === undefined ? 0 : heldByMe ? prev.leaderTransitions : prev.leaderTransitions + 1,
      };
      try {
        if (prev === undefined) await lock.create(record);
        else await lock.update(record);
      } catch (err) {
        // 409: someone wrote the lock since we read it; the next attempt re-reads.
        if (isConflict(err) || isAlreadyExists(err)) this.#log.debug({ lock: lock.description }, 'lock changed under us (409)');
        else this.#log.warn({ err: describeError(err), lock: lock.description }, 'cannot write the leader election record');
        return 'error';
      }
      if (!heldByMe) {
        acquired = true;
        this.#log.info({ previousHolder: prev?.holderIdentity || undefined, lock: lock.description }, 'acquired lock');
      }
    }
    if (acquired) this.#log.debug('holding every lock');
    this.#observe(identity);
    return 'leader';
  }

  // Live: changed within its duration of our seeing it, or renewed within its duration (a renewTime further ahead
  // than one duration is a broken clock, and counts only through the first rule).
  #live(r: LeaderElectionRecord, observedAt: number, now: number): boolean {
    const durationMs = (r.leaseDurationSeconds > 0 ? r.leaseDurationSeconds : this.#leaseSeconds()) * 1000;
    if (observedAt + durationMs > now) return true;
    const renewed = r.renewTime;
    return renewed !== undefined && renewed + durationMs > now && renewed <= now + durationMs;
  }

  #leaseSeconds(): number {
    return Math.max(1, Math.ceil(this.#o.leaseDurationMs / 1000));
  }

  #startLeading(): void {
    const ac = new AbortController();
    // Every write, wait and request made while leading listens on this one signal (MIC: 24 writes, 32 requests and
    // their waits at once), so Node's default of 10 listeners warned of a leak that is not one; a leak of one listener
    // per write still passes this bound after 512 writes.
    setMaxListeners(LEADING_SIGNAL_LISTENERS, ac.signal);
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

  // Called after stop: stop acting first, then hand every lock over (empty holder, expiring at once).
  async #release(): Promise<void> {
    const wasLeading = this.#leading !== undefined;
    this.#stopLeading();
    if (!wasLeading) return;
    const { identity } = this.#o;
    const deadline = this.#now() + this.#o.renewDeadlineMs;
    for (const lock of this.#locks) {
      try {
        const got = await withTimeout(lock.get(), Math.max(0, deadline - this.#now()), undefined);
        if (!got || got.record.holderIdentity !== identity) continue;
        const now = this.#now();
        const record: LeaderElectionRecord = { ...got.record, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now };
        await withTimeout(lock.update(record), Math.max(0, deadline - this.#now()), undefined);
        this.#log.info({ lock: lock.description }, 'released lock');
      } catch (err) {
        this.#log.warn({ err: describeError(err), lock: lock.description }, 'cannot release the lock; it will expire');
      }
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
