// Caps the TCP connections each caller IP (a pod) and all callers keep open to the token server: every connection
// costs NMI memory whether or not a request is on it. The same fair caps as the waiting requests (fair-caps.ts): at
// the node-wide cap the busiest caller's newest connection is closed to make room for a caller holding fewer.

import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { realClock, type Clock } from '../common/clock.js';
import { FairCaps } from './fair-caps.js';
import { LogLimiter } from './log-limit.js';

export interface ConnectionLimitOptions {
  readonly perCaller: number;
  readonly total: number;
  readonly logger: Logger;
  readonly clock?: Clock;
}

export interface ConnectionLimit {
  /** Open connections per caller IP (for tests and metrics). */
  connections(ip: string): number;
  readonly total: number;
}

export function limitConnections(server: Server, opts: ConnectionLimitOptions): ConnectionLimit {
  const caps = new FairCaps<Socket>(() => opts);
  // At most one line per caller and reason every 10 s: a flood of connections must not become a flood of logs.
  const lines = new LogLimiter(opts.clock ?? realClock);
  const refuse = (socket: Socket, ip: string, msg: string): void => {
    lines.log(ip, opts.logger, { connections: caps.total, callerConnections: caps.held(ip) }, msg, 'warn', true);
    socket.destroy();
  };

  server.on('connection', (socket: Socket) => {
    const ip = callerIp(socket.remoteAddress);
    const admitted = caps.admit(ip, socket);
    if (admitted.kind !== 'admitted') {
      return refuse(socket, ip, admitted.kind === 'caller-full'
        ? 'too many connections from this pod (--max-connections-per-pod); closed'
        : 'too many connections on this node (--max-connections); closed');
    }
    if (admitted.evicted !== undefined) {
      refuse(admitted.evicted.item, admitted.evicted.caller, 'node-wide connection cap (--max-connections) reached: newest connection of the pod holding the most closed to admit another pod');
    }
    socket.once('close', () => caps.release(ip, socket));
  });

  return {
    connections: (ip) => caps.held(ip),
    get total() {
      return caps.total;
    },
  };
}

function callerIp(address: string | undefined): string {
  const a = address ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}
