// NMI's interception rules (upstream-behaviour §3.8): nat chain `aad-metadata`, DNAT of the metadata address to NMI,
// loopback sources excluded, RETURN; jumped to from PREROUTING at position 1. The one place that shells out.

import { execFile } from 'node:child_process';

export const CHAIN = 'aad-metadata';

export interface InterceptTarget {
  readonly metadataIp: string;
  readonly metadataPort: number;
  /** `--nmi-listen-address`; `0.0.0.0` DNATs to 127.0.0.1 as the original. */
  readonly nmiHost: string;
  readonly nmiPort: number;
}

export interface IptablesOptions {
  readonly binary?: string;
  /** Words put before the binary, e.g. `['ip', 'netns', 'exec', 'ns1']` in tests. */
  readonly commandPrefix?: readonly string[];
  /** Seconds to wait for the xtables lock (`-w`). */
  readonly lockWaitSeconds?: number;
  readonly timeoutMs?: number;
  readonly conntrackBinary?: string;
}

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface EnsureResult {
  readonly createdChain: boolean;
  readonly rewroteRules: boolean;
  readonly fixedJump: boolean;
}

export class IptablesError extends Error {
  constructor(
    message: string,
    readonly result?: CommandResult,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'IptablesError';
  }
}

export interface Iptables {
  expectedRules(): readonly string[];
  /** Makes the chain, its rules and the PREROUTING jump exactly what they should be; idempotent. */
  ensure(): Promise<EnsureResult>;
  /** Removes the jump and the chain; tolerates either being gone already. Only `nmi --uninstall-iptables` calls it. */
  cleanup(): Promise<void>;
  /** Deletes conntrack entries for the metadata address so open connections get re-routed; returns false if absent. */
  flushConntrack(): Promise<boolean>;
  /** The chain's current rules as `iptables -S` prints them, or undefined when the chain does not exist. */
  listChain(): Promise<readonly string[] | undefined>;
  /** Read-only: are the chain, its rules and the single first-position PREROUTING jump exactly as ensure() makes them? */
  inPlace(): Promise<boolean>;
}

