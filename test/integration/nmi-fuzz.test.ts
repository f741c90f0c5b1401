// Fuzzing NMI over raw sockets: at least 10,000 random and malformed requests (paths, methods, headers, queries,
// bodies, slow writes, cut and pipelined connections) from known and unknown pod addresses. NMI must never crash,
// never answer 200 to a malformed request, answer every well-formed one with the caller's own token, never let a
// token lookalike or blocked instance-metadata request reach IMDS, and still serve valid callers afterwards.
//
// Reproduce a failure with NMI_FUZZ_SEED=<seed printed by the test>.
//
// WELL-FORMED (the only requests that may get 200) means all of:
//   * transport: the whole request head is sent (not cut), on HTTP/1.1 (with Host) or HTTP/1.0;
//   * caller: the source address is a pod on this node with an Assigned AzureAssignedIdentity;
//   * method: one of GET HEAD POST PUT DELETE PATCH OPTIONS TRACE (the original ignores the method on this route);
//   * path: `/metadata/identity/oauth2/token`, optional one trailing `/`, the `metadata` segment in any letter case,
//     the rest exactly so, with no percent-encoding, backslash, dot segment or doubled slash;
//   * header: exactly one `Metadata` header (name in any case) whose value, without surrounding blanks, is `true`;
//     no header the HTTP layer refuses (bad names/values, folded lines, conflicting framing, `Expect` other than
//     100-continue, heads over 16 KiB); any other extra header is ignored (X-Forwarded-For and the like included);
//   * query, decoded as application/x-www-form-urlencoded (every value taken without surrounding whitespace, line
//     breaks included): `resource` exactly once, non-empty, with no control characters, at most 2048 characters;
//     `client_id`, `msi_res_id`, `mi_res_id`, `object_id` each at most once and at most 2048 characters; no
//     `principal_id`; at most one of a client id, a resource id and an object id; `msi_res_id` and `mi_res_id`, when
//     both non-empty, equal; a non-empty client id, resource id or object id must be the caller's own identity's (the
//     object id is its principal ID, any letter case); anything else (api-version, unknown parameters) is ignored;
//   * body: absent or correctly framed (Content-Length or chunked); it is ignored.
// MALFORMED is everything else. A well-formed request must get 200 with a token whose appid is the caller identity's
// client id and whose aud is the (trimmed) resource; a malformed one must get anything but 200.

import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToken } from '../helpers/azure.js';
import { accessTokenOf, startNmiWorld, TOKEN_PATH, VAULT, type NmiWorld, type WorldIdentity, type WorldPod } from '../helpers/nmi-world.js';

