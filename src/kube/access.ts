// Access to the API server without client-node's KubeConfig: its module pulls in the whole generated API (every
// typed client and model, ~26 MB of a process's live heap) even when only the server URL, TLS options and
// credentials are wanted, which is all MIC's hot paths (list, watch, raw writes) use. This reads kubeconfig files
// (clusters with CA / skip-verify / TLS server name / proxy; users with token, token file, client certificate,
// basic auth or an exec plugin) and the in-cluster service account, and authenticates client-node's RequestContext
// as KubeConfig does, so Watch, getJson and kubeHttp take either. A client-node KubeConfig satisfies KubeAccess too.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import type { RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';
import { Agent, ProxyAgent, type Dispatcher } from 'undici';
import { parse } from 'yaml';
import { realClock, type Clock } from '../common/clock.js';

/** What list, watch and raw requests need of a kubeconfig (client-node's KubeConfig has the same two members). */
export interface KubeAccess {
  getCurrentCluster(): { readonly server: string } | null;
  /** Sets the auth headers and the connection pool (TLS options) on a request. */
  applySecurityAuthentication(context: RequestContext): Promise<void>;
}

export interface LoadKubeAccessOptions {
  readonly kubeconfigPath?: string;
  readonly kubeconfigYaml?: string;
  readonly inCluster?: boolean;
  readonly context?: string;
  /** Sent as User-Agent on every request. */
  readonly userAgent?: string;
  /** For the default discovery (KUBECONFIG, HOME, KUBERNETES_SERVICE_HOST/PORT) and exec plugins; default: none. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly clock?: Clock;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * Precedence as loadKubeConfig (client-node's): YAML string, file path, in-cluster, then KUBECONFIG (files merged,
 * the first file's entries winning), ~/.kube/config, and the pod's service account.
 */
export function loadKubeAccess(opts: LoadKubeAccessOptions = {}): KubeAccess {
  const env = opts.env ?? {};
  let resolved: ResolvedConfig;
  try {
    resolved = resolve(opts, env);
  } catch (err) {
    throw new Error(`cannot load kubeconfig${opts.kubeconfigPath ? ` from ${opts.kubeconfigPath}` : ''}`, { cause: err });
  }
  return new ConfigAccess(resolved, opts.userAgent, env, opts.clock ?? realClock);
}

/* ----------------------------------------------------------------------------------------- loading */

interface ClusterConfig {
  readonly server: string;
  readonly ca?: Buffer;
  readonly skipTLSVerify: boolean;
  readonly tlsServerName?: string;
  readonly proxyUrl?: string;
}

interface ExecConfig {
  readonly command: string;
  readonly args: readonly string[];
  readonly env: ReadonlyArray<{ name: string; value: string }>;
  readonly apiVersion: string;
  readonly cwd: string | undefined;
}

interface UserConfig {
  readonly token?: string;
  readonly tokenFile?: string;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly username?: string;
  readonly password?: string;
  readonly exec?: ExecConfig;
}

interface ResolvedConfig {
  readonly cluster: ClusterConfig;
  readonly user: UserConfig;
}

type Rec = Record<string, unknown>;

function resolve(opts: LoadKubeAccessOptions, env: Readonly<Record<string, string | undefined>>): ResolvedConfig {
  if (opts.kubeconfigYaml !== undefined) return fromDocs([{ doc: parseDoc(opts.kubeconfigYaml), dir: undefined }], opts.context);
  if (opts.kubeconfigPath) return fromDocs([readDoc(opts.kubeconfigPath)], opts.context);
  if (opts.inCluster) return inCluster(env);
  const list = env['KUBECONFIG'];
  if (list) {
    const files = list.split(':').filter((f) => f !== '' && existsSync(f));
    if (files.length > 0) return fromDocs(files.map(readDoc), opts.context);
  }
  const home = env['HOME'] || homedir();
  const fallback = join(home, '.kube', 'config');
  if (existsSync(fallback)) return fromDocs([readDoc(fallback)], opts.context);
  if (existsSync(join(SA_DIR, 'token'))) return inCluster(env);
  throw new Error('no kubeconfig found (no KUBECONFIG, no ~/.kube/config, not in a pod)');
}

function inCluster(env: Readonly<Record<string, string | undefined>>): ResolvedConfig {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'];
  if (!host || !port) throw new Error('in-cluster config needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT');
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return {
    cluster: { server: `https://${h}:${port}`, ca: readFileSync(join(SA_DIR, 'ca.crt')), skipTLSVerify: false },
    // Re-read as it rotates (bound service-account tokens expire).
    user: { tokenFile: join(SA_DIR, 'token') },
  };
}

function readDoc(path: string): { doc: Rec; dir: string } {
  return { doc: parseDoc(readFileSync(path, 'utf8')), dir: dirname(path) };
}

function parseDoc(text: string): Rec {
  const doc: unknown = parse(text);
  if (!isRec(doc)) throw new Error('kubeconfig is not a YAML mapping');
  return doc;
}

/** Merges the documents (first name wins), picks the context and reads its cluster and user. */
function fromDocs(docs: ReadonlyArray<{ doc: Rec; dir: string | undefined }>, contextName: string | undefined): ResolvedConfig {
  const named = (key: string, inner: string): Map<string, { value: Rec; dir: string | undefined }> => {
    const out = new Map<string, { value: Rec; dir: string | undefined }>();
    for (const { doc, dir } of docs) {
      const list = doc[key];
      if (list === undefined || list === null) continue;
      if (!Array.isArray(list)) throw new Error(`kubeconfig ${key} is not a list`);
      for (const e of list) {
        if (!isRec(e) || typeof e['name'] !== 'string') throw new Error(`kubeconfig ${key}: an entry has no name`);
        const value = e[inner];
        if (!out.has(e['name'])) out.set(e['name'], { value: isRec(value) ? value : {}, dir });
      }
    }
    return out;
  };
  const contexts = named('contexts', 'context');
  const clusters = named('clusters', 'cluster');
  const users = named('users', 'user');
  const current = contextName ?? docs.map((d) => d.doc['current-context']).find((c): c is string => typeof c === 'string' && c !== '');
  if (current === undefined) throw new Error('kubeconfig has no current context');
  const ctx = contexts.get(current)?.value;
  if (ctx === undefined) throw new Error(`kubeconfig has no context ${current}`);
  const clusterName = str(ctx, 'cluster');
  const c = clusterName !== undefined ? clusters.get(clusterName) : undefined;
  if (c === undefined) throw new Error(`kubeconfig context ${current} names no known cluster`);
  const userName = str(ctx, 'user');
  const u = userName !== undefined ? users.get(userName) : undefined;
  return { cluster: clusterOf(c.value, c.dir), user: u === undefined ? {} : userOf(u.value, u.dir) };
}

function clusterOf(c: Rec, dir: string | undefined): ClusterConfig {
  const server = str(c, 'server');
  if (!server) throw new Error('kubeconfig cluster has no server');
  const ca = material(c, 'certificate-authority', dir);
  const tlsServerName = str(c, 'tls-server-name');
  const proxyUrl = str(c, 'proxy-url');
  if (proxyUrl !== undefined && !/^https?:/i.test(proxyUrl)) throw new Error(`kubeconfig proxy-url ${proxyUrl}: only http(s) proxies are supported`);
  return {
    server,
    ...(ca !== undefined ? { ca } : {}),
    skipTLSVerify: c['insecure-skip-tls-verify'] === true,
    ...(tlsServerName ? { tlsServerName } : {}),
    ...(proxyUrl ? { proxyUrl } : {}),
  };
}

function userOf(u: Rec, dir: string | undefined): UserConfig {
  if (u['auth-provider'] !== undefined) {
    throw new Error('kubeconfig auth-provider users are not supported; use an exec plugin (e.g. kubelogin) or a token');
  }
  if (u['as'] !== undefined) throw new Error('kubeconfig impersonation (as) is not supported');
  const token = str(u, 'token');
  const tokenFile = str(u, 'tokenFile');
  const cert = material(u, 'client-certificate', dir);
  const key = material(u, 'client-key', dir);
  const username = str(u, 'username');
  const password = str(u, 'password');
  const exec = isRec(u['exec']) ? execOf(u['exec'], dir) : undefined;
  return {
    ...(token ? { token } : {}),
    ...(tokenFile ? { tokenFile: abs(tokenFile, dir) } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...(username !== undefined ? { username, password: password ?? '' } : {}),
    ...(exec !== undefined ? { exec } : {}),
  };
}

function execOf(e: Rec, dir: string | undefined): ExecConfig {
  const command = str(e, 'command');
  if (!command) throw new Error('kubeconfig exec has no command');
  const args = Array.isArray(e['args']) ? e['args'].map(String) : [];
  const env = Array.isArray(e['env'])
    ? e['env'].filter(isRec).map((v) => ({ name: String(v['name'] ?? ''), value: String(v['value'] ?? '') }))
    : [];
  // A relative command path (with a slash) is relative to the kubeconfig's directory, as client-go.
  const cmd = command.includes('/') && !isAbsolute(command) && dir !== undefined ? join(dir, command) : command;
  return { command: cmd, args, env, apiVersion: str(e, 'apiVersion') ?? 'client.authentication.k8s.io/v1', cwd: dir };
}

/** `<name>` (a file, relative to the kubeconfig) or `<name>-data` (base64). */
function material(o: Rec, name: string, dir: string | undefined): Buffer | undefined {
  const file = str(o, name);
  if (file) return readFileSync(abs(file, dir));
  const data = str(o, `${name}-data`);
  return data ? Buffer.from(data, 'base64') : undefined;
}

function abs(file: string, dir: string | undefined): string {
  return dir === undefined || isAbsolute(file) ? file : join(dir, file);
}

function str(o: Rec, key: string): string | undefined {
  const v = o[key];
  return typeof v === 'string' ? v : undefined;
}

function isRec(v: unknown): v is Rec {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/* ------------------------------------------------------------------------------------ authenticating */

interface ExecCredential {
  readonly token?: string;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /** Epoch ms; undefined: valid until the process ends. */
  readonly expiresAt?: number;
}

/** Token files are re-read at most this often (client-go's cached token source rereads every minute). */
const TOKEN_FILE_TTL_MS = 60_000;

class ConfigAccess implements KubeAccess {
  readonly #cluster: ClusterConfig;
  readonly #user: UserConfig;
  readonly #userAgent: string | undefined;
  readonly #env: Readonly<Record<string, string | undefined>>;
  readonly #clock: Clock;
  /** One pool per client certificate (an exec plugin may rotate it). */
  #dispatcher: { readonly cert: Buffer | undefined; readonly pool: Dispatcher } | undefined;
  #fileToken: { readonly value: string; readonly readAt: number; readonly mtimeMs: number } | undefined;
  #exec: ExecCredential | undefined;
  #execRunning: Promise<ExecCredential> | undefined;

  constructor(r: ResolvedConfig, userAgent: string | undefined, env: Readonly<Record<string, string | undefined>>, clock: Clock) {
    this.#cluster = r.cluster;
    this.#user = r.user;
    this.#userAgent = userAgent;
    this.#env = env;
    this.#clock = clock;
  }

  getCurrentCluster(): { readonly server: string } {
    return this.#cluster;
  }

  async applySecurityAuthentication(ctx: RequestContext): Promise<void> {
    const u = this.#user;
    const exec = u.exec !== undefined ? await this.#execCredential(u.exec) : undefined;
    const token = exec?.token ?? u.token ?? (u.tokenFile !== undefined ? this.#tokenFromFile(u.tokenFile) : undefined);
    if (u.username !== undefined) ctx.setHeaderParam('Authorization', `Basic ${Buffer.from(`${u.username}:${u.password ?? ''}`).toString('base64')}`);
    if (token) ctx.setHeaderParam('Authorization', `Bearer ${token}`);
    if (this.#userAgent !== undefined) ctx.setHeaderParam('User-Agent', this.#userAgent);
    ctx.setDispatcher(this.#pool(exec?.cert ?? u.cert, exec?.key ?? u.key));
  }

  #pool(cert: Buffer | undefined, key: Buffer | undefined): Dispatcher {
    const current = this.#dispatcher;
    if (current !== undefined && (current.cert === cert || (current.cert !== undefined && cert !== undefined && current.cert.equals(cert)))) {
      return current.pool;
    }
    const c = this.#cluster;
    const tls = {
      ...(c.ca !== undefined ? { ca: c.ca } : {}),
      ...(cert !== undefined ? { cert } : {}),
      ...(key !== undefined ? { key } : {}),
      ...(c.skipTLSVerify ? { rejectUnauthorized: false } : {}),
      ...(c.tlsServerName !== undefined ? { servername: c.tlsServerName } : {}),
    };
    const pool: Dispatcher = c.proxyUrl !== undefined ? new ProxyAgent({ uri: c.proxyUrl, requestTls: tls }) : new Agent({ connect: tls });
    const old = current?.pool;
    this.#dispatcher = { cert, pool };
    // Requests on the old pool finish; it takes no new ones.
    if (old !== undefined) void old.close().catch(() => undefined);
    return pool;
  }

  #tokenFromFile(path: string): string {
    const now = this.#clock.now();
    const cached = this.#fileToken;
    if (cached !== undefined && now - cached.readAt < TOKEN_FILE_TTL_MS) return cached.value;
    const mtimeMs = statSync(path).mtimeMs;
    if (cached !== undefined && cached.mtimeMs === mtimeMs) {
      this.#fileToken = { ...cached, readAt: now };
      return cached.value;
    }
    const value = readFileSync(path, 'utf8').trim();
    this.#fileToken = { value, readAt: now, mtimeMs };
    return value;
  }

  /** The plugin's credential, run again 10 s before it expires; concurrent requests share one run. */
  async #execCredential(e: ExecConfig): Promise<ExecCredential> {
    const cached = this.#exec;
    if (cached !== undefined && (cached.expiresAt === undefined || cached.expiresAt - 10_000 > this.#clock.now())) return cached;
    this.#execRunning ??= runExec(e, this.#env).finally(() => {
      this.#execRunning = undefined;
    });
    const fresh = await this.#execRunning;
    this.#exec = fresh;
    return fresh;
  }
}

function runExec(e: ExecConfig, baseEnv: Readonly<Record<string, string | undefined>>): Promise<ExecCredential> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(baseEnv)) if (v !== undefined) env[k] = v;
  for (const v of e.env) env[v.name] = v.value;
  env['KUBERNETES_EXEC_INFO'] = JSON.stringify({ apiVersion: e.apiVersion, kind: 'ExecCredential', spec: { interactive: false } });
  return new Promise((resolvePromise, reject) => {
    execFile(e.command, [...e.args], { env, ...(e.cwd !== undefined ? { cwd: e.cwd } : {}), timeout: 60_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`kubeconfig exec plugin ${e.command} failed: ${String(stderr).trim() || err.message}`, { cause: err }));
        return;
      }
      try {
        resolvePromise(parseExecCredential(String(stdout)));
      } catch (parseErr) {
        reject(new Error(`kubeconfig exec plugin ${e.command}: ${(parseErr as Error).message}`, { cause: parseErr }));
      }
    });
  });
}

function parseExecCredential(text: string): ExecCredential {
  const doc: unknown = JSON.parse(text);
  const status = isRec(doc) && isRec(doc['status']) ? doc['status'] : undefined;
  if (status === undefined) throw new Error('the ExecCredential has no status');
  const token = str(status, 'token');
  const cert = str(status, 'clientCertificateData');
  const key = str(status, 'clientKeyData');
  if (!token && !(cert && key)) throw new Error('the ExecCredential has neither a token nor a client certificate and key');
  const exp = str(status, 'expirationTimestamp');
  const expiresAt = exp !== undefined ? Date.parse(exp) : undefined;
  return {
    ...(token ? { token } : {}),
    ...(cert && key ? { cert: Buffer.from(cert), key: Buffer.from(key) } : {}),
    ...(expiresAt !== undefined && !Number.isNaN(expiresAt) ? { expiresAt } : {}),
  };
}
