// @ts-check
/**
 * The benchmark event: about 200 bytes of JSON whose first two members are the per-user sequence
 * number and the send time (µs, CLOCK_MONOTONIC), so subscribers can read both without JSON.parse.
 *
 *   {"seq":42,"t":123456789012,"type":"TEXT_MESSAGE_CONTENT","messageId":"bench","delta":"xxxx…"}
 */
export const EVENT_BYTES = 200;
const FILLER = 'x'.repeat(EVENT_BYTES);

/**
 * @param {number} seq
 * @param {number} t
 */
export function makeEvent(seq, t) {
  const head = `{"seq":${seq},"t":${t},"type":"TEXT_MESSAGE_CONTENT","messageId":"bench","delta":"`;
  const pad = EVENT_BYTES - head.length - 2;
  return `${head}${pad > 0 ? FILLER.slice(0, pad) : ''}"}`;
}

const SEQ_PREFIX = '{"seq":';
const T_MEMBER = ',"t":';

/**
 * Reads seq and t from an event as delivered (byte-exact, or re-serialized with the key order
 * kept, as JSON.stringify does). Returns false for anything else.
 * @param {string} data
 * @param {{seq: number, t: number}} out
 */
export function parseEvent(data, out) {
  if (!data.startsWith(SEQ_PREFIX)) return false;
  const comma = data.indexOf(',', SEQ_PREFIX.length);
  if (comma === -1 || !data.startsWith(T_MEMBER, comma)) return false;
  const tStart = comma + T_MEMBER.length;
  const tEnd = data.indexOf(',', tStart);
  if (tEnd === -1) return false;
  const seq = Number(data.slice(SEQ_PREFIX.length, comma));
  const t = Number(data.slice(tStart, tEnd));
  if (!Number.isInteger(seq) || !Number.isFinite(t)) return false;
  out.seq = seq;
  out.t = t;
  return true;
}
