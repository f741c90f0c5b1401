// Caps the TCP connections each caller IP (a pod) and all callers keep open to the token server: every connection
// costs NMI memory whether or not a request is on it. At the node-wide cap a caller holding fewer connections than
// the busiest caller still gets in, and the busiest caller's newest connection is closed to make room (as the
// waiting-request caps do), so pods opening thousands of connections only compete with each other.

import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';

export interface ConnectionLimitOptions {
  readonly perCaller: number;
  readonly total: number;
  readonly logger: Logger;
  readonly nowMs?: () => number;
}

export interface ConnectionLimit {
  /** Open connections per caller IP (for tests and metrics). */
  connections(ip: string): number;
  readonly total: number;
}

export function limitConnections(server: Server, opts: ConnectionLimitOptions): ConnectionLimit {
  const byIp = new Map<string, Set<Socket>>();
  let total = 0;
  const now = opts.nowMs ?? Date.now;
  const lastLog = new Map<string, number>();

  const release = (ip: string, socket: Socket): void => {
    const mine = byIp.get(ip);
    if (mine === undefined || !mine.delete(socket)) return;
    total--;
    if (mine.size === 0) byIp.delete(ip);
  };
  // At most one line per caller and reason every 10 s: a flood of connections must not become a flood of logs.
  const refuse = (socket: Socket, ip: string, msg: string): void => {
    const key = `${ip}\u0000${msg}`;
    const t = now();
    if ((lastLog.get(key) ?? -Infinity) + 10_000 <= t) {
      if (lastLog.size >= 4096) lastLog.clear();
      lastLog.set(key, t);
      opts.logger.warn({ remote: ip, connections: total, callerConnections: byIp.get(ip)?.size ?? 0 }, msg);
    }
    socket.destroy();
  };

  server.on('connection', (socket: Socket) => {
    const ip = callerIp(socket.remoteAddress);
    const held = byIp.get(ip)?.size ?? 0;
    if (held >= opts.perCaller) return refuse(socket, ip, 'too many connections from this pod (--max-connections-per-pod); closed');
    if (total >= opts.total) {
      let busiest: [string, Set<Socket>] | undefined;
      for (const entry of byIp) if (busiest === undefined || entry[1].size > busiest[1].size) busiest = entry;
      if (busiest === undefined || busiest[1].size <= held + 1) {
        return refuse(socket, ip, 'too many connections on this node (--max-connections); closed');
      }
      let newest: Socket | undefined;
      for (const s of busiest[1]) newest = s;
      if (newest !== undefined) {
        release(busiest[0], newest);
        refuse(newest, busiest[0], 'node-wide connection cap (--max-connections) reached: newest connection of the pod holding the most closed to admit another pod');
      }
    }
    let mine = byIp.get(ip);
    if (mine === undefined) byIp.set(ip, (mine = new Set()));
    mine.add(socket);
    total++;
    socket.once('close', () => release(ip, socket));
  });

  return {
    connections: (ip) => byIp.get(ip)?.size ?? 0,
    get total() {
      return total;
    },
  };
}

function callerIp(address: string | undefined): string {
  const a = address ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}
