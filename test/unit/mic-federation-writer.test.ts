// The federated identity credential writer against an in-memory ARM that behaves as Azure does on the points that
// matter: one write at a time per identity (409 otherwise, worded as Azure words it), 20 credentials at most,
// (issuer, subject) unique, 404 for a missing identity, faults and Retry-After on demand. Time is a ManualClock.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/common/clock.js';
import { FEDERATED_AUDIENCE, federatedCredentialName, serviceAccountSubject } from '../../src/crds/federation.js';
import type { DesiredCredential, DesiredIdentityCredentials } from '../../src/mic/core/federation.js';
import {
  FederatedCredentialWriter,
  type FederatedCredentialPort,
  type FederatedCredentialRecord,
  type FederatedSyncOutcome,
  type IdentityLocation,
} from '../../src/mic/federation/credentials.js';

const ISSUER = 'https://issuer.example/cluster/';
const SUB = '00000000-0000-0000-0000-000000000001';

type Op = 'list' | 'put' | 'delete';

interface Fault {
  readonly status: number;
  readonly code?: string;
  readonly message?: string;
  readonly retryAfter?: string;
}

function armError(f: Fault): Error {
  const headers = new Map<string, string>(f.retryAfter === undefined ? [] : [['retry-after', f.retryAfter]]);
  return Object.assign(new Error(f.message ?? `status ${f.status}`), {
    name: 'RestError',
    statusCode: f.status,
    ...(f.code === undefined ? {} : { code: f.code }),
    response: { status: f.status, headers: { get: (k: string) => headers.get(k.toLowerCase()) } },
  });
}

/** In-memory ARM for federatedIdentityCredentials. Calls can be held open with `hold()` to test overlap. */
class FakeArm implements FederatedCredentialPort {
  readonly identities = new Map<string, Map<string, FederatedCredentialRecord>>();
  readonly calls: string[] = [];
  readonly faults: Array<{ op: Op; fault: Fault }> = [];
  private readonly inFlight = new Map<string, number>();
  maxParallel = 0;
  /** Most calls ever in flight under one identity. */
  maxPerIdentity = 0;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;

  addIdentity(name: string, records: FederatedCredentialRecord[] = []): void {
    this.identities.set(name, new Map(records.map((r) => [r.name, r])));
  }
  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }
  release(): void {
    this.open?.();
    this.gate = undefined;
  }
  names(identity: string): string[] {
    return [...(this.identities.get(identity)?.keys() ?? [])].sort();
  }

  private async enter<T>(op: Op, id: IdentityLocation, detail: string, body: (fics: Map<string, FederatedCredentialRecord>) => T): Promise<T> {
    this.calls.push(`${op} ${id.name}${detail}`);
    const write = op !== 'list';
    const running = this.inFlight.get(id.name) ?? 0;
    this.inFlight.set(id.name, running + 1);
    this.maxParallel = Math.max(this.maxParallel, [...this.inFlight.values()].reduce((a, b) => a + b, 0));
    this.maxPerIdentity = Math.max(this.maxPerIdentity, running + 1);
    try {
      if (this.gate) await this.gate;
      if (write && running > 0) {
        throw armError({
          status: 409,
          code: 'ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity',
          message: `Too many Federated Identity Credentials are written concurrently for the managed identity '/subscriptions/${SUB}/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/${id.name}'. Concurrent Federated Identity Credentials writes under the same managed identity are not supported.`,
        });
      }
      const i = this.faults.findIndex((f) => f.op === op);
      if (i !== -1) {
        const [{ fault }] = this.faults.splice(i, 1) as [{ op: Op; fault: Fault }];
        throw armError(fault);
      }
      const fics = this.identities.get(id.name);
      if (fics === undefined) throw armError({ status: 404, code: 'ResourceNotFound', message: "The parent user-assigned identity doesn't exist." });
      return body(fics);
    } finally {
      this.inFlight.set(id.name, (this.inFlight.get(id.name) ?? 1) - 1);
    }
  }

  list(id: IdentityLocation): Promise<FederatedCredentialRecord[]> {
    return this.enter('list', id, '', (fics) => [...fics.values()]);
  }
  createOrUpdate(id: IdentityLocation, c: DesiredCredential): Promise<FederatedCredentialRecord> {
    return this.enter('put', id, ` ${c.name}`, (fics) => {
      const clash = [...fics.values()].find((r) => r.name !== c.name && r.issuer === c.issuer && r.subject === c.subject);
      if (clash) throw armError({ status: 400, code: 'BadRequest', message: 'Issuer and subject combination already exists for this Managed Identity.' });
      if (!fics.has(c.name) && fics.size >= 20) throw armError({ status: 400, code: 'BadRequest', message: 'too many federated identity credentials' });
      const rec = { name: c.name, issuer: c.issuer, subject: c.subject, audiences: [...c.audiences] };
      fics.set(c.name, rec);
      return rec;
    });
  }
  delete(id: IdentityLocation, name: string): Promise<void> {
    return this.enter('delete', id, ` ${name}`, (fics) => {
      fics.delete(name);
    });
  }
}