export function createIptables(target: InterceptTarget, options: IptablesOptions = {}): Iptables {
  const binary = options.binary ?? 'iptables';
  const prefix = options.commandPrefix ?? [];
  const wait = String(options.lockWaitSeconds ?? 5);
  const timeoutMs = options.timeoutMs ?? 15_000;
  const dnatTo = `${target.nmiHost === '0.0.0.0' ? '127.0.0.1' : target.nmiHost}:${target.nmiPort}`;
  const metadataCidr = `${target.metadataIp}/32`;

  const iptables = (args: readonly string[]) => run([...prefix, binary, '-w', wait, '-t', 'nat', ...args], timeoutMs);
  const must = async (args: readonly string[]) => {
    const result = await iptables(args);
    if (result.code !== 0) {
      throw new IptablesError(`iptables -t nat ${args.join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`, result);
    }
    return result;
  };

  const expected = [
    `-N ${CHAIN}`,
    `-A ${CHAIN} ! -s 127.0.0.1/32 -d ${metadataCidr} -p tcp -m tcp --dport ${target.metadataPort} -j DNAT --to-destination ${dnatTo}`,
    `-A ${CHAIN} -j RETURN`,
  ];

  async function listChain(): Promise<readonly string[] | undefined> {
    const result = await iptables(['-S', CHAIN]);
    if (result.code !== 0) {
      if (isMissingChain(result)) return undefined;
      throw new IptablesError(`iptables -t nat -S ${CHAIN} failed: ${result.stderr.trim()}`, result);
    }
    return lines(result.stdout);
  }

  async function jumpPositions(): Promise<number[]> {
    const rules = lines((await must(['-S', 'PREROUTING'])).stdout).filter((l) => l.startsWith('-A PREROUTING'));
    const positions: number[] = [];
    rules.forEach((rule, index) => {
      if (rule === `-A PREROUTING -j ${CHAIN}`) positions.push(index + 1);
    });
    return positions;
  }

  return {
    expectedRules: () => expected,

    async ensure() {
      let createdChain = false;
      let rewroteRules = false;
      let fixedJump = false;
      const current = (await listChain()) ?? [];
      createdChain = current.length === 0;
      if (!sameLines(current, expected)) {
        // One iptables-restore transaction: the chain is never seen empty, even if this process dies half-way.
        const rules = [
          '*nat',
          `:${CHAIN} - [0:0]`,
          `-A ${CHAIN} -p tcp ! -s 127.0.0.1/32 -d ${metadataCidr} --dport ${target.metadataPort} -j DNAT --to-destination ${dnatTo}`,
          `-A ${CHAIN} -j RETURN`,
          'COMMIT',
          '',
        ].join('\n');
        const restored = await run([...prefix, `${binary}-restore`, '-w', wait, '--noflush'], timeoutMs, rules);
        if (restored.code !== 0) {
          throw new IptablesError(`${binary}-restore of chain ${CHAIN} failed (exit ${restored.code}): ${restored.stderr.trim()}`, restored);
        }
        rewroteRules = true;
      }
      const positions = await jumpPositions();
      // Exactly one jump, first in PREROUTING: a rule placed before it could let metadata traffic escape.
      if (positions.length !== 1 || positions[0] !== 1) {
        for (let i = 0; i < positions.length; i++) await must(['-D', 'PREROUTING', '-j', CHAIN]);
        await must(['-I', 'PREROUTING', '1', '-j', CHAIN]);
        fixedJump = true;
      }
      return { createdChain, rewroteRules, fixedJump };
    },

    async cleanup() {
      for (let i = 0; i < 100; i++) {
        const result = await iptables(['-D', 'PREROUTING', '-j', CHAIN]);
        if (result.code !== 0) break;
      }
      const flushed = await iptables(['-F', CHAIN]);
      if (flushed.code !== 0 && !isMissingChain(flushed)) {
        throw new IptablesError(`iptables -t nat -F ${CHAIN} failed: ${flushed.stderr.trim()}`, flushed);
      }
      const deleted = await iptables(['-X', CHAIN]);
      if (deleted.code !== 0 && !isMissingChain(deleted)) {
        throw new IptablesError(`iptables -t nat -X ${CHAIN} failed: ${deleted.stderr.trim()}`, deleted);
      }
    },

    async flushConntrack() {
      const result = await run(
        [
          ...prefix, options.conntrackBinary ?? 'conntrack', '-D', '-p', 'tcp',
          '--orig-dst', target.metadataIp, '--orig-port-dst', String(target.metadataPort),
        ],
        timeoutMs,
      );
      // conntrack exits 1 when there was nothing to delete.
      if (result.code === 0) return true;
      if (/0 flow entries have been deleted/.test(result.stderr)) return false;
      throw new IptablesError(`conntrack -D failed (exit ${result.code}): ${result.stderr.trim()}`, result);
    },

    listChain,

    async inPlace() {
      const current = await listChain();
      if (current === undefined || !sameLines(current, expected)) return false;
      const positions = await jumpPositions();
      return positions.length === 1 && positions[0] === 1;
    },
  };
}

function run(argv: readonly string[], timeoutMs: number, input?: string): Promise<CommandResult> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error === null) return resolve({ code: 0, stdout, stderr });
      const code = (error as NodeJS.ErrnoException & { code?: unknown }).code;
      if (typeof code === 'number') return resolve({ code, stdout, stderr });
      if (error.killed) return reject(new IptablesError(`${file} timed out after ${timeoutMs} ms`, undefined, { cause: error }));
      reject(new IptablesError(`${file} could not be run: ${error.message}`, undefined, { cause: error }));
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

function isMissingChain(result: CommandResult): boolean {
  // iptables-nft says "incompatible" for `-S` of a chain that does not exist.
  return /No chain\/target\/match by that name|does not exist|is incompatible/i.test(result.stderr);
}

function lines(text: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

function sameLines(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((line, i) => line === b[i]);
}
