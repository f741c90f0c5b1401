// NMI's token server: routes as the original (upstream-behaviour §3.2) and answers a pod's IMDS token request with a
// token for that pod's own identity, and nothing else. Token requests are decided by core/decide.ts alone: the facts
// at hand are gathered synchronously, and a request whose facts are all at hand (a warm one) is answered in the same
// tick, with no promise; only a missing fact (the pod cache, an assignment, a live check, a fetch) is awaited, and
// then decide runs again. No listen() here: nmi.ts and tests do it.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { realClock, type Clock } from '../common/clock.js';
import type { NamespacePolicies } from '../crds/namespace-policy.js';
import type { AzureIdentity, PodView } from '../crds/types.js';
import {
  decideToken,
  FEDERATION_REFUSED_MESSAGE,
  notFoundMessage,
  tokenRoute,
  throttled,
  unreadablePrincipal,
  type Answer,
  type DecidePolicy,
  type Need,
  type TokenFacts,
  type UpstreamFailure,
} from './core/decide.js';
import { hostTokenBody, IDENTITY_NOT_FOUND, imdsTokenBody, METADATA_HEADER_MISSING, type Token } from './core/imds-body.js';
import { namespacePolicyDenial } from './core/namespace-policy.js';
import { NODE_PATH_REMEDY, nodeRequestRefusal, nodeTokenRefusal, type NodeRefusal } from './core/node-path.js';
import { routeRequest, type Route } from './core/routes.js';
import { principalKey, selectIdentity, servableIdentities, type Selection, type SelectPolicy } from './core/select.js';
import { parseTokenRequest, type ParsedTokenRequest, type TokenRequest } from './core/token-request.js';
import type { IdentityState, MetadataProxy, NmiMetrics, NodeIdentityRequest, PodDirectory, PodEvents, PodViewFreshness, TokenIssuer } from './ports.js';
import { tokenIdentityOf, tokenObjectIdOf } from './tokens/claims.js';
import { GENERIC_FAILURE_MESSAGE } from './tokens/types.js';
import { FairCaps } from './fair-caps.js';
import { limitConnections } from './connection-limit.js';
import { LogLimiter, type LineSink } from './log-limit.js';
import { NO_AUDIT, newAuditFacts, type AuditFacts } from './audit.js';
import type { AuditTrail } from './audit.js';

export interface NmiServerConfig {
  readonly metadataHeaderRequired: boolean;
  readonly blockInstanceMetadata: boolean;
  readonly operationMode: 'standard' | 'managed';
  readonly forceNamespaced: boolean;
  /** --namespace-identity-policy: 'enforce' checks the Namespace annotations before serving a bound identity. */
  readonly namespaceIdentityPolicy?: 'off' | 'enforce';
  readonly micNamespace: string;
  readonly micServiceAccount: string;
  readonly retryAttemptsForCreated: number;
  readonly retryAttemptsForAssigned: number;
  readonly findIdentityRetryIntervalMs: number;
  readonly setRetryAfterHeader: boolean;
  /** `--max-waiting-requests-per-pod`: token requests one pod IP may have waiting; beyond it 429 (default 1024). */
  readonly maxWaitingRequestsPerPod?: number;
  /** `--max-waiting-requests`: waiting in all (default 2048); at the cap the busiest pod makes room for others. */
  readonly maxWaitingRequests?: number;
  /** `--enable-federated-identities`: serve Federated identities by federating the pod's service account (else 403). */
  readonly enableFederatedIdentities?: boolean;
}

export interface NmiServerDeps {
  readonly config: NmiServerConfig;
  readonly pods: PodDirectory;
  readonly identities: IdentityState;
  readonly tokens: TokenIssuer;
  readonly proxy: MetadataProxy;
  readonly logger: Logger;
  readonly metrics?: NmiMetrics;
  /** When given, a pod view older than its bound is confirmed live before anything is served (else 503). */
  readonly freshness?: PodViewFreshness;
  readonly clock?: Clock;
  /** The namespaces' identity policies as NMI's Namespace informer sees them (read under enforce; none: deny all). */
  readonly namespacePolicies?: NamespacePolicies;
  /** Where each token served and each refusal is recorded (default: nowhere). */
  readonly audit?: AuditTrail;
  /** Warning events on pods (a federated token refused), limited with the log line they go with. */
  readonly podEvents?: PodEvents;
}

/** TCP connections one caller IP and all callers may keep open (connection-limit.ts). */
export interface ConnectionCaps {
  readonly perCaller: number;
  readonly total: number;
}

type Request = IncomingMessage;
type Response = ServerResponse;

/**
 * The token server as NMI runs it: the request listener, NMI's own `Expect: 100-continue` handling, the connection
 * caps (when given) and the original's keep-alive.
 */
export function createNmiServer(deps: NmiServerDeps, connections?: ConnectionCaps): Server {
  const listener = createNmiRequestListener(deps);
  const server = createServer(listener);
  if (connections !== undefined) limitConnections(server, { ...connections, logger: deps.logger, ...(deps.clock ? { clock: deps.clock } : {}) });
  handleExpectContinue(server, listener, deps.config);
  server.keepAliveTimeout = 65_000;
  return server;
}

/** The token server as a plain `node:http` request listener: NMI's hot path. */
export function createNmiRequestListener(deps: NmiServerDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const handle = createRequestHandler(deps);
  const failed = (req: Request, res: Response) => (error: unknown) => {
    deps.logger.error({ err: error, path: pathOf(req) }, 'request handler failed');
    if (!res.headersSent) sendText(res, 500, 'internal error');
    else res.destroy();
  };
  return (req, res) => {
    let pending: Promise<void> | undefined;
    try {
      pending = handle(req, res);
    } catch (error) {
      return failed(req, res)(error);
    }
    pending?.catch(failed(req, res));
  };
}