function cred(ns: string, sa: string, issuer = ISSUER): DesiredCredential {
  const subject = serviceAccountSubject(ns, sa);
  return { name: federatedCredentialName(issuer, subject), issuer, subject, audiences: [FEDERATED_AUDIENCE] };
}
const record = (c: DesiredCredential): FederatedCredentialRecord => ({ ...c, audiences: [...c.audiences] });

function desired(identity: string, credentials: DesiredCredential[]): DesiredIdentityCredentials {
  const resourceID = `/subscriptions/${SUB}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${identity}`;
  return { key: resourceID.toLowerCase(), resourceID, subscriptionID: SUB, resourceGroup: 'rg', name: identity, credentials, azureIdentities: [`ns/${identity}`] };
}

function world(opts: { maxThrottleWaitMs?: number; relistAfterMs?: number } = {}) {
  const arm = new FakeArm();
  const clock = new ManualClock(1_000_000);
  const writer = new FederatedCredentialWriter({
    port: arm,
    clock,
    issuer: ISSUER,
    backoff: { initialMs: 1_000, maxMs: 8_000, jitter: 0 },
    ...opts,
  });
  return { arm, clock, writer };
}

/** Lets a sync run while the clock stands still, then returns its outcome (or 'pending'). */
async function settled<T>(p: Promise<T>, clock: ManualClock): Promise<T | 'pending'> {
  let out: T | 'pending' = 'pending';
  void p.then((v) => (out = v));
  await clock.advance(0);
  return out;
}

function synced(o: FederatedSyncOutcome | 'pending'): Extract<FederatedSyncOutcome, { kind: 'synced' }> {
  if (o === 'pending' || o.kind !== 'synced') throw new Error(`expected synced, got ${JSON.stringify(o)}`);
  return o;
}

