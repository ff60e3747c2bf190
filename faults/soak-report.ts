import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The soak's published result. It lives in a JSON file of its own because FAULTS.md is rewritten
 * whole by the fault suite: both the suite and the soak render the "Soak" section from this file,
 * so whichever writes FAULTS.md last keeps the other's figures.
 */
export const SOAK_RESULT_PATH = join(__dirname, 'soak-result.json');

export interface SoakReplicaFigures {
  replica: string;
  /** Least-squares slopes over the second half of the run, in MB per 10 minutes. */
  rssSlope: number;
  heapSlope: number;
  rssStartMb: number;
  rssEndMb: number;
  heapStartMb: number;
  heapEndMb: number;
}

export interface SoakResult {
  date: string;
  minutes: number;
  streams: number;
  eventsPerSecond: number;
  acknowledged: number;
  unknown: number;
  /** Streams open at the end, each checked for every acknowledged event of its user. */
  checkedStreams: number;
  lost: number;
  duplicated: number;
  reconnects: number;
  opened: number;
  closed: number;
  replicas: SoakReplicaFigures[];
  pass: boolean;
  why: string;
}

/** RSS may grow this much per 10 minutes after warm-up, and heap this much. */
export const RSS_SLOPE_LIMIT_MB = 5;
export const HEAP_SLOPE_LIMIT_MB = 2;

export function readSoakResult(): SoakResult | undefined {
  if (!existsSync(SOAK_RESULT_PATH)) return undefined;
  return JSON.parse(readFileSync(SOAK_RESULT_PATH, 'utf8')) as SoakResult;
}

const mb = (value: number): string => value.toFixed(1);

/** The "Soak" section of FAULTS.md, from the last recorded soak (a placeholder before the first). */
export function soakMarkdown(result: SoakResult | undefined): string {
  const intro = `## Soak

\`npm run soak -- --minutes N\` (default 30) runs two replicas on a Redis of their own under steady load: 200
\`/api/v1/stream/agui\` streams (some users with two), a publisher at 200 events/s through the webhooks, and churn:
every 10 s, 20 streams close and 20 open (fresh users, users coming back with \`Last-Event-ID\`, second tabs). It
samples each replica every 10 s and passes when every stream open at the end got every acknowledged event of its
user exactly once, and each replica's RSS grows under ${RSS_SLOPE_LIMIT_MB} MB and its heap under ${HEAP_SLOPE_LIMIT_MB} MB per 10 minutes
(least-squares slope over the second half of the run, after warm-up). \`SOAK_WRITE=1\` records the result here.
`;
  if (result === undefined) return `${intro}\nNo soak recorded yet.\n`;
  const rows = result.replicas.map(
    (r) =>
      `| ${r.replica} | ${mb(r.rssStartMb)} → ${mb(r.rssEndMb)} | ${mb(r.rssSlope)} | ${mb(r.heapStartMb)} → ${mb(r.heapEndMb)} | ${mb(r.heapSlope)} |`,
  );
  return `${intro}
The latest recorded soak, on ${result.date}: ${result.minutes} minutes, ${result.acknowledged} events acknowledged (${result.unknown} unknown).
The churn opened ${result.opened} streams and closed ${result.closed}; ${result.reconnects} reconnects.
The ${result.checkedStreams} streams open at the end: ${result.lost} lost, ${result.duplicated} duplicated.
**${result.pass ? 'PASS' : `FAIL: ${result.why}`}**

| replica | RSS MB (second half) | RSS MB / 10 min | heap MB (second half) | heap MB / 10 min |
|---|---:|---:|---:|---:|
${rows.join('\n')}
`;
}

/** Replaces the "Soak" section at the end of a FAULTS.md text, or appends one. */
export function withSoakSection(markdown: string, result: SoakResult | undefined): string {
  const at = markdown.indexOf('\n## Soak\n');
  const head = (at === -1 ? markdown : markdown.slice(0, at + 1)).trimEnd();
  return `${head}\n\n${soakMarkdown(result)}`;
}
