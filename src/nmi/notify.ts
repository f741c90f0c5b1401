// Wakes waiters when something they depend on changes: the token handler waits on AAI changes instead of polling.

export class ChangeNotifier {
  private waiters = new Set<() => void>();

  /** Wakes every current waiter. */
  notify(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves on the next notify(), after timeoutMs, or when the signal aborts, whichever comes first. */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      this.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  get waiting(): number {
    return this.waiters.size;
  }
}
