// Callers pass their pino logger (src/common/log.ts builds the root); without one, kube plumbing stays silent.
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
