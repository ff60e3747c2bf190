// @ts-check
/**
 * Microseconds on CLOCK_MONOTONIC. process.hrtime reads the system-wide monotonic clock on Linux,
 * so values from the publisher and the subscriber processes are directly comparable.
 */
export function nowMicros() {
  return Number(process.hrtime.bigint() / 1000n);
}