/**
 * `Expect: 100-continue` handled by NMI rather than by Node: a token request has no body to wait for, so it gets its
 * final answer directly (RFC 9110 allows that); only a request NMI forwards to IMDS is told to continue. Node's own
 * handling could put a `100 Continue` between the bytes of a pipelined earlier response.
 */
export function handleExpectContinue(
  server: Server,
  listener: (req: IncomingMessage, res: ServerResponse) => void,
  policy: { readonly blockInstanceMetadata: boolean },
): void {
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    if (routeRequest(q === -1 ? url : url.slice(0, q), policy).kind === 'proxy') res.writeContinue();
    listener(req, res);
  });
}

type MutableFacts = { -readonly [K in keyof TokenFacts]: TokenFacts[K] };

function createRequestHandler(deps: NmiServerDeps): (req: Request, res: Response) => Promise<void> | undefined {
  const { config, logger } = deps;
  const clock = deps.clock ?? realClock;
  const policy: SelectPolicy = {
    mode: config.operationMode,
    forceNamespaced: config.forceNamespaced,
    micNamespace: config.micNamespace,
    micServiceAccount: config.micServiceAccount,
    // The original's wait for a pod with nothing assigned: a pod started longer ago has had its assignments made.
    settleAfterMs: config.retryAttemptsForCreated * config.findIdentityRetryIntervalMs,
  };
  const routing = { blockInstanceMetadata: config.blockInstanceMetadata };
  const principals = new PrincipalIds();
  const inputFor = (pod: PodView, request: TokenRequest) => ({
    pod,
    request,
    ...deps.identities.selectionFor(pod),
    nowMs: clock.now(),
    principalIds: principals.known,
  });

  const enforced = config.namespaceIdentityPolicy === 'enforce';
  const noPolicies: NamespacePolicies = new Map();
  // Read from the config at each decision, as the rest of the handler does (tests change it between requests).
  const decidePolicy: DecidePolicy = {
    get metadataHeaderRequired() {
      return config.metadataHeaderRequired;
    },
    get setRetryAfterHeader() {
      return config.setRetryAfterHeader;
    },
    namespacePolicies: enforced ? (deps.namespacePolicies ?? noPolicies) : undefined,
    ...(deps.freshness !== undefined ? { maxStalenessMs: deps.freshness.maxStalenessMs } : {}),
    get federatedIdentities() {
      return config.enableFederatedIdentities === true;
    },
  };
  /** The token source of one of the pod's identities (object_id matching, /host/token), as decide routes it. */
  const routeOf = (identity: AzureIdentity) => {
    const live = deps.identities.liveIdentity?.(identity.namespace, identity.name);
    return tokenRoute({ identity, ...(live !== undefined ? { live } : {}) }, decidePolicy);
  };
  /** Under enforce, why this pod may not have this identity's token (undefined when off or permitted). */
  const policyDenial = (pod: PodView, identity: AzureIdentity) =>
    enforced ? namespacePolicyDenial(deps.namespacePolicies ?? noPolicies, pod, identity) : undefined;

  const audit = deps.audit ?? NO_AUDIT;
  const bodies = new TokenBodies();
  const queries = new ParsedQueries();
  // selectNow's memory, by pod object (a changed pod is a new object), valid while the identity state hands out the
  // same input object for it, then by the parsed request object (ParsedQueries reuses it for the same query).
  const selections = new WeakMap<PodView, { state: object; byRequest: Map<TokenRequest, Selection> }>();
  const lines = new LogLimiter(clock);
  // Token requests waiting for a fact, per caller IP.
  const waiting = new FairCaps<Admission>(() => ({
    perCaller: config.maxWaitingRequestsPerPod ?? DEFAULT_MAX_WAITING_PER_POD,
    total: config.maxWaitingRequests ?? DEFAULT_MAX_WAITING,
  }));

  return function handle(req: Request, res: Response): Promise<void> | undefined {
    const started = clock.now();
    if (req.httpVersionMajor !== 1) {
      sendText(res, 505, 'HTTP Version Not Supported');
      return undefined;
    }
    const route = routeRequest(pathOf(req), routing);
    if (route.kind === 'token') return tokenRequest(req, res, started);
    if (route.kind === 'host-token') return hostTokenRequest(req, res, started);
    return otherRequest(req, res, route, started);
  };

  async function otherRequest(req: Request, res: Response, route: Exclude<Route, { kind: 'token' | 'host-token' }>, started: number): Promise<void> {
    try {
      switch (route.kind) {
        case 'invalid':
          lines.log(remoteIp(req), logger, { path: pathOf(req), reason: route.reason }, 'refused request path', 'warn', true);
          return sendText(res, 400, 'Invalid request');
        case 'instance-blocked':
          return sendText(res, 403, 'Request blocked by AAD Pod Identity NMI');
        case 'proxy':
          if (!hasMetadataHeader(req)) return sendMetadataHeaderMissing(res);
          return await deps.proxy.forward(req, res);
      }
    } finally {
      deps.metrics?.observeRequest(route.kind, res.statusCode, '', '', (clock.now() - started) / 1000);
    }
  }

  /* ------------------------------------------------------------------------------------------- /metadata/.../token */

  /** Answers in this tick when decide can (no promise), else waits for what it needs under the waiting caps. */
  function tokenRequest(req: Request, res: Response, started: number): Promise<void> | undefined {
    const ip = remoteIp(req);
    const facts: MutableFacts = { ip, metadataHeader: req.headers['metadata'] === 'true', parsed: queries.parse(queryOf(req)) };
    prefill(facts);
    const verdict = decideNow(facts);
    if (verdict.kind === 'answer') {
      // A body still to come is parsed first (its errors close the connection before any answer): answer after it.
      if (mayHaveBody(req)) return Promise.resolve().then(() => answerToken(res, ip, verdict.answer, started, true));
      answerToken(res, ip, verdict.answer, started, true);
      return undefined;
    }
    return waitFor(req, res, ip, facts, verdict.need, started);
  }

  /**
   * Reads up front the facts every well-formed request needs and that cost no wait and change nothing (the caller,
   * its selection, the view's freshness), so that decide runs once or twice rather than once per fact. The token
   * cache is read only when decide asks (a read counts a hit and may start a refresh).
   */
  function prefill(facts: MutableFacts): void {
    if (!facts.parsed.ok || facts.ip === '' || deps.pods.lookup === undefined) return;
    const lookup = deps.pods.lookup(facts.ip);
    facts.caller = { lookup, waited: false };
    if (lookup.kind !== 'pod') return;
    facts.selection = { selection: selectNow(lookup.pod, facts.parsed.request), final: false };
    if (deps.freshness === undefined || deps.freshness.isFresh(clock.now())) facts.live = 'fresh';
  }

  /**
   * selectIdentity at this instant, remembered while nothing changes: the identity state hands out a new input object
   * on every change, and an identity (or the node path) chosen for a request that names no object_id depends on
   * nothing else (not on the time, not on the principal IDs learnt). Anything else is decided afresh each time.
   */
  function selectNow(pod: PodView, request: TokenRequest): Selection {
    const state = deps.identities.selectionFor(pod);
    let memo = selections.get(pod);
    if (memo?.state !== state) selections.set(pod, (memo = { state, byRequest: new Map() }));
    const remembered = memo.byRequest.get(request);
    if (remembered !== undefined) return remembered;
    const selection = selectIdentity({ pod, request, ...state, nowMs: clock.now(), principalIds: principals.known }, policy);
    if (request.objectId === undefined && (selection.kind === 'identity' || selection.kind === 'node')) {
      if (memo.byRequest.size >= 64) memo.byRequest.clear();
      memo.byRequest.set(request, selection);
    }
    return selection;
  }

  /** decide, filling every fact that can be had without waiting, until it answers or needs a wait. */
  function decideNow(facts: MutableFacts): { kind: 'answer'; answer: Answer } | { kind: 'need'; need: Need } {
    for (;;) {
      const verdict = decideToken(facts, decidePolicy);
      if (verdict.kind === 'answer' || !fillNow(facts, verdict.need)) return verdict;
    }
  }

  /** Fills the fact `need` asks for if it is at hand now; false when it needs a wait. */
  function fillNow(facts: MutableFacts, need: Need): boolean {
    switch (need.kind) {
      case 'caller': {
        if (facts.caller !== undefined || deps.pods.lookup === undefined) return false;
        facts.caller = { lookup: deps.pods.lookup(facts.ip), waited: false };
        return true;
      }
      case 'selection':
        if (facts.selection !== undefined) return false;
        facts.selection = { selection: selectNow(need.pod, need.request), final: false };
        return true;
      case 'live': {
        // A view the API server has not confirmed lately may name a deleted pod whose IP another pod now has.
        if (deps.freshness !== undefined && !deps.freshness.isFresh(clock.now())) return false;
        facts.live = 'fresh';
        return true;
      }
      case 'tokens': {
        const cached = deps.tokens.cachedTokensFor?.(need.identity, need.request.resource, need.source === 'federated' ? need.pod : undefined);
        if (cached === undefined || cached.length === 0) return false;
        facts.tokens = { kind: 'tokens', tokens: cached, cache: 'hit' };
        return true;
      }
      case 'node':
        return false;
    }
  }

  /** The facts that need a wait, one after the other (each re-decided), with the request counted as waiting. */
  async function waitFor(req: Request, res: Response, ip: string, facts: MutableFacts, first: Need, started: number): Promise<void> {
    const audited = auditFactsOf(ip, facts);
    let answer: Answer | undefined;
    try {
      answer = await bounded(req, res, ip, audited, async (abort) => {
        let need = first;
        for (;;) {
          const node = await fillLater(facts, need, abort);
          if (abort.aborted()) return undefined;
          if (node !== undefined) return node;
          const verdict = decideNow(facts);
          if (verdict.kind === 'answer') return verdict.answer;
          need = verdict.need;
        }
      });
    } catch (error) {
      Object.assign(audited, auditFactsOf(ip, facts), { refusal: 'internal-error' });
      finishToken(res, audited, started);
      throw error;
    }
    if (answer !== undefined) return answerToken(res, ip, answer, started, false);
    Object.assign(audited, auditFactsOf(ip, facts), audited.refusal !== undefined ? { refusal: audited.refusal } : {});
    finishToken(res, audited, started);
  }

  /** Fetches the fact `need` asks for, waiting as needed; the node path answers on its own (returned). */
  async function fillLater(facts: MutableFacts, need: Need, abort: LazyAbort): Promise<Answer | undefined> {
    switch (need.kind) {
      case 'caller':
        facts.caller = { lookup: await deps.pods.findByIp(facts.ip, abort.signal()), waited: true };
        return undefined;
      case 'selection': {
        const { selection, learnError } = await awaitSelection(need.pod, need.request, abort);
        if (abort.aborted()) return undefined;
        const again = deps.pods.lookup?.(facts.ip) ?? (await deps.pods.findByIp(facts.ip, abort.signal()));
        facts.selection = { selection, final: true, again, ...(learnError !== undefined ? { learnFailure: failureOf(learnError) } : {}) };
        return undefined;
      }
      case 'live': {
        const live = await (deps.freshness as PodViewFreshness).confirmLive(need.pod, facts.ip);
        facts.live = live;
        return undefined;
      }
      case 'tokens': {
        try {
          // Federated: the pod is the one NMI's index places at the caller's IP on this node (decide checked it).
          const federatedFor = need.source === 'federated' ? need.pod : undefined;
          const tokens = await deps.tokens.tokensFor(need.identity, need.request.resource, need.request.clientId, need.pod.uid, federatedFor);
          facts.tokens = { kind: 'tokens', tokens, cache: 'miss' };
        } catch (error) {
          facts.tokens = { kind: 'failed', failure: failureOf(error) };
        }
        return undefined;
      }
      case 'node':
        return nodeIdentityAnswer(need.pod, need.request, need.via, need.why);
    }
  }

  /** Sends the answer, logs its line and records it (metrics, audit). */
  function answerToken(res: Response, ip: string, answer: Answer, started: number, sync: boolean): void {
    if (answer.log !== undefined) {
      const { pod, request } = answer;
      const sink: LineSink =
        pod === undefined ? withRemote(logger, ip) : lazyChild(logger, () => ({ pod: pod.name, namespace: pod.namespace, remote: ip, resource: request?.resource }));
      const written = lines.log(ip, sink, answer.log.fields, answer.log.msg, answer.log.level);
      if (written && answer.event !== undefined && pod !== undefined) deps.podEvents?.warning(pod, answer.event.reason, answer.event.message);
    }
    if (answer.status === 200 && answer.path === 'binding' && logger.isLevelEnabled('debug')) {
      // A success line per request at info cost more than the rest of a cached answer (bench/nmi.ts): debug only.
      const id = answer.identity;
      logger.debug({ pod: answer.pod?.name, namespace: answer.pod?.namespace, remote: ip, resource: answer.request?.resource, identity: id && `${id.namespace}/${id.name}` }, 'token served');
    }
    send(res, answer, tokensBody);
    const elapsedMs = clock.now() - started;
    const { pod, identity } = answer;
    // The warm path's hits are counted, not built into a record: no allocation per request when aggregating.
    if (sync && answer.status === 200 && answer.path === 'binding' && answer.cache === 'hit' && pod !== undefined && identity !== undefined) {
      deps.metrics?.observeRequest('token', 200, pod.namespace, answer.request?.resource ?? '', elapsedMs / 1000);
      audit.hit(pod, identity, answer.request?.resource ?? '', elapsedMs);
      return;
    }
    finishToken(res, auditFactsFromAnswer(ip, answer), started);
  }

  /** The one place every token request's decision is recorded: what it learnt, and the status it was answered with. */
  function finishToken(res: Response, facts: AuditFacts, started: number, route: 'token' | 'host-token' = 'token', namespace = facts.pod?.namespace ?? ''): void {
    const elapsedMs = clock.now() - started;
    deps.metrics?.observeRequest(route, res.statusCode, namespace, facts.resource, elapsedMs / 1000);
    // Not answered yet: the handler threw (the listener answers 500), or the caller went away (499, as nginx logs it).
    if (!res.headersSent && facts.refusal !== 'internal-error') facts.refusal = 'client-gone';
    audit.answered(facts, res.headersSent ? res.statusCode : facts.refusal === 'internal-error' ? 500 : 499, elapsedMs);
  }

  function tokensBody(tokens: readonly Token[], resource: string): string | Buffer {
    const nowSeconds = clock.now() / 1000;
    if (tokens.length === 1) return bodies.text(tokens[0], resource, nowSeconds);
    return JSON.stringify(tokens.map((t) => imdsTokenBody(t, resource, nowSeconds)));
  }

  /**
   * Caps what one pod and all pods together can keep waiting (each waiting request holds a socket and its state):
   * beyond a pod's own cap it gets 429 with Retry-After. When the total is reached, a pod holding fewer requests than
   * the pod holding the most still gets in: that pod's newest waiting request is answered 429 to make room. So one
   * pod (or a few) can never keep another pod's first request out, and memory stays bounded by the total.
   */
  async function bounded<T>(req: Request, res: Response, ip: string, outcome: AuditFacts, work: (abort: LazyAbort) => Promise<T | undefined>): Promise<T | undefined> {
    const abort = lazyAbort(req, res);
    const admission: Admission = {
      shed: () => {
        outcome.refusal = 'too-many-waiting';
        abort.abort();
        tooManyWaiting(res);
      },
    };
    const admitted = waiting.admit(ip, admission);
    if (admitted.kind !== 'admitted') {
      const flag = admitted.kind === 'caller-full' ? '--max-waiting-requests-per-pod' : '--max-waiting-requests';
      const where = admitted.kind === 'caller-full' ? 'from this pod' : 'on this node';
      lines.log(ip, logger, { waiting: waiting.total, callerWaiting: admitted.held }, `too many token requests waiting ${where} (${flag}); refused`, 'warn', true);
      outcome.refusal = 'too-many-waiting';
      tooManyWaiting(res);
      return undefined;
    }
    if (admitted.evicted !== undefined) {
      const { caller, item } = admitted.evicted;
      lines.log(caller, logger, { waiting: waiting.total, callerWaiting: waiting.held(caller) }, 'node-wide waiting cap (--max-waiting-requests) reached: newest request of the pod holding the most answered 429 to admit another pod', 'warn', true);
      item.shed();
    }
    try {
      return await work(abort);
    } finally {
      waiting.release(ip, admission);
    }
  }

  function hasMetadataHeader(req: Request): boolean {
    return !config.metadataHeaderRequired || req.headers['metadata'] === 'true';
  }

  /**
   * The node's own identity for an excepted or MIC pod, never one an AzureIdentity declares: checked on the request
   * before IMDS is asked, and on the token IMDS returns (before it is cached, and again when served from the cache).
   */
  async function nodeIdentityAnswer(pod: PodView, request: TokenRequest, via: 'exception' | 'mic', why: string): Promise<Answer> {
    const about = { pod, request, path: via } as const;
    const declared = deps.identities.declaredIdentities();
    if (declared === undefined) {
      return text(503, 'NMI has not yet listed AzureIdentities; retry shortly', { ...about, refusal: 'identities-not-listed', log: warnLine({ reason: why }, 'node identity refused: AzureIdentities not listed yet') });
    }
    const refused = nodeRequestRefusal(request, declared);
    if (refused !== undefined) return refuseNodeIdentity(about, refused, why);
    const check = (token: Token): Error | undefined => {
      const current = deps.identities.declaredIdentities();
      const r = current === undefined ? undefined : nodeTokenRefusal(tokenIdentityOf(token), current);
      return r === undefined ? undefined : new NodeIdentityRefused(r);
    };
    // The vet runs only on a token fetched for this request: then it was a cache miss.
    let cache: 'hit' | 'miss' = 'hit';
    const vet = (token: Token): Error | undefined => {
      cache = 'miss';
      return check(token);
    };
    let token: Token;
    try {
      token = await deps.tokens.nodeToken(request.resource, nodeIdentityRequest(request), vet, pod.uid);
    } catch (error) {
      const seen = { ...about, cache };
      if (error instanceof NodeIdentityRefused) return refuseNodeIdentity(seen, error.refusal, why);
      if (deps.tokens.statusForError(error) === 429) return throttled(failureOf(error), seen);
      if (deps.tokens.isIdentityNotFound?.(error) === true) {
        // As IMDS answered: the same answer a declared identity's refusal gets, so neither tells the pod more.
        return {
          status: 400,
          body: { kind: 'imds', json: JSON.stringify(IDENTITY_NOT_FOUND) },
          ...seen,
          refusal: 'upstream-error',
          log: warnLine({ err: messageOf(error), nodePath: why }, 'node identity not found by IMDS; answered as IMDS did'),
        };
      }
      return text(403, `failed to get the node identity's token: ${messageOf(error)}`, { ...seen, refusal: 'upstream-error', log: warnLine({ err: error }, 'node token request failed') });
    }
    // A token cached before an AzureIdentity declared its identity: not served, and forgotten.
    const stale = check(token);
    if (stale instanceof NodeIdentityRefused) {
      deps.tokens.forgetNodeTokens?.();
      return refuseNodeIdentity({ ...about, cache }, stale.refusal, why);
    }
    return {
      status: 200,
      body: { kind: 'tokens', tokens: [token], resource: request.resource },
      ...about,
      cache,
      log: { level: 'info', fields: { reason: why }, msg: 'serving the node identity' },
    };
  }

  function refuseNodeIdentity(about: Omit<Answer, 'status' | 'body'>, refusal: NodeRefusal, why: string): Answer {
    // Rate-limited: a pod probing IDs must not flood the log. The pod gets IMDS's "Identity not found" (refusal.body).
    return {
      status: refusal.status,
      body: { kind: 'imds', json: JSON.stringify(refusal.body) },
      ...about,
      refusal: 'node-path-declared-identity',
      log: warnLine({ reason: refusal.reason, nodePath: why, allow: NODE_PATH_REMEDY }, 'node identity refused; answered as IMDS does for an identity the VM does not have'),
    };
  }

  /* ---------------------------------------------------------------------------------------------------- /host/token */

  function hostTokenRequest(req: Request, res: Response, started: number): Promise<void> {
    const ip = remoteIp(req);
    const outcome: AuditFacts = { ...newAuditFacts(ip), path: 'host-token' };
    const podns = headerValue(req, 'podns');
    const podname = headerValue(req, 'podname');
    // The metrics' namespace label is the one the caller named, once the request is well-formed.
    let namespace = '';
    const run = async () => {
      let answer: Answer | undefined;
      try {
        answer = await bounded(req, res, ip, outcome, (abort) => hostTokenAnswer(req, ip, podns, podname, outcome, abort, () => (namespace = podns)));
      } catch (error) {
        outcome.refusal = 'internal-error';
        finishToken(res, outcome, started, 'host-token', namespace);
        throw error;
      }
      if (answer !== undefined) {
        if (answer.log !== undefined) {
          const sink = lazyChild(logger, () => ({ pod: podname, namespace: podns, remote: ip, route: 'host-token' }));
          lines.log(`${podns}/${podname}`, sink, answer.log.fields, answer.log.msg, answer.log.level);
        }
        send(res, answer, () => '');
        Object.assign(outcome, {
          refusal: answer.refusal,
          ...(answer.identity !== undefined ? { identity: answer.identity } : {}),
          ...(answer.cache !== undefined ? { cache: answer.cache } : {}),
        });
      }
      finishToken(res, outcome, started, 'host-token', namespace);
    };
    return run();
  }

  async function hostTokenAnswer(req: Request, ip: string, podns: string, podname: string, outcome: AuditFacts, abort: LazyAbort, wellFormed: () => void): Promise<Answer | undefined> {
    if (podns === '' || podname === '') return text(400, "missing 'podname' and 'podns' from request header", { refusal: 'bad-request' });
    if (ip !== '127.0.0.1' && ip !== '::1') return text(500, 'request remote address is not from a host', { refusal: 'unknown-caller' });
    const parsed = queries.parse(queryOf(req));
    if (!parsed.ok) return text(parsed.status, parsed.reason, { refusal: 'bad-request' });
    const request = parsed.request;
    wellFormed();
    noteRequest(outcome, request);
    const pod = deps.pods.findByName(podns, podname);
    if (pod === undefined) return text(404, `pod ${podns}/${podname} is not on this node`, { refusal: 'pod-not-found' });
    outcome.pod = pod;
    const about = { pod, request };
    const { selection, learnError } = await awaitSelection(pod, request, abort);
    if (abort.aborted()) return undefined;
    if (selection.kind === 'unbound' && learnError !== undefined) return unreadablePrincipal(failureOf(learnError), about);
    if (selection.kind !== 'identity') {
      const refusal = selection.kind === 'pending' ? 'not-assigned' : selection.kind === 'unbound' ? 'unbound' : 'no-identity';
      const message = selection.kind === 'node' ? `pod ${podns}/${podname} has no identity` : selection.kind === 'unbound' ? selection.reason : notFoundMessage(pod, selection);
      return text(404, message, { ...about, refusal, log: warnLine({ reason: selection.reason }, 'no identity for the pod') });
    }
    const freshness = deps.freshness;
    if (freshness !== undefined && !freshness.isFresh(clock.now())) {
      const live = await freshness.confirmLive(pod, undefined);
      if (live.kind !== 'confirmed') {
        return text(503, "NMI's view of this node's pods is out of date and the caller could not be confirmed; retry later", {
          ...about,
          retryAfter: '1',
          refusal: 'stale-view',
          log: warnLine(
            { reason: live.reason, check: live.kind, maxStalenessMs: freshness.maxStalenessMs },
            'pod view is stale (no watch event or bookmark within --pod-view-max-staleness) and the caller could not be confirmed live; denied',
          ),
        });
      }
    }
    const identity = selection.identity;
    outcome.identity = identity;
    const denial = policyDenial(pod, identity);
    if (denial !== undefined) {
      return text(denial.status, denial.body, {
        ...about,
        identity,
        refusal: 'namespace-policy',
        log: warnLine({ identity: `${identity.namespace}/${identity.name}`, reason: denial.reason }, 'identity not permitted by the namespace policy; denied'),
      });
    }
    const route = tokenRoute(selection, decidePolicy);
    if (route.kind === 'refused') {
      return text(route.status, `failed to get a token for identity ${identity.namespace}/${identity.name}: ${FEDERATION_REFUSED_MESSAGE}`, {
        ...about,
        identity,
        refusal: route.refusal,
        log: warnLine({ identity: `${identity.namespace}/${identity.name}`, reason: route.reason }, route.msg),
      });
    }
    const federatedFor = route.source === 'federated' ? pod : undefined;
    // Miss: no token was cached when the request came (it was fetched upstream, or the request joined that fetch).
    const cache = deps.tokens.cachedTokensFor?.(route.identity, request.resource, federatedFor) !== undefined ? 'hit' : 'miss';
    const served = { ...about, identity, cache } as const;
    let tokens: readonly Token[];
    try {
      tokens = await deps.tokens.tokensFor(route.identity, request.resource, request.clientId, pod.uid, federatedFor);
    } catch (error) {
      const failure = failureOf(error);
      if (failure.status === 429) return throttled(failure, served);
      return text(failure.status, `failed to get a token for identity ${identity.namespace}/${identity.name}: ${failure.publicMessage}`, {
        ...served,
        refusal: 'upstream-error',
        log: warnLine({ err: error, identity: `${identity.namespace}/${identity.name}`, status: failure.status }, 'token acquisition failed'),
      });
    }
    if (tokens.length === 0) return text(503, 'no token was issued', { ...served, refusal: 'no-token' });
    return {
      status: 200,
      body: { kind: 'json', json: JSON.stringify(hostTokenBody(tokens[0], request.resource, identity.clientID, clock.now() / 1000)) },
      ...served,
    };
  }

  /* ------------------------------------------------------------------------------------------------ shared pieces */

  /**
   * Re-decides on every identity change until a decision is final, the pod's assignments are settled, or the
   * original's wait budget is spent.
   */
  async function awaitSelection(pod: PodView, request: TokenRequest, abort: LazyAbort): Promise<{ selection: Selection; learnError?: unknown }> {
    const interval = config.findIdentityRetryIntervalMs;
    const noneBudget = config.retryAttemptsForCreated * interval;
    const createdBudget = (config.retryAttemptsForCreated + config.retryAttemptsForAssigned) * interval;
    const started = clock.now();
    // With nothing assigned, the wait lasts until the pod is as old as the window (at most about a second longer than
    // the original's, start times being whole seconds): then it is settled, or something is still outstanding.
    const settlesAt = pod.startedAtMs === undefined ? undefined : pod.startedAtMs + noneBudget + 1;
    const noneDeadline = Math.max(started + noneBudget, Math.min(settlesAt ?? 0, started + noneBudget + 2_000));
    let waited = false;
    for (;;) {
      let selection = selectIdentity(inputFor(pod, request), policy);
      // An object_id not matched yet: read the principal IDs of the pod's own identities, then decide again.
      const learn = request.objectId !== undefined && selection.kind !== 'node' && selection.kind !== 'identity';
      const learnError = learn ? await learnPrincipals(pod, request.resource) : undefined;
      if (learn) selection = selectIdentity(inputFor(pod, request), policy);
      const done = { selection, ...(learnError !== undefined ? { learnError } : {}) };
      if (abort.aborted()) return done;
      if (selection.kind !== 'pending') {
        // A wait that ends with an identity (or the node's) is `ready`; one the pod outlived (settled) is a timeout.
        const found = selection.kind === 'identity' || selection.kind === 'node';
        if (waited) deps.metrics?.observeIdentityWait?.(found ? 'ready' : 'timeout', (clock.now() - started) / 1000);
        return done;
      }
      const remaining = (selection.created ? started + createdBudget : noneDeadline) - clock.now();
      if (remaining <= 0) {
        if (waited) deps.metrics?.observeIdentityWait?.('timeout', (clock.now() - started) / 1000);
        return done;
      }
      waited = true;
      // A pod that ages past the window mid-wait is settled then: look again at that moment.
      const settlesIn = settlesAt === undefined ? interval : settlesAt - clock.now();
      await deps.identities.waitForChange(Math.max(1, Math.min(remaining, interval, settlesIn > 0 ? settlesIn : interval)), abort.signal());
    }
  }

  /**
   * An `object_id` names an identity by its principal ID, which only its tokens tell for certain: read it from the
   * tokens of the identities this pod may be served anyway (never another's), for the resource it asked for, so
   * the token served next comes from the cache. Returns the last failure, if a token could not be had.
   */
  async function learnPrincipals(pod: PodView, resource: string): Promise<unknown> {
    let failure: unknown;
    for (const identity of servableIdentities({ pod, ...deps.identities.selectionFor(pod) }, policy)) {
      const key = principalKey(identity);
      if (principals.known.has(key) || policyDenial(pod, identity) !== undefined) continue;
      const route = routeOf(identity);
      if (route.kind === 'refused') continue;
      try {
        // The pod pays for the fetch it starts, as for any miss: else object_id with ever new resources IMDS refuses
        // (nothing learnt, nothing cached) would be an IMDS call each, past --pod-token-miss-rate.
        const tokens = await deps.tokens.tokensFor(route.identity, resource, undefined, pod.uid, route.source === 'federated' ? pod : undefined);
        const oid = tokens[0] === undefined ? undefined : tokenObjectIdOf(tokens[0]);
        if (oid !== undefined) principals.set(key, oid.toLowerCase());
      } catch (error) {
        failure = error;
      }
    }
    return failure;
  }

  /** An issuer error as a pod may be told of it: the status, the pod-safe detail, Retry-After. */
  function failureOf(error: unknown): UpstreamFailure {
    const retryAfterSeconds = deps.tokens.retryAfterSeconds?.(error);
    return {
      status: deps.tokens.statusForError(error),
      publicMessage: deps.tokens.messageForError?.(error) ?? GENERIC_FAILURE_MESSAGE,
      ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
      error,
    };
  }
}

