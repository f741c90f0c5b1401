// Watch streams: newline-delimited `{"type","object"}` JSON over a chunked response, from a resourceVersion,
// with bookmarks, server-side timeout, 410 Expired for compacted history, and selector transitions.

import type { ServerResponse } from 'node:http';
import type { ApiCore } from './core.js';
import type { JsonObject } from './json.js';
import { apiVersionOf, type ResourceType } from './resources.js';
import type { Selector } from './selectors.js';
import type { StoredEvent } from './store.js';

export interface WatchRequest {
  readonly type: ResourceType;
  readonly namespace: string | undefined;
  readonly selector: Selector;
  /** undefined, '' and '0' all mean "current state as ADDED, then live". */
  readonly resourceVersion: string | undefined;
  readonly allowBookmarks: boolean;
  readonly timeoutSeconds: number | undefined;
  readonly bookmarkIntervalMs: number;
  /** While true nothing reaches the client (test hook for a black-holed connection); `OpenWatch.flush` delivers it. */
  readonly held: () => boolean;
}

export interface OpenWatch {
  readonly type: ResourceType;
  readonly res: ServerResponse;
  /** Ends the stream cleanly (the client sees a normal end of body). */
  end(): void;
  /** Writes what was held back while `held()` was true. */
  flush(): void;
}

/** Streams a watch on `res`; returns the handle, already registered in `open` until the stream closes. */
export function serveWatch(core: ApiCore, w: WatchRequest, res: ServerResponse, open: Set<OpenWatch>): void {
  const key = core.key(w.type);
  const apiVersion = apiVersionOf(w.type);
  res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
  // client-node's Watch resolves only once headers arrive; do not wait for the first event.
  res.flushHeaders();

  const heldLines: string[] = [];
  let endWhenFlushed = false;
  const write = (line: string): void => {
    if (w.held()) heldLines.push(line);
    else res.write(line);
  };
  const send = (type: string, object: JsonObject): void => {
    if (res.writableEnded || res.destroyed) return;
    if (object.apiVersion === apiVersion || type === 'ERROR') write(eventLine(type, object));
    else write(`${JSON.stringify({ type, object: { ...object, apiVersion } })}\n`);
  };

  const inScope = (ev: StoredEvent): boolean => !w.type.namespaced || w.namespace === undefined || ev.namespace === w.namespace;
  const deliver = (ev: StoredEvent): void => {
    if (!inScope(ev)) return;
    const now = w.selector.matches(ev.object);
    if (ev.type !== 'MODIFIED' || !ev.prev || w.selector.empty) {
      if (now) send(ev.type, ev.object);
      return;
    }
    const before = w.selector.matches(ev.prev);
    if (now && before) send('MODIFIED', ev.object);
    else if (now) send('ADDED', ev.object);
    // As the watch cache: the object leaving the selector is sent as DELETED in its previous state.
    else if (before) send('DELETED', { ...ev.prev, metadata: { ...(ev.prev.metadata as JsonObject), resourceVersion: String(ev.rv) } });
  };

  const rvText = w.resourceVersion;
  if (rvText === undefined || rvText === '' || rvText === '0') {
    for (const obj of core.store.list(key, w.type.namespaced ? w.namespace : undefined)) {
      if (w.selector.matches(obj)) send('ADDED', obj);
    }
  } else {
    const events = core.store.eventsSince(Number(rvText), key);
    if (events === 'expired') {
      send('ERROR', {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${rvText} (${core.store.oldestWatchableRv()})`,
        reason: 'Expired',
        code: 410,
      });
      res.end();
      return;
    }
    for (const ev of events) deliver(ev);
  }

  const timers: NodeJS.Timeout[] = [];
  const unsubscribe = core.store.subscribe({ key, onEvent: deliver });
  const handle: OpenWatch = {
    type: w.type,
    res,
    end: () => res.end(),
    flush: () => {
      if (res.writableEnded || res.destroyed) return;
      for (const line of heldLines.splice(0)) res.write(line);
      if (endWhenFlushed) res.end();
    },
  };
  open.add(handle);
  if (w.allowBookmarks) {
    timers.push(
      setInterval(() => {
        send('BOOKMARK', { kind: w.type.kind, apiVersion, metadata: { resourceVersion: String(core.store.currentRv()) } });
      }, w.bookmarkIntervalMs),
    );
  }
  if (w.timeoutSeconds !== undefined && w.timeoutSeconds > 0) {
    // A held stream's timeout is held too: the client of a black-holed connection sees no end either.
    timers.push(setTimeout(() => (w.held() ? (endWhenFlushed = true) : res.end()), w.timeoutSeconds * 1000));
  }
  const cleanup = (): void => {
    unsubscribe();
    for (const t of timers) clearTimeout(t);
    open.delete(handle);
  };
  res.on('close', cleanup);
  res.on('finish', cleanup);
}

/** Serialised event lines, shared by every watcher that sends the same stored object with the same type. */
const lineCache = new WeakMap<JsonObject, Map<string, string>>();

function eventLine(type: string, object: JsonObject): string {
  let byType = lineCache.get(object);
  if (!byType) lineCache.set(object, (byType = new Map()));
  let line = byType.get(type);
  if (line === undefined) {
    line = `${JSON.stringify({ type, object })}\n`;
    byType.set(type, line);
  }
  return line;
}
