/** Operations the emulator names in its request log, fault rules and latency settings. */
export const EMULATOR_OPERATIONS = [
  'rg_get',
  'vm_get',
  'vm_patch',
  'vm_lro',
  'vmss_get',
  'vmss_patch',
  'vmss_lro',
  'vmss_vm_get',
  'operation_get',
  'msi_get',
  'msi_put',
  'msi_delete',
  'msi_list',
  'fic_get',
  'fic_list',
  'fic_put',
  'fic_delete',
  'role_assignment_get',
  'role_assignment_list',
  'role_assignment_put',
  'role_assignment_delete',
  'role_definition_get',
  'role_definition_list',
  'permissions_list',
  'imds_token',
  'imds_instance',
  'aad_openid',
  'aad_keys',
  'aad_token',
  'admin',
  'unknown',
] as const;

export type EmulatorOperation = (typeof EMULATOR_OPERATIONS)[number];

export interface FaultSpec {
  readonly operation: EmulatorOperation;
  /** Substring of the request's target (VM/VMSS/identity name, client id, ...); any target when absent. */
  readonly target?: string;
  /** Status to answer with; absent = answer normally after `latencyMs`. For `*_lro`: the operation ends Failed. */
  readonly status?: number;
  readonly retryAfter?: string | number;
  readonly latencyMs?: number;
  /** How many matching requests this fault applies to. */
  readonly count: number;
  /** Response body (JSON); a default error body in the operation's dialect otherwise. */
  readonly body?: unknown;
}

export interface RequestLogEntry {
  readonly time: string;
  readonly operation: EmulatorOperation;
  readonly method: string;
  readonly path: string;
  readonly target: string;
  readonly status: number;
}

interface ActiveFault {
  readonly spec: FaultSpec;
  remaining: number;
}

/** Fault rules, per-operation latency, and the request log. */
export class FaultBook {
  readonly #faults: ActiveFault[] = [];
  readonly #latency = new Map<EmulatorOperation, number>();
  readonly #log: RequestLogEntry[] = [];

  inject(spec: FaultSpec): void {
    if (!Number.isInteger(spec.count) || spec.count < 1) throw new Error('fault count must be a positive integer');
    this.#faults.push({ spec, remaining: spec.count });
  }

  clearFaults(): void {
    this.#faults.length = 0;
  }

  /** Takes (consumes one use of) the first fault matching the operation and target. */
  take(operation: EmulatorOperation, target: string): FaultSpec | undefined {
    const found = this.#faults.find(
      (f) => f.remaining > 0 && f.spec.operation === operation && (f.spec.target === undefined || target.includes(f.spec.target)),
    );
    if (!found) return undefined;
    found.remaining -= 1;
    if (found.remaining === 0) this.#faults.splice(this.#faults.indexOf(found), 1);
    return found.spec;
  }

  setLatency(operation: EmulatorOperation, ms: number): void {
    if (ms <= 0) this.#latency.delete(operation);
    else this.#latency.set(operation, ms);
  }

  latency(operation: EmulatorOperation): number {
    return this.#latency.get(operation) ?? 0;
  }

  record(entry: RequestLogEntry): void {
    this.#log.push(entry);
  }

  requestLog(): readonly RequestLogEntry[] {
    return [...this.#log];
  }

  clearRequestLog(): void {
    this.#log.length = 0;
  }
}

export function retryAfterHeader(value: string | number | undefined, status: number): string | undefined {
  if (value !== undefined) return String(value);
  return status === 429 ? '1' : undefined; // a 429 always carries Retry-After, as ARM and AAD send it
}
