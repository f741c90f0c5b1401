// How both mains stop: the first SIGTERM/SIGINT starts the stop, and later ones are only noted. The handlers stay
// installed (process.on, not once) because with no handler left Node's default action kills the process, and a
// second signal (a terminal's Ctrl-C plus the one a supervisor relays, kubelet repeating itself) would end it
// mid-cleanup: MIC's lease never handed back, NMI's output never flushed.

export const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number];

/**
 * Calls `stop` once, on the first stop signal; `onRepeat` hears the later ones. Returns a function that removes
 * the handlers (for tests and for a main that has finished stopping).
 */
export function onStopSignals(stop: (signal: StopSignal) => void, onRepeat?: (signal: StopSignal) => void): () => void {
  let stopping = false;
  const handlers = STOP_SIGNALS.map((signal) => {
    const handler = (): void => {
      if (stopping) {
        onRepeat?.(signal);
        return;
      }
      stopping = true;
      stop(signal);
    };
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  return () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  };
}

/**
 * Runs `stop` and resolves the exit code: 0 once it finished, 1 if it failed or is still running after `deadlineMs`
 * (then a stuck cleanup cannot keep the process alive past the pod's grace period).
 */
export function stopWithin(
  stop: () => Promise<void>,
  deadlineMs: number,
  logger: { error(obj: object, msg: string): void },
): Promise<number> {
  return new Promise<number>((resolve) => {
    const deadline = setTimeout(() => {
      logger.error({ deadlineMs }, `stop took longer than ${deadlineMs / 1000} s; exiting`);
      resolve(1);
    }, deadlineMs);
    stop()
      .then(() => resolve(0))
      .catch((err: unknown) => {
        logger.error({ err }, 'stop failed');
        resolve(1);
      })
      .finally(() => clearTimeout(deadline));
  });
}
