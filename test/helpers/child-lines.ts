/** Test helper: wait for a child process to print a stdout line that matches, failing with its stderr if it exits or times out first. */
import type { ChildProcess } from 'node:child_process';

export function lineFrom(child: ChildProcess, match: (line: string) => boolean, what: string, timeoutMs = 20_000): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buffer = '';
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout?.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (const line of buffer.split('\n')) if (match(line)) resolve(line);
    });
    child.once('exit', (code) => reject(new Error(`${what} exited ${code}: ${stderr.slice(-2000)}`)));
    setTimeout(() => reject(new Error(`${what} gave no matching line within ${timeoutMs} ms: ${stderr.slice(-2000)}`)), timeoutMs).unref();
  });
}