/** What the audit and metrics learn from a token request's answer. */
function auditFactsFromAnswer(ip: string, answer: Answer): AuditFacts {
  const facts = newAuditFacts(ip);
  facts.pod = answer.pod;
  facts.identity = answer.identity;
  facts.path = answer.path;
  facts.refusal = answer.refusal;
  facts.cache = answer.cache;
  if (answer.request !== undefined) noteRequest(facts, answer.request);
  return facts;
}

/** What the audit learns from a token request that got no answer of its own (shed, gone, failed). */
function auditFactsOf(ip: string, facts: TokenFacts): AuditFacts {
  const audited = newAuditFacts(ip);
  if (facts.parsed.ok) noteRequest(audited, facts.parsed.request);
  const lookup = facts.caller?.lookup;
  if (lookup?.kind === 'pod') audited.pod = lookup.pod;
  const selection = facts.selection?.selection;
  if (selection?.kind === 'identity') {
    audited.identity = selection.identity;
    audited.path = 'binding';
  } else if (selection?.kind === 'node') {
    audited.path = selection.via;
  }
  return audited;
}

/** Writes an answer: Go's http.Error text, IMDS's JSON, or the token body (rendered by `tokens`). */
function send(res: Response, answer: Answer, tokens: (tokens: readonly Token[], resource: string) => string | Buffer): void {
  if (answer.retryAfter !== undefined && !res.headersSent) res.setHeader('Retry-After', answer.retryAfter);
  const body = answer.body;
  switch (body.kind) {
    case 'text':
      return sendText(res, answer.status, body.message);
    case 'imds':
      return sendImdsJson(res, answer.status, body.json);
    case 'json':
      return sendJsonText(res, answer.status, body.json);
    case 'tokens':
      return sendJsonText(res, answer.status, tokens(body.tokens, body.resource));
  }
}

