// @ts-check
/**
 * A log-linear latency histogram in microseconds: 64 buckets per power of two (about 1.1 %
 * resolution) from 1 µs to about 2^32 µs (71 minutes). Mergeable by summing counts, so every
 * subscriber process keeps one and the coordinator adds them up.
 */
export const BUCKETS_PER_OCTAVE = 64;
export const BUCKET_COUNT = 32 * BUCKETS_PER_OCTAVE + 1;

export class Histogram {
  constructor() {
    this.counts = new Float64Array(BUCKET_COUNT);
    this.total = 0;
    this.max = 0;
    this.min = Infinity;
    this.sum = 0;
  }

  /** @param {number} micros */
  record(micros) {
    const v = Math.max(micros, 0);
    let index = Math.floor(Math.log2(v + 1) * BUCKETS_PER_OCTAVE);
    if (index >= BUCKET_COUNT) index = BUCKET_COUNT - 1;
    this.counts[index]++;
    this.total++;
    this.sum += v;
    if (v > this.max) this.max = v;
    if (v < this.min) this.min = v;
  }

  /** A plain object that survives IPC (only the non-empty buckets). */
  toJSON() {
    /** @type {Record<string, number>} */
    const buckets = {};
    for (let i = 0; i < BUCKET_COUNT; i++) if (this.counts[i] > 0) buckets[i] = this.counts[i];
    return { buckets, total: this.total, max: this.max, min: this.min === Infinity ? 0 : this.min, sum: this.sum };
  }

  /** @param {{buckets: Record<string, number>, total: number, max: number, min: number, sum: number}} json */
  merge(json) {
    for (const [i, n] of Object.entries(json.buckets)) this.counts[Number(i)] += n;
    this.total += json.total;
    this.sum += json.sum;
    if (json.total > 0) {
      if (json.max > this.max) this.max = json.max;
      if (json.min < this.min) this.min = json.min;
    }
    return this;
  }

  /**
   * The value below which `q` (0..1) of the samples fall: the upper edge of the bucket that holds
   * that rank, capped at the exact maximum.
   * @param {number} q
   */
  quantile(q) {
    if (this.total === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKET_COUNT; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(2 ** ((i + 1) / BUCKETS_PER_OCTAVE) - 1, this.max);
    }
    return this.max;
  }

  mean() {
    return this.total === 0 ? NaN : this.sum / this.total;
  }
}
