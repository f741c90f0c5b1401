// `--enableProfile`: the original served Go's pprof on localhost:6060. Ours serves what Node can give, on 127.0.0.1
// only (never another interface: a heap snapshot holds tokens and secrets in memory):
//   GET /debug/pprof/profile?seconds=N  a CPU profile of N seconds (default 30, at most 300), .cpuprofile JSON
//                                       (open in Chrome DevTools > Performance, or speedscope)
//   GET /debug/pprof/heap               a V8 heap snapshot, .heapsnapshot JSON (Chrome DevTools > Memory)
// One profile at a time (409 otherwise): the inspector session is per process.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Session } from 'node:inspector';
import type { Logger } from 'pino';
import { realClock } from './clock.js';
import { closeServer, listen } from './http.js';

export const PROFILE_HOST = '127.0.0.1';
export const MAX_PROFILE_SECONDS = 300;

export interface ProfileServer {
  /** `http://127.0.0.1:port`. */
  readonly url: string;
  close(): Promise<void>;
}

export async function startProfileServer(opts: { readonly port: number; readonly logger: Logger }): Promise<ProfileServer> {
  const log = opts.logger.child({ component: 'profile' });
  let busy = false;
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const run = url.pathname === '/debug/pprof/profile' ? cpuProfile : url.pathname === '/debug/pprof/heap' ? heapSnapshot : undefined;
    if (req.method !== 'GET' || run === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('GET /debug/pprof/profile?seconds=N or /debug/pprof/heap\n');
      return;
    }
    if (busy) {
      res.writeHead(409, { 'content-type': 'text/plain' }).end('another profile is being taken\n');
      return;
    }
    busy = true;
    run(req, res, url, log)
      .catch((err: unknown) => {
        log.warn({ err, path: url.pathname }, 'profile failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end();
      })
      .finally(() => {
        busy = false;
      });
  });
  const url = await listen(server, PROFILE_HOST, opts.port);
  log.info({ url }, 'profiling endpoint listening (CPU: /debug/pprof/profile?seconds=N, heap: /debug/pprof/heap)');
  return { url, close: () => closeServer(server) };
}

async function cpuProfile(req: IncomingMessage, res: ServerResponse, url: URL, log: Logger): Promise<void> {
  const raw = url.searchParams.get('seconds') ?? '30';
  const seconds = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(seconds > 0 && seconds <= MAX_PROFILE_SECONDS)) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end(`seconds: expected a number in (0, ${MAX_PROFILE_SECONDS}], got '${raw}'\n`);
    return;
  }
  const session = new Session();
  session.connect();
  try {
    await post(session, 'Profiler.enable');
    await post(session, 'Profiler.start');
    log.info({ seconds }, 'CPU profile started');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, seconds * 1000);
      // A client that hangs up gets no profile; stop early rather than profile for nobody.
      req.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    const result = (await post(session, 'Profiler.stop')) as { profile: unknown };
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-disposition': `attachment; filename="cpu-${realClock.now()}.cpuprofile"`,
    });
    res.end(JSON.stringify(result.profile));
  } finally {
    session.disconnect();
  }
}

async function heapSnapshot(_req: IncomingMessage, res: ServerResponse, _url: URL, log: Logger): Promise<void> {
  const session = new Session();
  session.connect();
  try {
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-disposition': `attachment; filename="heap-${realClock.now()}.heapsnapshot"`,
    });
    // Chunks arrive synchronously during takeHeapSnapshot; stream them instead of holding the whole snapshot.
    session.on('HeapProfiler.addHeapSnapshotChunk', (m: { params: { chunk: string } }) => {
      res.write(m.params.chunk);
    });
    await post(session, 'HeapProfiler.takeHeapSnapshot', { reportProgress: false });
    res.end();
    log.info('heap snapshot written');
  } finally {
    session.disconnect();
  }
}

function post(session: Session, method: string, params?: object): Promise<unknown> {
  return new Promise((resolve, reject) => {
    session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result)));
  });
}