function text(status: number, message: string, rest: Omit<Answer, 'status' | 'body'> = {}): Answer {
  return { status, body: { kind: 'text', message }, ...rest };
}

function warnLine(fields: Record<string, unknown>, msg: string) {
  return { level: 'warn' as const, fields, msg };
}

/** Principal IDs read from the tokens of identities NMI served or fetched, by principalKey; bounded. */
class PrincipalIds {
  readonly known = new Map<string, string>();
  set(key: string, principalId: string): void {
    if (this.known.size >= 16_384) this.known.clear();
    this.known.set(key, principalId);
  }
}

/** A node-path token that must not be served: thrown from the vet so that the cache keeps nothing. */
class NodeIdentityRefused extends Error {
  constructor(readonly refusal: NodeRefusal) {
    super(refusal.reason);
  }
}

/** IMDS takes one selector; msi_res_id and mi_res_id are synonyms there, so the resource ID goes as msi_res_id. */
function nodeIdentityRequest(request: TokenRequest): NodeIdentityRequest {
  if (request.clientId !== undefined) return { clientId: request.clientId };
  if (request.resourceId !== undefined) return { resourceId: request.resourceId };
  if (request.objectId !== undefined) return { objectId: request.objectId };
  return {};
}

function noteRequest(outcome: AuditFacts, request: TokenRequest): void {
  outcome.resource = request.resource;
  if (request.clientId !== undefined) outcome.requestedClientId = request.clientId;
  if (request.resourceId !== undefined) outcome.requestedResourceId = request.resourceId;
  if (request.objectId !== undefined) outcome.requestedObjectId = request.objectId;
}