describe('FederatedCredentialWriter', () => {
  it('creates the missing credential and reports it ready with when it was written', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    const web = cred('team-a', 'web');
    const out = synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(out.created).toEqual([web.name]);
    expect(out.ready).toEqual([{ subject: web.subject, name: web.name, foreign: false, writtenAtMs: 1_000_000 }]);
    expect(arm.calls).toEqual(['list id1', `put id1 ${web.name}`]);
    expect(arm.identities.get('id1')?.get(web.name)).toEqual(record(web));
  });

  it('makes no ARM call when the credential is present, and re-lists only once the copy is old', async () => {
    const { arm, clock, writer } = world({ relistAfterMs: 60_000 });
    const web = cred('team-a', 'web');
    arm.addIdentity('id1', [record(web)]);
    const first = synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(first).toMatchObject({ created: [], updated: [], deleted: [], ready: [{ name: web.name, foreign: false }] });
    expect(first.ready[0]).not.toHaveProperty('writtenAtMs');
    synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(arm.calls).toEqual(['list id1']);
    await clock.advance(60_000);
    synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(arm.calls).toEqual(['list id1', 'list id1']);
  });

  it('deletes its own credentials that no bound pod uses any more', async () => {
    const { arm, clock, writer } = world();
    const web = cred('team-a', 'web');
    const gone = cred('team-a', 'old');
    arm.addIdentity('id1', [record(web), record(gone)]);
    const out = synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(out.deleted).toEqual([gone.name]);
    expect(arm.names('id1')).toEqual([web.name]);
  });

  it('never updates or deletes a credential it did not make', async () => {
    const { arm, clock, writer } = world();
    const other = 'https://other-cluster.example/';
    const foreign: FederatedCredentialRecord[] = [
      { name: 'github-deploy', issuer: 'https://token.actions.githubusercontent.com', subject: 'repo:org/app:ref:refs/heads/main', audiences: [FEDERATED_AUDIENCE] },
      record(cred('team-a', 'web', other)), // another cluster's MIC, sharing the identity
      { name: 'aadpodid-by-hand', issuer: ISSUER, subject: serviceAccountSubject('team-a', 'x'), audiences: ['custom'] },
    ];
    arm.addIdentity('id1', foreign);
    const out = synced(await settled(writer.sync(desired('id1', [])), clock));
    expect(out).toMatchObject({ created: [], updated: [], deleted: [], failed: [] });
    expect(arm.calls).toEqual(['list id1']);
    expect(arm.names('id1')).toEqual(foreign.map((f) => f.name).sort());
  });

  it("counts a user's credential with the same issuer, subject and audience as present", async () => {
    const { arm, clock, writer } = world();
    const web = cred('team-a', 'web');
    arm.addIdentity('id1', [{ ...record(web), name: 'made-by-terraform' }]);
    const out = synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(out.ready).toEqual([{ subject: web.subject, name: 'made-by-terraform', foreign: true }]);
    expect(out.created).toEqual([]);
  });

  it("skips, with a reason, a subject a foreign credential holds with another audience", async () => {
    const { arm, clock, writer } = world();
    const web = cred('team-a', 'web');
    arm.addIdentity('id1', [{ ...record(web), name: 'hand-made', audiences: ['api://other'] }]);
    const out = synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(out.skipped).toEqual([expect.objectContaining({ subject: web.subject, code: 'ForeignCredentialConflict' })]);
    expect(arm.calls).toEqual(['list id1']);
  });

  it('refuses the 21st credential with a reason and no ARM call, after using the slots its deletes free', async () => {
    const { arm, clock, writer } = world();
    const foreign = Array.from({ length: 18 }, (_, i) => ({ name: `user-${i}`, issuer: 'https://x.example/', subject: `s${i}`, audiences: [FEDERATED_AUDIENCE] }));
    const kept = cred('ns', 'kept');
    const unused = cred('ns', 'unused');
    arm.addIdentity('id1', [...foreign, record(kept), record(unused)]);
    const a = cred('ns', 'a-new');
    const b = cred('ns', 'b-new');
    const out = synced(await settled(writer.sync(desired('id1', [a, b, kept])), clock));
    expect(out.deleted).toEqual([unused.name]);
    expect(out.created).toEqual([a.name]);
    expect(out.skipped).toEqual([
      {
        subject: b.subject,
        name: b.name,
        code: 'FederatedCredentialLimit',
        reason:
          `identity id1 already has 20 federated identity credentials (Azure's limit; 18 not made by MIC), so service account ` +
          `${b.subject} gets none: use another identity for it, or remove the bindings of service accounts that no longer need this one`,
      },
    ]);
    expect(arm.calls).toEqual(['list id1', `delete id1 ${unused.name}`, `put id1 ${a.name}`]);
    expect(out.ready.map((r) => r.subject)).toEqual([a.subject, kept.subject]);
  });

  it('retries a 409 concurrent-write refusal after backoff', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    arm.faults.push({ op: 'put', fault: { status: 409, code: 'ConcurrentFederatedIdentityCredentialsWritesForSingleManagedIdentity' } });
    const web = cred('ns', 'web');
    const p = writer.sync(desired('id1', [web]));
    expect(await settled(p, clock)).toBe('pending');
    expect(arm.calls).toEqual(['list id1', `put id1 ${web.name}`]);
    await clock.advance(999);
    expect(arm.calls).toHaveLength(2);
    await clock.advance(1);
    expect(synced(await p).created).toEqual([web.name]);
    expect(arm.calls).toEqual(['list id1', `put id1 ${web.name}`, `put id1 ${web.name}`]);
  });

  it('waits the Retry-After ARM sends with a 429 before trying again', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    arm.faults.push({ op: 'list', fault: { status: 429, code: 'TooManyRequests', retryAfter: '7' } });
    const p = writer.sync(desired('id1', [cred('ns', 'web')]));
    await clock.advance(6_999);
    expect(arm.calls).toEqual(['list id1']);
    await clock.advance(1);
    expect(synced(await p).created).toHaveLength(1);
    expect(arm.calls[1]).toBe('list id1');
  });

  it('gives a Retry-After longer than it waits in-line back to the caller', async () => {
    const { arm, clock, writer } = world({ maxThrottleWaitMs: 10_000 });
    arm.addIdentity('id1');
    arm.faults.push({ op: 'list', fault: { status: 429, retryAfter: '120' } });
    const out = await settled(writer.sync(desired('id1', [cred('ns', 'web')])), clock);
    expect(out).toMatchObject({ kind: 'retry', retryAfterMs: 120_000 });
    expect(clock.pendingSleeps()).toBe(0);
  });

  it('gives up after its attempts on 5xx and says when to come back', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    for (let i = 0; i < 6; i++) arm.faults.push({ op: 'list', fault: { status: 503 } });
    const p = writer.sync(desired('id1', []));
    await clock.advance(60_000);
    expect(await p).toMatchObject({ kind: 'retry' });
    expect(arm.calls.filter((c) => c === 'list id1')).toHaveLength(6);
  });

  it('reports a deleted identity (404) as gone', async () => {
    const { clock, writer } = world();
    const out = await settled(writer.sync(desired('missing', [cred('ns', 'web')])), clock);
    expect(out).toMatchObject({ kind: 'gone' });
    expect((out as { reason: string }).reason).toContain("The parent user-assigned identity doesn't exist.");
  });

  it('re-lists once when Azure says the issuer and subject already exist, and counts that credential', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    const web = cred('ns', 'web');
    await settled(writer.sync(desired('id1', [])), clock); // the writer now holds an empty copy
    arm.identities.get('id1')?.set('someone-else', { ...record(web), name: 'someone-else' });
    const out = synced(await settled(writer.sync(desired('id1', [web])), clock));
    expect(out.ready).toEqual([{ subject: web.subject, name: 'someone-else', foreign: true }]);
    expect(arm.calls).toEqual(['list id1', `put id1 ${web.name}`, 'list id1']);
  });

  it('reports a write ARM refuses for good and still applies the rest', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    arm.faults.push({ op: 'put', fault: { status: 403, code: 'AuthorizationFailed', message: 'no write permission' } });
    const a = cred('ns', 'a');
    const b = cred('ns', 'b');
    const out = synced(await settled(writer.sync(desired('id1', [a, b])), clock));
    expect(out.failed).toEqual([{ name: a.name, subject: a.subject, operation: 'create', status: 403, reason: 'no write permission' }]);
    expect(out.created).toEqual([b.name]);
    expect(out.ready.map((r) => r.name)).toEqual([b.name]);
  });

  it('writes one call at a time under an identity, and identities in parallel', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    arm.addIdentity('id2');
    arm.hold();
    const p1 = writer.sync(desired('id1', [cred('ns', 'a'), cred('ns', 'b')]));
    const p2 = writer.sync(desired('id2', [cred('ns', 'a')]));
    const p3 = writer.sync(desired('id1', [cred('ns', 'a'), cred('ns', 'b'), cred('ns', 'c')]));
    await clock.advance(0);
    expect(arm.maxParallel).toBe(2); // id1 and id2 both listing
    arm.release();
    const [o1, o2, o3] = await Promise.all([p1, p2, p3]);
    expect(synced(o1).created).toHaveLength(3);
    expect(o3).toBe(o1);
    expect(synced(o2).created).toHaveLength(1);
    expect(arm.maxPerIdentity).toBe(1);
    expect(clock.pendingSleeps()).toBe(0); // no 409 was ever met, so no backoff wait
  });

  it('coalesces: the newest desired set wins, and every waiter gets the outcome of the run that covered it', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    arm.hold();
    const a = cred('ns', 'a');
    const b = cred('ns', 'b');
    const c = cred('ns', 'c');
    const first = writer.sync(desired('id1', [a]));
    await clock.advance(0); // first run is listing (held)
    const second = writer.sync(desired('id1', [a, b]));
    const third = writer.sync(desired('id1', [a, c]));
    const same = writer.sync(desired('id1', [a, c]));
    arm.release();
    const outs = await Promise.all([first, second, third, same]);
    // The first run re-planned before its first write, so b was never written.
    expect(arm.calls).toEqual(['list id1', `put id1 ${a.name}`, `put id1 ${c.name}`]);
    expect(arm.names('id1')).toEqual([a.name, c.name].sort());
    for (const o of outs) expect(synced(o).ready.map((r) => r.name)).toEqual([a.name, c.name]);
    expect(outs[1]).toBe(outs[2]);
  });

  it('joins a run under way for the same set instead of starting another', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    arm.hold();
    const a = cred('ns', 'a');
    const p1 = writer.sync(desired('id1', [a]));
    await clock.advance(0);
    const p2 = writer.sync(desired('id1', [a]));
    arm.release();
    const [o1, o2] = await Promise.all([p1, p2]);
    expect(o1).toBe(o2);
    expect(arm.calls).toEqual(['list id1', `put id1 ${a.name}`]);
  });

  it('ends waits with cancelled on stop (lost leadership), and cancels later syncs at once', async () => {
    const { arm, clock, writer } = world();
    arm.addIdentity('id1');
    arm.faults.push({ op: 'list', fault: { status: 409 } });
    const p = writer.sync(desired('id1', []));
    await clock.advance(0);
    expect(clock.pendingSleeps()).toBe(1);
    writer.stop();
    expect(await p).toMatchObject({ kind: 'cancelled' });
    expect(await writer.sync(desired('id1', []))).toMatchObject({ kind: 'cancelled' });
    expect(clock.pendingSleeps()).toBe(0);
  });
});

