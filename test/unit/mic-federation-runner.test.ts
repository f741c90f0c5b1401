// FederationRunner: the credential writer as MIC's controller drives it. Its outcomes become the plan's
// FederationState, a change asks for a cycle (as an ArmWorker's settle does), a Retry-After asks for one after the
// delay, and lost leadership stops the writer and forgets what was known. Time is a ManualClock.
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/common/clock.js';
import { serviceAccountSubject } from '../../src/crds/federation.js';
import type { AzureIdentity } from '../../src/crds/types.js';
import { desiredFederatedCredentials } from '../../src/mic/core/federation.js';
import { federationKey } from '../../src/mic/core/index.js';
import type { FederatedCredentialPort, FederatedCredentialRecord } from '../../src/mic/federation/credentials.js';
import { FederationRunner } from '../../src/mic/federation/runner.js';
import { identity, rid } from './mic-core.builders.js';

const ISSUER = 'https://issuer.example/cluster/';
const fed: AzureIdentity = { ...identity('team-a', 'fed'), mode: 'Federated' };
const web = serviceAccountSubject('team-a', 'web');

function throttled(seconds: number): Error {
  return Object.assign(new Error('Too many requests'), {
    name: 'RestError',
    statusCode: 429,
    code: 'TooManyRequests',
    response: { status: 429, headers: { get: (k: string) => (k.toLowerCase() === 'retry-after' ? String(seconds) : undefined) } },
  });
}

class FakePort implements FederatedCredentialPort {
  readonly stored = new Map<string, FederatedCredentialRecord>();
  readonly calls: string[] = [];
  throttleNextPut: number | undefined;
  async list(): Promise<FederatedCredentialRecord[]> {
    this.calls.push('list');
    return [...this.stored.values()];
  }
  async createOrUpdate(_id: unknown, c: FederatedCredentialRecord): Promise<FederatedCredentialRecord> {
    this.calls.push(`put ${c.subject}`);
    if (this.throttleNextPut !== undefined) {
      const s = this.throttleNextPut;
      this.throttleNextPut = undefined;
      throw throttled(s);
    }
    const rec = { name: c.name, issuer: c.issuer, subject: c.subject, audiences: [...c.audiences] };
    this.stored.set(c.name, rec);
    return rec;
  }
  async delete(_id: unknown, name: string): Promise<void> {
    this.calls.push(`delete ${name}`);
    this.stored.delete(name);
  }
}

const desired = (...sas: string[]) => desiredFederatedCredentials(ISSUER, [fed], sas.map((sa) => ({ identity: fed, namespace: 'team-a', serviceAccount: sa })));

function runner(port: FakePort, clock: ManualClock): FederationRunner {
  return new FederationRunner({ port, clock, issuer: ISSUER, log: pino({ level: 'silent' }), writer: { maxThrottleWaitMs: 1_000 } });
}

describe('FederationRunner', () => {
  it('reports a written credential as ready and asks for one cycle; the same set again costs no ARM call', async () => {
    const port = new FakePort();
    const clock = new ManualClock();
    const r = runner(port, clock);
    let cycles = 0;
    r.start(() => cycles++);
    r.want(desired('web'));
    await r.idle();
    expect([...(r.state().ready.get(federationKey(rid('fed'))) ?? [])]).toEqual([web]);
    expect(cycles).toBe(1);
    const calls = port.calls.length;
    r.want(desired('web'));
    await r.idle();
    expect(port.calls.length).toBe(calls);
    expect(cycles).toBe(1);
  });

  it('a Retry-After longer than the writer waits in-line asks for a cycle after it, and that cycle writes again', async () => {
    const port = new FakePort();
    port.throttleNextPut = 30;
    const clock = new ManualClock();
    const r = runner(port, clock);
    let cycles = 0;
    r.start(() => cycles++);
    r.want(desired('web'));
    await r.idle();
    expect(r.state().ready.get(federationKey(rid('fed')))).toBeUndefined();
    expect(cycles).toBe(0);
    await clock.advance(29_000);
    expect(cycles).toBe(0);
    await clock.advance(1_000);
    expect(cycles).toBe(1);
    // The cycle hands over the same set: it is not a no-op, since it did not apply.
    r.want(desired('web'));
    await r.idle();
    expect([...(r.state().ready.get(federationKey(rid('fed'))) ?? [])]).toEqual([web]);
    expect(port.calls.filter((c) => c === `put ${web}`)).toHaveLength(2);
  });

  it('lost leadership: no cycle is asked for after stop(), what was known is forgotten, and wants are ignored', async () => {
    const port = new FakePort();
    port.throttleNextPut = 30;
    const clock = new ManualClock();
    const r = runner(port, clock);
    let cycles = 0;
    r.start(() => cycles++);
    r.want(desired('web'));
    await r.idle();
    r.stop();
    await clock.advance(60_000);
    expect(cycles).toBe(0);
    const calls = port.calls.length;
    r.want(desired('web'));
    await r.idle();
    expect(port.calls.length).toBe(calls);
    expect(r.state().ready.size).toBe(0);
    // A new term writes afresh.
    r.start(() => cycles++);
    r.want(desired('web'));
    await r.idle();
    expect(cycles).toBe(1);
    expect([...(r.state().ready.get(federationKey(rid('fed'))) ?? [])]).toEqual([web]);
  });

  it('a credential no pod uses any more is deleted, and its subject leaves the state', async () => {
    const port = new FakePort();
    const clock = new ManualClock();
    const r = runner(port, clock);
    r.start(() => undefined);
    r.want(desired('web', 'batch'));
    await r.idle();
    expect(port.stored.size).toBe(2);
    r.want(desired('web'));
    await r.idle();
    expect([...port.stored.values()].map((c) => c.subject)).toEqual([web]);
    expect([...(r.state().ready.get(federationKey(rid('fed'))) ?? [])]).toEqual([web]);
  });
});