function pathOf(req: Request): string {
  const url = req.url || '/';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function queryOf(req: Request): string {
  const url = req.url || '';
  const q = url.indexOf('?');
  return q === -1 ? '' : url.slice(q + 1);
}

/** IPv4 as the original; an IPv4-mapped IPv6 address is read as its IPv4 form. */
export function remoteIp(req: { socket: { remoteAddress?: string | undefined } }): string {
  const address = req.socket.remoteAddress ?? '';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function headerValue(req: Request, name: string): string {
  const value = req.headers[name];
  return typeof value === 'string' ? value.trim() : '';
}

/** A waiting token request, as `bounded` tracks it. */
interface Admission {
  /** Answers 429 and stops the request's waits (it was chosen to make room). */
  shed(): void;
}

const DEFAULT_MAX_WAITING_PER_POD = 1024;
const DEFAULT_MAX_WAITING = 2048;

function tooManyWaiting(res: Response): void {
  if (res.headersSent || res.destroyed) return;
  res.setHeader('Retry-After', '1');
  sendText(res, 429, 'too many token requests in flight');
}

interface LazyAbort {
  /** The request's abort signal, made on first use. */
  signal(): AbortSignal;
  /** True once the caller went away or the request was shed (false while no signal was ever needed: nothing waited). */
  aborted(): boolean;
  /** Stops whatever the request waits for. */
  abort(): void;
}

/** The abort signal is made only when something has to wait: creating one per request was a hot-path cost. */
function lazyAbort(req: Request, res: Response): LazyAbort {
  let controller: AbortController | undefined;
  const get = () => (controller ??= abortOnClose(req, res));
  return {
    signal: () => get().signal,
    aborted: () => controller?.signal.aborted === true,
    abort: () => get().abort(),
  };
}

function abortOnClose(req: Request, res: Response): AbortController {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  req.once('aborted', () => controller.abort());
  return controller;
}

function sendJsonText(res: Response, status: number, text: string | Buffer): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The serialised IMDS body of a single token, reused within one second: it depends only on the token, the resource
 * as asked and the current second (expires_in). Keyed by the token text itself, so a body is never another token's.
 */
class TokenBodies {
  private readonly byToken = new Map<string, Map<string, { second: number; text: Buffer }>>();

  text(token: Token, resource: string, nowSeconds: number): Buffer {
    const second = Math.floor(nowSeconds);
    let forToken = this.byToken.get(token.accessToken);
    const hit = forToken?.get(resource);
    if (hit !== undefined && hit.second === second) return hit.text;
    const text = Buffer.from(JSON.stringify(imdsTokenBody(token, resource, nowSeconds)));
    if (forToken === undefined) {
      if (this.byToken.size >= 4096) this.byToken.clear();
      this.byToken.set(token.accessToken, (forToken = new Map()));
    }
    if (forToken.size >= 64) forToken.clear();
    forToken.set(resource, { second, text });
    return text;
  }
}

/** Error bodies as Go's http.Error writes them, which the original used. */
function sendText(res: Response, status: number, message: string): void {
  if (res.headersSent || res.destroyed) return;
  const text = `${message}\n`;
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'X-Content-Type-Options': 'nosniff',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendMetadataHeaderMissing(res: Response): void {
  sendImdsJson(res, 400, METADATA_HEADER_MISSING_TEXT);
}

const METADATA_HEADER_MISSING_TEXT = `${JSON.stringify(METADATA_HEADER_MISSING)}\n`;

/** An error in IMDS's own shape and content type, byte for byte as IMDS sends it. */
function sendImdsJson(res: Response, status: number, text: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A child logger whose bindings are made only when a line is written: a child per request was a hot-path cost. */
function lazyChild(logger: Logger, bindings: () => Record<string, unknown>): LineSink {
  let child: Logger | undefined;
  const get = () => (child ??= logger.child(bindings()));
  return {
    debug: (obj, msg) => get().debug(obj, msg),
    info: (obj, msg) => get().info(obj, msg),
    warn: (obj, msg) => get().warn(obj, msg),
  };
}

/** Lines about a caller no pod was found for: the remote address is all there is to say. */
function withRemote(logger: Logger, remote: string): LineSink {
  return {
    debug: (obj, msg) => logger.debug({ remote, ...obj }, msg),
    info: (obj, msg) => logger.info({ remote, ...obj }, msg),
    warn: (obj, msg) => logger.warn({ remote, ...obj }, msg),
  };
}

/**
 * A request that may still carry body bytes. Answering one in the tick its headers arrived would answer before the
 * parser has read (and possibly refused) the rest: such an answer is sent a microtask later, as any waiting one.
 */
function mayHaveBody(req: Request): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0') || req.headers['expect'] !== undefined;
}

/**
 * Parsed token queries by their raw text: parsing is pure, and pods ask the same few queries over and over. Bounded
 * (cleared when full), so a pod sending ever new queries costs a parse each, as without it.
 */
class ParsedQueries {
  private readonly byText = new Map<string, ParsedTokenRequest>();
  parse(query: string): ParsedTokenRequest {
    const known = this.byText.get(query);
    if (known !== undefined) return known;
    const parsed = parseTokenRequest(query);
    if (query.length <= 4096) {
      if (this.byText.size >= 1024) this.byText.clear();
      this.byText.set(query, parsed);
    }
    return parsed;
  }
}