describe('FederatedCredentialWriter.reconcile', () => {
  it('empties of its own credentials an identity nothing wants any more, then forgets it', async () => {
    const { arm, clock, writer } = world();
    const foreign: FederatedCredentialRecord = { name: 'user-made', issuer: 'https://x.example/', subject: 's', audiences: [FEDERATED_AUDIENCE] };
    arm.addIdentity('id1', [foreign]);
    arm.addIdentity('id2');
    const a = cred('ns', 'a');
    let outs = await settled(writer.reconcile([desired('id1', [a]), desired('id2', [a])]), clock);
    expect(outs).not.toBe('pending');
    expect(arm.names('id1')).toEqual([a.name, 'user-made'].sort());

    // id1's AzureIdentity went back to Attached (or was deleted): only id2 is wanted now.
    outs = await settled(writer.reconcile([desired('id2', [a])]), clock);
    expect(outs === 'pending' ? [] : outs.map((o) => [o.key.split('/').at(-1), o.kind])).toEqual([['id2', 'synced'], ['id1', 'synced']]);
    expect(arm.names('id1')).toEqual(['user-made']);

    arm.calls.length = 0;
    await settled(writer.reconcile([desired('id2', [a])]), clock);
    expect(arm.calls).toEqual([]); // id1 forgotten, id2 unchanged and known
  });
});