const REQUESTS = 10_000;
const WORKERS = 96;
const READ_TIMEOUT_MS = 15_000;
const SEED = Number(process.env['NMI_FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));

/* --------------------------------------------------------------------------------------------- PRNG */

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rand {
  constructor(private readonly next: () => number) {}
  float(): number {
    return this.next();
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  ascii(len: number, alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~'): string {
    let s = '';
    for (let i = 0; i < len; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
  bytes(len: number): Buffer {
    const b = Buffer.alloc(len);
    for (let i = 0; i < len; i++) b[i] = this.int(256);
    return b;
  }
}

/* ------------------------------------------------------------------------------------------ the world */

interface Caller {
  readonly ip: string;
  readonly pod?: WorldPod;
  /** Set only for pods with an Assigned identity: the only callers a 200 may go to. */
  readonly identity?: WorldIdentity;
}

/** One generated HTTP request: its bytes and, when well-formed, what the answer must carry. */
interface FuzzRequest {
  readonly bytes: Buffer;
  readonly method: string;
  /** Reasons it is malformed; empty = well-formed token request (if the caller also has an identity). */
  readonly breaks: readonly string[];
  /** For well-formed requests: the trimmed resource the token must be for. */
  readonly resource: string;
  /** The HTTP layer itself rejects it (used to keep pipelines free of parse errors). */
  readonly httpBroken: boolean;
}

type Transport = 'whole' | 'slow' | 'cut' | 'pipelined' | 'garbage';

interface Outcome {
  readonly transport: Transport;
  readonly caller: Caller;
  readonly requests: readonly FuzzRequest[];
  readonly responses: readonly ParsedResponse[];
  readonly timedOut: boolean;
}

const RESOURCES = [VAULT, 'https://storage.azure.com', 'https://management.azure.com'];

describe(`NMI fuzzing (seed ${SEED})`, () => {
  let world: NmiWorld;
  const callers: Caller[] = [];
  let assigned: Caller[] = [];
  let others: WorldIdentity[] = [];

  beforeAll(async () => {
    world = await startNmiWorld({ nmi: { blockInstanceMetadata: true } });
    for (let i = 0; i < 4; i++) {
      const pod = await world.pod(`fuzz-${i}`, `127.0.3.${i + 1}`);
      const identity = await world.managedIdentity(`fuzz-id-${i}`);
      await world.assign(pod, identity);
      callers.push({ ip: pod.ip, pod, identity });
    }
    const bare = await world.pod('fuzz-bare', '127.0.3.10');
    callers.push({ ip: bare.ip, pod: bare });
    const created = await world.pod('fuzz-created', '127.0.3.11');
    const pendingId = await world.managedIdentity('fuzz-pending');
    await world.assign(created, pendingId, 'Created');
    callers.push({ ip: created.ip, pod: created });
    callers.push({ ip: '127.0.3.200' }); // no pod at all
    assigned = callers.filter((c) => c.identity !== undefined);
    others = [pendingId, ...assigned.map((c) => c.identity as WorldIdentity)];
  }, 30_000);
  afterAll(async () => {
    await world?.stop();
  });

  it('never crashes, never answers 200 to a malformed request, and answers every well-formed one correctly', async () => {
    console.log(`NMI fuzz seed: ${SEED} (rerun with NMI_FUZZ_SEED=${SEED})`);
    const rand = new Rand(mulberry32(SEED));
    const port = Number(new URL(world.nmiUrl).port);
    world.azure.emulator.clearRequestLog();

    const plans = Array.from({ length: REQUESTS }, () => planOne(rand, callers, assigned, others));
    const outcomes: Outcome[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        while (next < plans.length) {
          const plan = plans[next++] as Plan;
          outcomes.push(await execute(plan, port));
        }
      }),
    );

    const failures: string[] = [];
    const extraRefusals: string[] = [];
    const tally = new Map<string, number>();
    let wellFormed = 0;
    for (const o of outcomes) {
      tally.set(o.transport, (tally.get(o.transport) ?? 0) + 1);
      if (o.timedOut && o.transport !== 'cut') failures.push(`${o.transport} from ${o.caller.ip}: no complete answer in ${READ_TIMEOUT_MS} ms: ${describe1(o.requests[0])}`);
      for (const [i, res] of o.responses.entries()) {
        const req = o.requests[i];
        if (!req) {
          // Node's HTTP layer may answer bytes left over after a response with its own 400 (timing-dependent with slow
          // writes); only an extra answer that carries a token would break what this test pins.
          if (res.status === 200) {
            failures.push(`${o.transport}: more responses than requests (${res.status} ${res.body.slice(0, 80)}): ${o.requests.map(describe1).join(' | ')}`);
          } else {
            extraRefusals.push(`${o.transport}: extra ${res.status} after ${o.requests.map(describe1).join(' | ')}`);
          }
          continue;
        }
        const ok = o.transport !== 'cut' && o.transport !== 'garbage' && req.breaks.length === 0 && o.caller.identity !== undefined;
        if (!ok) {
          if (res.status === 200) failures.push(`200 to a malformed request from ${o.caller.ip} [${req.breaks.join('; ') || 'caller has no identity'}]: ${describe1(req)}`);
          continue;
        }
        wellFormed++;
        const identity = o.caller.identity as WorldIdentity;
        if (res.status !== 200) {
          failures.push(`well-formed request from ${o.caller.ip} got ${res.status} ${res.body.slice(0, 100)}: ${describe1(req)}`);
          continue;
        }
        if (req.method === 'HEAD') continue;
        try {
          const claims = decodeToken(accessTokenOf({ status: res.status, headers: {}, body: res.body }));
          if (claims.appid !== identity.clientId || claims.aud !== req.resource) {
            failures.push(`wrong token for ${o.caller.ip}: appid ${claims.appid} aud ${claims.aud}, wanted ${identity.clientId} ${req.resource}`);
          }
        } catch (error) {
          failures.push(`unreadable 200 body for ${o.caller.ip}: ${String(error)} ${res.body.slice(0, 100)}`);
        }
      }
      // A pipeline of well-formed heads must be answered in full.
      if ((o.transport === 'whole' || o.transport === 'slow' || o.transport === 'pipelined') && !o.timedOut) {
        // (The HTTP layer may drop a connection whose head it refuses without an answer, e.g. CONNECT.)
        if (!o.requests[0]?.httpBroken && o.responses.length === 0) failures.push(`${o.transport} from ${o.caller.ip}: no response at all: ${describe1(o.requests[0])}`);
      }
    }
    const statuses = new Map<number, number>();
    for (const o of outcomes) for (const r of o.responses) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    console.log(
      `NMI fuzz: ${outcomes.length} connections, ${outcomes.reduce((n, o) => n + o.requests.length, 0)} requests, ${wellFormed} well-formed; ` +
        `transports ${JSON.stringify(Object.fromEntries(tally))}; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}; failures ${failures.length}`,
    );
    if (extraRefusals.length > 0) console.log(`extra non-200 answers from the HTTP layer: ${extraRefusals.slice(0, 5).join('\n')}`);
    if (failures.length > 0) {
      const kinds = new Map<string, number>();
      for (const f of failures) {
        const kind = f.replace(/ from [0-9.]+/, '').replace(/\]:.*$/s, ']').replace(/: ".*$/s, '');
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
      console.log([...kinds].map(([k, n]) => `${n} x ${k}`).join('\n'));
      console.log(failures.slice(0, 20).join('\n'));
    }
    expect(failures.slice(0, 10)).toEqual([]);
    expect(outcomes.length).toBe(REQUESTS);

    // Nothing but NMI's own token requests for assigned identities reached IMDS's token endpoint, and no blocked
    // instance-metadata request got through.
    const log = world.azure.emulator.requestLog();
    expect(log.filter((e) => e.operation === 'imds_instance')).toEqual([]);
    const allowed = new Set(assigned.map((c) => (c.identity as WorldIdentity).clientId));
    const strayTokens = log.filter(
      (e) => e.operation === 'imds_token' && !(e.path.startsWith(`${TOKEN_PATH}?api-version=2018-02-01&resource=`) && allowed.has(e.target.split(':').pop() ?? '')),
    );
    expect(strayTokens).toEqual([]);

    // NMI is alive and still serves valid callers.
    const health = await fetch(`${world.nmi?.probeUrl}/healthz`);
    expect(await health.text()).toBe('Active');
    for (const c of assigned) {
      const reply = await world.call(c.ip, `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`);
      expect(decodeToken(accessTokenOf(reply)).appid).toBe(c.identity?.clientId);
    }
  }, 180_000);
});

/* ---------------------------------------------------------------------------------------- generation */

interface Plan {
  readonly transport: Transport;
  readonly caller: Caller;
  readonly requests: readonly FuzzRequest[];
  /** slow: the byte offsets to pause at; cut: where to stop. */
  readonly splits: readonly number[];
  readonly halfClose: boolean;
  readonly delays: readonly number[];
}

function planOne(rand: Rand, callers: readonly Caller[], assigned: readonly Caller[], others: readonly WorldIdentity[]): Plan {
  // Mostly callers that could get a token, so that malformations are tested where they matter.
  const r = rand.float();
  const caller = r < 0.8 ? rand.pick(assigned) : r < 0.985 ? rand.pick(callers.filter((c) => c.pod && !c.identity)) : (callers.find((c) => !c.pod) as Caller);
  const t = rand.float();
  const transport: Transport = t < 0.66 ? 'whole' : t < 0.78 ? 'slow' : t < 0.88 ? 'cut' : t < 0.95 ? 'pipelined' : 'garbage';
  if (transport === 'garbage') {
    return { transport, caller, requests: [garbage(rand)], splits: [], halfClose: true, delays: [] };
  }
  if (transport === 'pipelined') {
    const n = 2 + rand.int(3);
    const requests: FuzzRequest[] = [];
    for (let i = 0; i < n; i++) requests.push(structured(rand, caller, others, { last: i === n - 1, httpValid: true }));
    return { transport, caller, requests, splits: [], halfClose: false, delays: [] };
  }
  const request = structured(rand, caller, others, { last: true, httpValid: false });
  if (transport === 'cut') {
    const headEnd = request.bytes.indexOf('\r\n\r\n');
    const limit = headEnd === -1 ? request.bytes.length : headEnd + 3; // strictly before the head is complete
    return { transport, caller, requests: [request], splits: [rand.int(Math.max(1, limit))], halfClose: rand.chance(0.5), delays: [] };
  }
  if (transport === 'slow') {
    const count = 1 + rand.int(5);
    const splits = Array.from({ length: count }, () => rand.int(request.bytes.length)).sort((a, b) => a - b);
    return { transport, caller, requests: [request], splits, halfClose: false, delays: splits.map(() => 1 + rand.int(15)) };
  }
  return { transport, caller, requests: [request], splits: [], halfClose: false, delays: [] };
}

interface Piece {
  readonly text: string;
  readonly breaks?: string;
  readonly http?: boolean;
}

const GOOD_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE'];

function structured(rand: Rand, caller: Caller, others: readonly WorldIdentity[], o: { last: boolean; httpValid: boolean }): FuzzRequest {
  const breaks: string[] = [];
  let httpBroken = false;
  const take = (p: Piece): string => {
    if (p.breaks) breaks.push(p.breaks);
    if (p.http) httpBroken = true;
    return p.text;
  };
  // In a pipeline every head must parse: an HTTP-level error there would answer out of order.
  const choose = (gen: () => Piece): string => {
    let p = gen();
    for (let i = 0; i < 50 && o.httpValid && p.http; i++) p = gen();
    return take(o.httpValid && p.http ? { text: 'GET' } : p);
  };
  const safe = (p: Piece, fallback: Piece): Piece => (o.httpValid && p.http ? fallback : p);

  // Method.
  const method = take(
    rand.chance(0.85)
      ? { text: 'GET' }
      : rand.chance(0.6)
        ? { text: rand.pick(o.httpValid ? GOOD_METHODS.filter((m) => m !== 'HEAD') : GOOD_METHODS) }
        : safe({ text: rand.pick(['get', 'XYZ', 'G%45T', 'CONNECT', 'GET\u0000', 'PRI']), breaks: 'method the HTTP layer refuses', http: true }, { text: 'GET' }),
  );
  // Path.
  const path = choose(() => pathPiece(rand));
  // Query.
  const q = queryPiece(rand, caller, others);
  for (const b of q.breaks) breaks.push(b);
  const target = q.text === null ? path : `${path}?${q.text}`;
  const version = take(
    rand.chance(0.93) ? { text: 'HTTP/1.1' } : rand.chance(0.6) ? { text: 'HTTP/1.0' } : safe({ text: rand.pick(['HTTP/x', 'HTTP/11', 'HTTPS/1.1', 'http/1.1']), breaks: 'bad HTTP version', http: true }, { text: 'HTTP/1.1' }),
  );
  // Headers.
  const headers: string[] = [];
  if (rand.chance(0.97) || o.httpValid || version === 'HTTP/1.0') headers.push(`Host: ${rand.chance(0.8) ? '169.254.169.254' : rand.ascii(1 + rand.int(20))}`);
  else take({ text: '', breaks: 'HTTP/1.1 without Host', http: true });
  for (const h of metadataHeaders(rand, o.httpValid)) headers.push(take(h));
  const extras = rand.int(4);
  for (let i = 0; i < extras; i++) headers.push(take(extraHeader(rand, o.httpValid)));
  // Body.
  let body = '';
  const b = rand.float();
  if (b < 0.12) {
    body = rand.ascii(rand.int(300), 'abcdefghijklmnopqrstuvwxyz{}":,[] 0123456789');
    headers.push(`Content-Length: ${Buffer.byteLength(body)}`);
  } else if (b < 0.18 && version === 'HTTP/1.1') {
    const chunk = rand.ascii(1 + rand.int(100));
    body = `${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`;
    headers.push('Transfer-Encoding: chunked');
  } else if (b < 0.2 && !o.httpValid) {
    headers.push('Content-Length: 5', 'Transfer-Encoding: chunked');
    body = '0\r\n\r\n';
    take({ text: '', breaks: 'both Content-Length and Transfer-Encoding', http: true });
  }
  headers.push(o.last ? 'Connection: close' : 'Connection: keep-alive');
  const head = `${method} ${target} ${version}\r\n${headers.join('\r\n')}\r\n\r\n`;
  const bytes = Buffer.concat([Buffer.from(head, 'utf8'), Buffer.from(body, 'utf8')]);
  if (!caller.identity) breaks.push('caller has no Assigned identity');
  return { bytes, method, breaks, resource: q.resource, httpBroken };
}

function pathPiece(rand: Rand): Piece {
  const r = rand.float();
  if (r < 0.55) {
    return { text: rand.pick(['/metadata/identity/oauth2/token', '/metadata/identity/oauth2/token/', '/METADATA/identity/oauth2/token', '/MetaData/identity/oauth2/token/']) };
  }
  if (r < 0.9) {
    const tricks = [
      '/metadata/identity\\oauth2\\token',
      '/metadata/identity/\\oauth2\\token/',
      '/metadata\\identity\\oauth2\\token',
      '/metadata/identity/oauth2%2Ftoken',
      '/metadata/identity/oauth2%2ftoken',
      '/metadata%2Fidentity%2Foauth2%2Ftoken',
      '/metadata/identity/oauth2/%74oken',
      '/%6detadata/identity/oauth2/token',
      '/metadata/identity/oauth2%252Ftoken',
      '/metadata/identity/oauth2%5Ctoken',
      '/metadata/identity/oauth2%5ctoken',
      '/metadata/./identity/oauth2/token',
      '/metadata/identity/oauth2/./token',
      '/x/../metadata/identity/oauth2/token',
      '/metadata/identity/oauth2/token/..',
      '/metadata/identity/oauth2/token/.',
      '/metadata/identity/oauth2/%2e/token',
      '/metadata/identity/%2e%2e/identity/oauth2/token',
      '//metadata/identity/oauth2/token',
      '/metadata//identity/oauth2/token',
      '/metadata/identity/oauth2/token//',
      '/metadata/Identity/oauth2/token',
      '/metadata/identity/OAuth2/token',
      '/metadata/identity/oauth2/Token',
      '/metadata/identity/oauth2/tokens',
      '/metadata/identity/oauth2/token/x',
      '/metadata/identity/oauth2/token;x',
      '/metadata/identity/oauth2/token%00',
      '/metadata/identity/oauth2/token%20',
      '/metadata/identity/oauth2/token%',
      '/metadata/identity/oauth2/token%zz',
      '/metadata/identity/oauth2/token#frag',
      '/metadata/identity/oauth2／token',
      '/ｍetadata/identity/oauth2/token',
      '/metadata/identity/oauth2%C0%AFtoken',
      '/metadata/identity/oauth2%EF%BC%8Ftoken',
      '/metadata/\u0130dentity/oauth2/token',
      '/metadata/identity/oauth2/tok\u0435n',
      'http://169.254.169.254/metadata/identity/oauth2/token',
      '*',
      '/metadata/identity/oauth2/token\t',
      '/metadata/instance',
      '/metadata/instance/compute',
      '/Metadata/instance',
      '/metadata//instance',
      '/metadata/./instance',
      '/metadata/instance%2F',
      '/metadata/%69nstance',
      '/metadata\\instance',
      '/host/token',
      '/host/token/',
      '/metadata/versions',
      '/',
      '/healthz',
      '/metrics',
    ];
    const text = rand.pick(tricks);
    // Paths the HTTP parser itself may refuse: non-ASCII, blanks, NUL, '#', or not origin-form.
    const http = /[^\x21-\x7e]|#/.test(text) || (!text.startsWith('/') && text !== '*');
    return { text, breaks: `path ${JSON.stringify(text)}`, ...(http ? { http: true } : {}) };
  }
  const len = 1 + rand.int(60);
  // Not '//' or '/\\' first: the Azure emulator's IMDS throws on those authority-like paths (reported), and NMI's
  // handling of them is covered by the fixed list above.
  const text = `/${rand.ascii(1, 'abcdefghijklmnopqrstuvwxyz%.-_~')}${rand.ascii(len, "abcdefghijklmnopqrstuvwxyz/%.\\-_~!$&'()*+,;=:@0123456789")}`;
  return { text, breaks: 'random path' };
}

interface QueryResult {
  readonly text: string | null;
  readonly breaks: readonly string[];
  readonly resource: string;
}

function queryPiece(rand: Rand, caller: Caller, others: readonly WorldIdentity[]): QueryResult {
  const pairs: string[] = [];
  const breaks: string[] = [];
  const enc = (s: string) => (rand.chance(0.3) ? s.replace(/[&#\s%+]/g, encodeURIComponent) : encodeURIComponent(s));
  // resource
  let resource = rand.pick(RESOURCES);
  const r = rand.float();
  if (r < 0.78) {
    if (rand.chance(0.1)) resource = `${resource}/`;
    if (rand.chance(0.05)) resource = `https://${rand.ascii(1 + rand.int(30))}.example`;
    // Surrounding whitespace (line breaks included) is trimmed: still well-formed.
    const padded = rand.chance(0.05) ? rand.pick([` ${resource} `, `${resource}\n`, `\t${resource}\r\n`]) : resource;
    pairs.push(`resource=${enc(padded)}`);
  } else {
    const bad = rand.pick([
      ['', 'no resource'],
      ['resource=', 'empty resource'],
      ['resource=%20%20', 'blank resource'],
      ['resource', 'resource without value'],
      [`resource=${enc(resource)}&resource=${enc(resource)}`, 'resource twice'],
      [`resource=${enc(resource.slice(0, 10))}%0A${enc(resource.slice(10))}`, 'resource with a line feed inside'],
      [`resource=${enc(resource)}%00`, 'resource with NUL'],
      [`resource=${enc(resource)}%7F`, 'resource with DEL'],
      [`resource=%01${enc(resource)}`, 'resource with a control character'],
      [`resource=${'a'.repeat(2049 + rand.int(1000))}`, 'resource over 2048 characters'],
      [`resource[]=${enc(resource)}`, 'resource[] is not resource'],
      [`Resource=${enc(resource)}`, 'Resource is not resource'],
      [`resource%3D${enc(resource)}`, 'encoded equals sign'],
    ] as const);
    if (bad[0] !== '') pairs.push(bad[0]);
    breaks.push(bad[1]);
  }
  // identity selector
  const own = caller.identity;
  const other = rand.pick(others.filter((i) => i !== own));
  const ownClient = own?.clientId ?? 'no-identity';
  const ownRes = own?.resourceId ?? '/subscriptions/x/resourcegroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/none';
  const ownObject = own?.principalId ?? 'no-identity';
  const s = rand.float();
  if (s < 0.45) {
    // none
  } else if (s < 0.75) {
    pairs.push(
      rand.pick([
        `client_id=${ownClient}`,
        `client_id=${ownClient}%0A`,
        `msi_res_id=${encodeURIComponent(ownRes)}`,
        `mi_res_id=${encodeURIComponent(ownRes)}`,
        `msi_res_id=${encodeURIComponent(ownRes)}&mi_res_id=${encodeURIComponent(ownRes)}`,
        `object_id=${ownObject}`,
        `object_id=${ownObject.toUpperCase()}`,
        'client_id=',
        'msi_res_id=',
        'object_id=',
      ]),
    );
  } else {
    const bad = rand.pick([
      [`client_id=${other.clientId}`, "another identity's client id"],
      [`msi_res_id=${encodeURIComponent(other.resourceId)}`, "another identity's resource id"],
      [`mi_res_id=${encodeURIComponent(other.resourceId)}`, "another identity's resource id (mi_res_id)"],
      [`client_id=${ownClient}&client_id=${ownClient}`, 'client_id twice'],
      [`client_id=${ownClient}&msi_res_id=${encodeURIComponent(ownRes)}`, 'client id and resource id'],
      [`msi_res_id=${encodeURIComponent(ownRes)}&mi_res_id=${encodeURIComponent(other.resourceId)}`, 'msi_res_id and mi_res_id differ'],
      [`object_id=${other.principalId}`, "another identity's object id"],
      [`object_id=${ownObject}&client_id=${ownClient}`, 'object id and client id'],
      [`object_id=${ownObject}&object_id=${ownObject}`, 'object_id twice'],
      [`object_id=${ownObject}%00`, 'object id with NUL'],
      [`principal_id=${ownObject}`, 'principal_id'],
      [`client_id=${'0'.repeat(2049)}`, 'client_id over 2048 characters'],
      [`client_id=00000000-0000-0000-0000-000000000000`, 'unknown client id'],
      [`client_id=${ownClient.slice(0, 8)}%0A${ownClient.slice(8)}`, 'client id with a line feed inside'],
      [`client_id=${ownClient}%00`, 'client id with NUL'],
    ] as const);
    pairs.push(bad[0]);
    breaks.push(bad[1]);
  }
  // harmless extras
  if (rand.chance(0.7)) pairs.push(`api-version=${rand.pick(['2018-02-01', '2019-08-01', '', 'x', '2018-02-01&api-version=2017-09-01'])}`);
  if (rand.chance(0.2)) pairs.push(`${rand.ascii(1 + rand.int(8))}=${rand.ascii(rand.int(20))}`);
  if (rand.chance(0.05)) pairs.push(`bypass_cache=true`);
  if (rand.chance(0.03)) pairs.push(`x=${'y'.repeat(1000 + rand.int(2000))}`);
  for (let i = pairs.length - 1; i > 0; i--) {
    const j = rand.int(i + 1);
    [pairs[i], pairs[j]] = [pairs[j] as string, pairs[i] as string];
  }
  if (rand.chance(0.02)) return { text: null, breaks: [...breaks, 'no query at all'], resource: resource.trim() };
  return { text: pairs.filter((p) => p !== '').join(rand.chance(0.97) ? '&' : '&&'), breaks, resource: resource.trim() };
}

function metadataHeaders(rand: Rand, httpValid: boolean): Piece[] {
  const r = rand.float();
  if (r < 0.75 || httpValid) return [{ text: rand.pick(['Metadata: true', 'metadata: true', 'METADATA:true', 'Metadata:   true  ', 'Metadata:\ttrue']) }];
  return [
    rand.pick<Piece[]>([
      [{ text: '', breaks: 'no Metadata header' }],
      [{ text: 'Metadata: True', breaks: 'Metadata: True' }],
      [{ text: 'Metadata: TRUE', breaks: 'Metadata: TRUE' }],
      [{ text: 'Metadata: false', breaks: 'Metadata: false' }],
      [{ text: 'Metadata: 1', breaks: 'Metadata: 1' }],
      [{ text: 'Metadata: "true"', breaks: 'Metadata quoted' }],
      [{ text: 'Metadata:', breaks: 'Metadata empty' }],
      [{ text: 'Metadata: true, true', breaks: 'Metadata list' }],
      [{ text: 'Metadata: true\r\nMetadata: true', breaks: 'duplicate Metadata' }],
      [{ text: 'Metadata: true\r\nmetadata: false', breaks: 'duplicate Metadata, conflicting' }],
      [{ text: 'Metadata : true', breaks: 'space before colon', http: true }],
      [{ text: 'Meta-data: true', breaks: 'Meta-data is not Metadata' }],
      [{ text: 'X-Metadata: true', breaks: 'X-Metadata is not Metadata' }],
    ]),
  ].flat();
}

function extraHeader(rand: Rand, httpValid: boolean): Piece {
  const fine: Piece[] = [
    { text: `X-Forwarded-For: 127.0.3.${1 + rand.int(4)}` },
    { text: `X-Real-IP: 127.0.3.${1 + rand.int(4)}` },
    { text: `Forwarded: for=127.0.3.${1 + rand.int(4)}` },
    { text: `User-Agent: ${rand.ascii(rand.int(40))}` },
    { text: 'Accept: */*' },
    { text: 'Accept-Encoding: gzip, deflate, br' },
    { text: `Content-Type: ${rand.pick(['application/json', 'application/x-www-form-urlencoded', 'text/plain'])}` },
    { text: `X-${rand.ascii(1 + rand.int(10))}: ${rand.ascii(rand.int(60), 'abcdefghijklmnopqrstuvwxyz 0123456789;=,/')}` },
    { text: 'Expect: 100-continue' },
    { text: `podns: default` },
    { text: `podname: fuzz-${rand.int(4)}` },
    { text: `X-Long: ${'z'.repeat(500 + rand.int(2000))}` },
  ];
  const broken: Piece[] = [
    { text: 'Bad Header: x', breaks: 'space in a header name', http: true },
    { text: 'X-Ctl: a\u0001b', breaks: 'control character in a header value', http: true },
    { text: ' folded: continuation', breaks: 'obs-fold line', http: true },
    { text: 'Content-Length: abc', breaks: 'non-numeric Content-Length', http: true },
    { text: 'Content-Length: 1\r\nContent-Length: 2', breaks: 'conflicting Content-Length', http: true },
    { text: `X-Huge: ${'h'.repeat(17_000)}`, breaks: 'head over 16 KiB', http: true },
    { text: 'NoColonHere', breaks: 'header line without colon', http: true },
  ];
  if (httpValid || rand.chance(0.8)) return rand.pick(fine);
  return rand.pick(broken);
}

function garbage(rand: Rand): FuzzRequest {
  const kind = rand.int(4);
  let bytes: Buffer;
  if (kind === 0) bytes = rand.bytes(1 + rand.int(500));
  else if (kind === 1) bytes = Buffer.from(`${rand.ascii(1 + rand.int(100), 'ABCDEFGHIJ /:?&=\r\n%\\.')}\r\n\r\n`);
  else if (kind === 2) bytes = Buffer.from(`GET ${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)} HTTP/1.1\r\nHost: x\r\nMetadata: true\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n${rand.ascii(10)}\r\n`);
  else bytes = Buffer.concat([Buffer.from(`GET ${TOKEN_PATH}?resource=`), rand.bytes(1 + rand.int(50)), Buffer.from(' HTTP/1.1\r\nMetadata: true\r\n\r\n')]);
  return { bytes, method: 'GET', breaks: ['garbage bytes'], resource: '', httpBroken: true };
}

function describe1(req: FuzzRequest | undefined): string {
  if (!req) return '(none)';
  const text = req.bytes.toString('latin1');
  return JSON.stringify(text.length > 300 ? `${text.slice(0, 300)}…` : text);
}

/* ----------------------------------------------------------------------------------------- execution */

async function execute(plan: Plan, port: number): Promise<Outcome> {
  const socket = connect({ host: '127.0.0.1', port, localAddress: plan.caller.ip });
  socket.on('error', () => undefined); // resets are part of the game; the outcome records what was answered
  const received: Buffer[] = [];
  socket.on('data', (d: Buffer) => received.push(d));
  const closed = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(true);
    }, READ_TIMEOUT_MS);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  await new Promise<void>((resolve) => {
    socket.once('connect', () => resolve());
    socket.once('close', () => resolve());
  });

  const all = Buffer.concat(plan.requests.map((r) => r.bytes));
  if (plan.transport === 'cut') {
    const stop = plan.splits[0] ?? 0;
    await write(socket, all.subarray(0, stop));
    if (plan.halfClose) socket.end();
    else socket.destroy();
  } else if (plan.transport === 'slow') {
    let at = 0;
    for (const [i, split] of plan.splits.entries()) {
      await write(socket, all.subarray(at, split));
      at = Math.max(at, split);
      await new Promise((r) => setTimeout(r, plan.delays[i] ?? 1));
    }
    await write(socket, all.subarray(at));
  } else {
    await write(socket, all);
    if (plan.halfClose) socket.end();
  }
  const timedOut = await closed;
  const responses = parseResponses(Buffer.concat(received), plan.requests.map((r) => r.method));
  return { transport: plan.transport, caller: plan.caller, requests: plan.requests, responses, timedOut: plan.transport === 'cut' ? false : timedOut };
}

function write(socket: Socket, bytes: Buffer): Promise<void> {
  if (bytes.length === 0 || socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => socket.write(bytes, () => resolve()));
}

interface ParsedResponse {
  readonly status: number;
  readonly body: string;
}

/** Splits a byte stream into HTTP/1.x responses (Content-Length, chunked, or to EOF), skipping 1xx. */
function parseResponses(buf: Buffer, methods: readonly string[]): ParsedResponse[] {
  const out: ParsedResponse[] = [];
  let at = 0;
  while (at < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', at);
    if (headEnd === -1) break;
    const head = buf.subarray(at, headEnd).toString('latin1');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    if (!m) break;
    const status = Number(m[1]);
    at = headEnd + 4;
    if (status >= 100 && status < 200) continue;
    const headers = head.split('\r\n').slice(1);
    const header = (name: string) => headers.find((h) => h.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
    let body: Buffer;
    if (methods[out.length] === 'HEAD' || status === 204 || status === 304) body = Buffer.alloc(0);
    else if (header('content-length') !== undefined) {
      const len = Number(header('content-length'));
      body = buf.subarray(at, at + len);
      at += len;
    } else if (header('transfer-encoding')?.toLowerCase() === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', at);
        if (lineEnd === -1) break;
        const size = parseInt(buf.subarray(at, lineEnd).toString('latin1'), 16);
        at = lineEnd + 2;
        if (!(size > 0)) {
          at += 2;
          break;
        }
        parts.push(buf.subarray(at, at + size));
        at += size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      body = buf.subarray(at);
      at = buf.length;
    }
    out.push({ status, body: body.toString('utf8') });
  }
  return out;
}
