// A memory cgroup for one benchmark child, so it runs as it would in a pod with `resources.limits.memory`:
// Node reads its cgroup's memory limit at start and sizes V8's heap from it (a quarter of it for the old
// generation), with no V8 flag. cgroup v2 (a child of our own cgroup with the memory controller) or v1
// (/sys/fs/cgroup/memory). The child joins the group before it execs node, so node sees the limit from its first
// instruction; remove() deletes the group once the child has exited.
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export interface MemoryCgroup {
  /** The group's directory (cgroup.procs lives there). */
  readonly dir: string;
  /** The command prefix that moves the shell into the group and then execs the command given after it. */
  wrap(command: string, args: readonly string[]): { command: string; args: string[] };
  remove(): Promise<void>;
}

/** Creates a group limited to `limitBytes`, or answers why it cannot (not root, no memory controller). */
export async function createMemoryCgroup(name: string, limitBytes: number): Promise<MemoryCgroup | { unavailable: string }> {
  const v1 = '/sys/fs/cgroup/memory';
  let dir: string;
  let limitFile: string;
  if (existsSync(join('/sys/fs/cgroup', 'cgroup.controllers'))) {
    const own = (await readFile('/proc/self/cgroup', 'utf8')).split('\n').find((l) => l.startsWith('0::'))?.slice(3) ?? '/';
    const parent = join('/sys/fs/cgroup', own);
    const controllers = await readFile(join(parent, 'cgroup.subtree_control'), 'utf8').catch(() => '');
    if (!controllers.split(/\s+/).includes('memory')) return { unavailable: `the memory controller is not enabled under ${parent}` };
    dir = join(parent, name);
    limitFile = 'memory.max';
  } else if (existsSync(v1)) {
    dir = join(v1, name);
    limitFile = 'memory.limit_in_bytes';
  } else {
    return { unavailable: 'no cgroup memory controller is mounted' };
  }
  try {
    await mkdir(dir);
    await writeFile(join(dir, limitFile), String(limitBytes));
  } catch (err) {
    await rmdir(dir).catch(() => undefined);
    return { unavailable: `cannot create ${dir}: ${(err as Error).message}` };
  }
  return {
    dir,
    wrap: (command, args) => ({
      command: '/bin/sh',
      args: ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', dir, command, ...args],
    }),
    async remove() {
      // The child has exited; a group with no process in it is removed with rmdir.
      for (let i = 0; i < 50; i++) {
        try {
          await rmdir(dir);
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      process.stderr.write(`bench: could not remove cgroup ${dir}\n`);
    },
  };
}

/** `command args` as spawn() takes them, run in `cg` when one is given. */
export function inCgroup(cg: MemoryCgroup | undefined, command: string, args: readonly string[]): { command: string; args: string[] } {
  return cg ? cg.wrap(command, args) : { command, args: [...args] };
}
